"""The thin runtime: load compiled object code and call it.

``Executable(*arrays)`` checks each argument against the signature (a clear
error names the argument, the expected and the given type), passes contiguous
arrays without copying (a non-contiguous or byte-swapped one is copied, never misread), and
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
from ..tree import TreeDef, flatten, unflatten
from . import comm, fastcall

_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
_ALIGN = 64

# Code compiled with MLC_BOUNDS_CHECK=1 records its first out-of-bounds access here
# (int64 [kind (1 read, 2 write), kernel name, buffer description, first element offset,
# elements accessed, the buffer's element count]) and skips the access; LoadedCode
# raises BoundsError after the call.
BOUNDS_STATUS = "mlc_bounds_status"
# a profiling build's records (codegen.llvm.ModuleBuilder): per kernel call, start and end on
# the calling thread; per call and thread, the thread's first start and last end in the
# call's parallel loops; the index of the call running now
PROFILE_SYMBOLS = ("mlc_profile", "mlc_profile_threads", "mlc_profile_call")
PROFILE_MAX_THREADS = 64


MISS = object()   # what a fast call returns when the arguments need the full path (Executable.fast_call)


class BoundsError(RuntimeError):
    """Bounds-checked code (``MLC_BOUNDS_CHECK=1``) accessed a buffer out of its bounds."""


def _data_pointer_reader():
    """The fastest correct way to read an ndarray's data address.

    ``a.ctypes.data`` costs microseconds per call, which dominates small calls.
    NumPy's array struct stores ``data`` right after the object header, so it can
    be read directly -- used only after checking that layout on a probe array."""
    probe = np.arange(3.0)
    offset = object.__basicsize__   # the object header: where PyArrayObject keeps `data`
    read = ctypes.c_size_t.from_address
    try:
        if read(id(probe) + offset).value == probe.ctypes.data:
            return lambda a: read(id(a) + offset).value
    except (ValueError, OSError):
        pass
    return lambda a: a.ctypes.data


data_pointer = _data_pointer_reader()


class LoadedCode:
    """Object code linked into the process with LLVM's MCJIT."""

    def __init__(self, obj: bytes, tm):
        collectives = comm.SYMBOL.encode() in obj
        if collectives:
            comm.install_dispatcher()
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
        self.engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self.engine.finalize_object()
        addr = self.engine.get_function_address("mlc_entry")
        if not addr:
            raise RuntimeError("compiled code has no mlc_entry function")
        self.entry = self._raw = _ENTRY(addr)
        if collectives:   # a collective's error is kept by the dispatcher and raised here, after the run
            def entry(*args):
                self._raw(*args)
                comm.raise_pending()
            self.entry = entry
        status = self.engine.get_global_value_address(BOUNDS_STATUS) if BOUNDS_STATUS.encode() in obj else 0
        if status:
            self._status = (ctypes.c_int64 * 6).from_address(status)
            run = self.entry

            def checked(*args):
                run(*args)
                if self._status[0]:
                    self._raise_bounds_error()
            self.entry = checked

    def profile_records(self, calls: int) -> tuple[np.ndarray, np.ndarray]:
        """A profiling build's records of its last run, in nanoseconds (copies): an array
        (calls, 2) of start and end per kernel call, and (calls, PROFILE_MAX_THREADS, 2)
        of each thread's first start and last end in the call's parallel loops (0: the
        thread took no part). ValueError when the code was not built for profiling."""
        found = []
        for name, shape in ((PROFILE_SYMBOLS[0], (calls, 2)), (PROFILE_SYMBOLS[1], (calls, PROFILE_MAX_THREADS, 2))):
            addr = self.engine.get_global_value_address(name)
            if not addr:
                raise ValueError("this code was not built for profiling")
            n = int(np.prod(shape))
            found.append(np.ctypeslib.as_array((ctypes.c_int64 * n).from_address(addr)).reshape(shape).copy())
        return found[0], found[1]

    def _raise_bounds_error(self):
        kind, kernel, buf, offset, count, size = self._status
        self._status[0] = 0
        name = lambda p: ctypes.string_at(p).decode("utf-8", "replace")
        where = f"element {offset}" if count == 1 else f"elements [{offset}, {offset + count})"
        raise BoundsError(f"kernel {name(kernel)} {'wrote' if kind == 2 else 'read'} {name(buf)} at {where}, "
                          f"out of its {size} elements (MLC_BOUNDS_CHECK=1 skipped that access; this is the first "
                          "one of the call)")


def as_input_array(x, name: str, expected: TensorType, fn_name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        if hasattr(x, "__dlpack__"):
            x = np.from_dlpack(x)
        elif np.isscalar(x) or isinstance(x, (list, tuple)):
            x = np.asarray(x)
        else:
            raise TypeError(f"{fn_name}(): argument '{name}' must be an array, got {type(x).__name__}")
    if not x.dtype.isnative and x.dtype.newbyteorder("=") == expected.dtype.np and x.shape == expected.shape:
        return np.ascontiguousarray(x, dtype=expected.dtype.np)   # big-endian data: a native copy, as numpy would
    if x.dtype != expected.dtype.np or x.shape != expected.shape:
        order = "" if x.dtype.isnative else f" ({'big' if x.dtype.byteorder == '>' else 'little'}-endian)"
        raise TypeError(f"{fn_name}(): argument '{name}' expects {expected} (numpy {expected.dtype.name}, shape "
                        f"{expected.shape}), got {x.dtype.name}{order} array of shape {x.shape}")
    if not x.flags.c_contiguous or (x.ctypes.data % x.dtype.itemsize):
        x = np.ascontiguousarray(x)
    return x


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB ({n} bytes)"


class Signature:
    """Pytree arguments and results of a traced function: the argument structure, the
    Python scalars baked into the code (None for array leaves) and the result structure."""

    def __init__(self, in_tree: TreeDef, static: Sequence, out_tree: TreeDef):
        self.in_tree = in_tree
        self.static = list(static)
        self.out_tree = out_tree

    def flatten_args(self, args, fn_name: str) -> list:
        leaves = self.in_tree.leaves_of(tuple(args))
        if leaves is None:
            raise TypeError(f"{fn_name}(): arguments have structure {flatten(tuple(args))[1]!r}, compiled for "
                            f"{self.in_tree!r}")
        if not any(s is not None for s in self.static):
            return leaves
        out = []
        for a, s in zip(leaves, self.static):
            if s is None:
                out.append(a)
            elif a != s:
                raise TypeError(f"{fn_name}(): the scalar argument {a!r} differs from {s!r}, which is compiled "
                                f"into the code; recompile (mlc.jit does so automatically)")
        return out


class Executable:
    def __init__(self, name: str, input_names: Sequence[str], input_types: Sequence[TensorType],
                 output_types: Sequence[TensorType], params: Sequence[np.ndarray], workspace_bytes: int,
                 code: LoadedCode, single_output: bool, ir_text=None, stats: dict | None = None,
                 signature: Signature | None = None, aliases: dict[int, int] | None = None, compiled=None):
        self.name = name
        self.input_names = list(input_names)
        self.input_types = list(input_types)
        self.output_types = list(output_types)
        self.params = [np.ascontiguousarray(p) for p in params]
        self.workspace_bytes = workspace_bytes
        self.stats = dict(stats or {})
        self.kernel_count = self.stats.get("kernels", 0)
        self._code = code
        self._single = single_output
        self.signature = signature
        self.aliases = dict(aliases or {})   # output position -> input position updated in place
        self._alias_of = [self.aliases.get(n) for n in range(len(self.output_types))]
        self._ir_text = ir_text or (lambda level: "")
        self._compiled = compiled   # the driver.Compiled it came from: what export() builds a library of
        self.metadata: dict | None = None   # a loaded library's description of itself (runtime.library)
        self._local = threading.local()
        self._expect = [(t.dtype.np, t.shape) for t in self.input_types]
        self._produce = [(t.dtype.np, t.shape) for t in self.output_types]
        self._param_ptrs = (ctypes.c_void_p * max(1, len(self.params)))(*[p.ctypes.data for p in self.params])
        self._fast = None   # (code, fast call or None), built on the first call

    def fast_call(self):
        """The fast call of this Executable's plain form (arrays in, an array or a tuple
        out), or None where it has none: a function of the argument tuple that returns the
        result, or MISS when an argument is not exactly a C-contiguous, aligned numpy array
        of the expected dtype and shape, or the arguments are not a tuple (the caller then
        takes ``call_flat``, which copies or raises the usual error). It checks and calls
        in native code (``runtime.fastcall``)."""
        fast = self._fast
        if fast is None or fast[0] is not self._code:   # (a profiling copy runs other code)
            fast = self._fast = (self._code, self._build_fast())
        return fast[1]

    def _build_fast(self):
        code = self._code
        if self.signature is not None or self.aliases or type(self).call_flat is not Executable.call_flat:
            return None
        if hasattr(code, "_raw"):
            if code.entry is not code._raw:   # collectives or bounds checks run Python after the call
                return None
            function, first, kind = ctypes.cast(code._raw, ctypes.c_void_p).value, ctypes.addressof(self._param_ptrs), 0
        elif hasattr(code, "_run") and hasattr(code, "handle"):   # a model library's C API
            function, first, kind = ctypes.cast(code._run, ctypes.c_void_p).value, code.handle, 1
        else:
            return None
        helper = fastcall.helper()
        if helper is None:
            return None
        call, layout = helper
        tab = fastcall.table(function, first, kind, self._expect, len(self._produce), layout)
        if tab is None:
            return None
        addr, local, state, empty = tab.ctypes.data, self._local, self._thread_state, np.empty
        produce, single, miss, path = self._produce, self._single, MISS, getattr(code, "path", self.name)
        keep = (tab, code, self._param_ptrs, [dt for dt, _ in self._expect])   # what the table points into

        def failed():
            raise RuntimeError(f"{path}: {code._last_error().decode('utf-8', 'replace')}")

        if single and len(produce) == 1:
            (dt, shape), = produce

            def run(args):
                if type(args) is not tuple:   # the native side reads a tuple's items in place
                    return miss
                out = empty(shape, dt)
                st = getattr(local, "st", None) or state()
                r = call(args, (out,), addr, st[1])
                if r:
                    return failed() if r < 0 else miss
                return out
        else:
            def run(args):
                if type(args) is not tuple:
                    return miss
                outs = tuple([empty(shape, dt) for dt, shape in produce])
                st = getattr(local, "st", None) or state()
                r = call(args, outs, addr, st[1])
                if r:
                    return failed() if r < 0 else miss
                return outs[0] if single else outs
        run.keep = keep
        return run

    def _thread_state(self):
        """Per-thread workspace and argument pointer arrays (reused across calls)."""
        st = getattr(self._local, "st", None)
        if st is None:
            # a loaded library's handle keeps its own workspaces
            own = self.workspace_bytes if getattr(self._code, "needs_workspace", True) else 0
            ws = np.empty(own + _ALIGN, dtype=np.uint8)
            addr = ws.ctypes.data
            st = (ws, addr + (-addr) % _ALIGN,
                  (ctypes.c_void_p * max(1, len(self.input_types)))(),
                  (ctypes.c_void_p * max(1, len(self.output_types)))())
            self._local.st = st
        return st

    def __call__(self, *args):
        fast = self._fast
        if fast is not None and fast[1] is not None and fast[0] is self._code:
            out = fast[1](args)
            if out is not MISS:
                return out
        elif fast is None or fast[0] is not self._code:
            run = self.fast_call()
            if run is not None:
                out = run(args)
                if out is not MISS:
                    return out
        if self.signature is not None:
            return self.call_flat(self.signature.flatten_args(args, self.name))
        return self.call_flat(args)

    def call_flat(self, args):
        """Run on the flat list of input arrays; results as the traced function gave them."""
        if len(args) != len(self._expect):
            raise TypeError(f"{self.name}() takes {len(self.input_types)} array argument(s) "
                            f"({', '.join(self.input_names)}), got {len(args)}")
        _, ws, ins_p, outs_p = self._thread_state()
        keep = []
        for n, (a, (dt, shape)) in enumerate(zip(args, self._expect)):
            # fast path: a C-contiguous numpy array of exactly the expected type
            if not (type(a) is np.ndarray and a.dtype == dt and a.shape == shape and a.flags.c_contiguous):
                a = as_input_array(a, self.input_names[n], self.input_types[n], self.name)
                keep.append(a)
            ins_p[n] = data_pointer(a)
        if self.aliases:
            self._check_in_place(args, ins_p)
        outs = []
        for n, (dt, shape) in enumerate(self._produce):
            j = self._alias_of[n]
            if j is None:
                o = np.empty(shape, dtype=dt)
                outs_p[n] = data_pointer(o)
                outs.append(o)
            else:   # written into the input array
                outs_p[n] = ins_p[j]
        self._code.entry(ins_p, outs_p, self._param_ptrs, ws)
        if self.signature is not None:
            return unflatten(self.signature.out_tree, outs)
        return outs[0] if self._single else tuple(outs)

    def _check_in_place(self, args, ins_p):
        """Aliased outputs are written into their input arrays, which must be exactly
        the arrays the caller holds (a converted copy would silently drop the update)
        and must not also be passed as another argument."""
        updated = set(self.aliases.values())
        for j in updated:
            a = args[j]
            if not isinstance(a, np.ndarray) or not a.flags.writeable or ins_p[j] != data_pointer(a):
                raise TypeError(f"{self.name}(): argument '{self.input_names[j]}' is updated in place, so it must be "
                                f"a writeable C-contiguous numpy array of type {self.input_types[j]}")
        written = {ins_p[j] for j in updated}
        if len(written) != len(updated) or any(ins_p[i] in written for i in range(len(args)) if i not in updated):
            raise TypeError(f"{self.name}(): an argument updated in place is also passed as another argument")

    def export(self, path, params: str = "embedded", prefix: str = "mlc"):
        """Write this model as a shared library with a C API (``path``, a .so), its
        header (``path``'s .h) and, with ``params="external"``, its weights file
        (``path``'s .params). ``mlc.load(path)`` runs it from Python; C programs link it.
        ``prefix`` names the API functions (``<prefix>_model_run``): libraries with
        different prefixes link into one program. Returns what was written
        (``codegen.export.Exported``)."""
        if self._compiled is None:
            raise ValueError(f"{self.name} was loaded from a library, which is already exported")
        return self._compiled.export(path, params=params, signature=self.signature, single_output=self._single,
                                     prefix=prefix)

    def profile(self, *args, runs: int = 20, warmup: int = 2, ceilings: tuple[float, float] | None = None):
        """Where the time goes on these arguments: per kernel call, its median time, share,
        GFLOP/s and GB/s against the target's ceilings, its fused ops and schedule
        (``runtime.profile.ProfileReport``: print it, ``to_chrome_trace``, ``roofline``).
        Times come from a profiling build of the same code; the model's own time from
        this one, measured in turn with it. A model library profiles when it was built
        with ``mlc compile --profile``. ``ceilings``: (peak GFLOP/s, GB/s) to draw against,
        by default the target's (measured on the host when it gives none)."""
        from .profile import KernelInfo, profile
        c = self._compiled
        if c is not None:
            infos, code, target = c.kernel_calls(), c.profiling_code(), c.target.name
            ceilings = ceilings or c.ceilings()
        else:
            meta = self.metadata or {}
            if "profile" not in meta:
                raise ValueError(f"{self.name} was loaded from a library built without profiling: export it with "
                                 "`mlc compile MODEL -o LIB.so --profile`, or profile the model where it is compiled "
                                 "(mlc.compile(...).profile(...))")
            infos, code = [KernelInfo(**k) for k in meta["profile"]], self._code
            spec = meta.get("target", {})
            target = spec.get("name", "?")
            ceilings = ceilings or (float(spec.get("peak_gflops", 0)), float(spec.get("bandwidth_gbs", 0)))
        return profile(self, args, runs, warmup, infos, code, ceilings, target)

    def ir(self, level: str = "graph") -> str:
        """The program at ``graph``, ``fused``, ``tensor``, ``loop``, ``llvm``, ``llvm-opt`` or ``asm``
        level (``ptx`` for cuda targets; ``mlir`` and ``mlir-loop`` with the mlir extra), as text."""
        return self._ir_text(level)

    def memory_report(self) -> str:
        """Planned memory: the workspace arena against the naive sum of intermediates."""
        st = self.stats
        naive = st.get("intermediate_bytes", 0)
        ratio = f" = {100 * self.workspace_bytes / naive:.1f}% of the naive sum" if naive else ""
        return "\n".join([
            f"kernels:        {st.get('kernels', 0)} (from {st.get('ops', 0)} ops, -O{st.get('opt_level', '?')})",
            f"workspace:      {_mib(self.workspace_bytes)}{ratio}",
            f"naive sum:      {_mib(naive)} (every intermediate value of the graph in its own buffer)",
            f"materialized:   {_mib(st.get('materialized_bytes', 0))} (the kernels' intermediates and scratch, "
            f"before reuse)",
            f"in place:       {st.get('in_place', 0)} kernel outputs written over a dying input",
            f"constants:      {_mib(sum(p.nbytes for p in self.params))}"])

    def __repr__(self) -> str:
        sig = ", ".join(f"{n}: {t}" for n, t in zip(self.input_names, self.input_types))
        return f"<mlc.Executable {self.name}({sig}) -> {', '.join(map(str, self.output_types))}>"
