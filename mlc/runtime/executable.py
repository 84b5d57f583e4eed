"""The thin runtime: load compiled object code and call it.

``Executable(*arrays)`` checks each argument against the signature (a clear
error names the argument, the expected and the given type), passes contiguous
arrays without copying (a non-contiguous one is copied, never misread), and
returns freshly allocated numpy outputs. Each thread gets its own workspace, so
one Executable may be called from several threads at once.
"""
from __future__ import annotations

import ctypes
import threading
from typing import Sequence

import llvmlite.binding as llvm
import numpy as np

from ..ir.types import TensorType

_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
_ALIGN = 64


class LoadedCode:
    """Object code linked into the process with LLVM's MCJIT."""

    def __init__(self, obj: bytes, tm):
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
        self.engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self.engine.finalize_object()
        addr = self.engine.get_function_address("mlc_entry")
        if not addr:
            raise RuntimeError("compiled code has no mlc_entry function")
        self.entry = _ENTRY(addr)


def as_input_array(x, name: str, expected: TensorType, fn_name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        if hasattr(x, "__dlpack__"):
            x = np.from_dlpack(x)
        elif np.isscalar(x) or isinstance(x, (list, tuple)):
            x = np.asarray(x)
        else:
            raise TypeError(f"{fn_name}(): argument '{name}' must be an array, got {type(x).__name__}")
    if x.dtype != expected.dtype.np or x.shape != expected.shape:
        raise TypeError(f"{fn_name}(): argument '{name}' expects {expected} (numpy {expected.dtype.name}, shape "
                        f"{expected.shape}), got {x.dtype.name} array of shape {x.shape}")
    if not x.flags.c_contiguous or (x.ctypes.data % x.dtype.itemsize):
        x = np.ascontiguousarray(x)
    return x


class Executable:
    def __init__(self, name: str, input_names: Sequence[str], input_types: Sequence[TensorType],
                 output_types: Sequence[TensorType], params: Sequence[np.ndarray], workspace_bytes: int,
                 code: LoadedCode, single_output: bool, ir_text=None, naive_bytes: int = 0, kernels: int = 0):
        self.name = name
        self.input_names = list(input_names)
        self.input_types = list(input_types)
        self.output_types = list(output_types)
        self.params = [np.ascontiguousarray(p) for p in params]
        self.workspace_bytes = workspace_bytes
        self.naive_bytes = naive_bytes
        self.kernel_count = kernels
        self._code = code
        self._single = single_output
        self._ir_text = ir_text or (lambda level: "")
        self._local = threading.local()
        self._param_ptrs = (ctypes.c_void_p * max(1, len(self.params)))(*[p.ctypes.data for p in self.params])

    def _workspace(self) -> int:
        ws = getattr(self._local, "ws", None)
        if ws is None:
            ws = np.empty(self.workspace_bytes + _ALIGN, dtype=np.uint8)
            self._local.ws = ws
        addr = ws.ctypes.data
        return addr + (-addr) % _ALIGN

    def __call__(self, *args):
        if len(args) != len(self.input_types):
            raise TypeError(f"{self.name}() takes {len(self.input_types)} array argument(s) "
                            f"({', '.join(self.input_names)}), got {len(args)}")
        arrays = [as_input_array(a, n, t, self.name) for a, n, t in zip(args, self.input_names, self.input_types)]
        outs = [np.empty(t.shape, dtype=t.dtype.np) for t in self.output_types]
        ins_p = (ctypes.c_void_p * max(1, len(arrays)))(*[a.ctypes.data for a in arrays])
        outs_p = (ctypes.c_void_p * max(1, len(outs)))(*[o.ctypes.data for o in outs])
        self._code.entry(ins_p, outs_p, self._param_ptrs, self._workspace())
        return outs[0] if self._single else tuple(outs)

    def ir(self, level: str = "graph") -> str:
        """The program at ``graph``, ``tensor``, ``loop``, ``llvm`` or ``asm`` level, as text."""
        return self._ir_text(level)

    def memory_report(self) -> str:
        return (f"workspace {self.workspace_bytes} bytes (intermediates without reuse: {self.naive_bytes} bytes), "
                f"{sum(p.nbytes for p in self.params)} bytes of constants, {self.kernel_count} kernels")

    def __repr__(self) -> str:
        sig = ", ".join(f"{n}: {t}" for n, t in zip(self.input_names, self.input_types))
        return f"<mlc.Executable {self.name}({sig}) -> {', '.join(map(str, self.output_types))}>"
