"""Build and run one kernel candidate: a loop-level ``Func`` compiled alone into an
object file with its own ``mlc_entry``, then timed.

``build_kernel`` compiles (in the tuner's process); ``run_build`` loads and times
the object code in the *current* process -- the runners (``mlc.tune.runner``,
``mlc.tune.rpc``) call it in a worker process, so a candidate that crashes or
hangs costs one measurement, not the tuner.
"""
from __future__ import annotations

import ctypes
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .. import codegen
from ..ir.loop import Func
from ..ir.plan import ALIGN
from ..target import Target

_MAX_NUMBER = 10**8  # calls per timing; a bound for kernels too fast to time

Spec = tuple[tuple[int, ...], str]   # (shape, numpy dtype str)


@dataclass
class KernelBuild:
    """One compiled candidate: object code defining ``mlc_entry`` and what it expects.
    ``inputs``/``outputs``: (shape, numpy dtype str) per buffer, in order."""
    name: str
    object: bytes
    inputs: list[Spec]
    outputs: list[Spec]
    workspace_bytes: int
    triple: str
    parallel: bool = False      # the code calls libgomp
    target_key: str = ""

    def header(self) -> dict:
        """The JSON description sent with the object bytes to a worker or server."""
        return {"name": self.name, "inputs": [[list(s), d] for s, d in self.inputs],
                "outputs": [[list(s), d] for s, d in self.outputs], "workspace_bytes": self.workspace_bytes,
                "triple": self.triple, "parallel": self.parallel, "target_key": self.target_key}

    @staticmethod
    def from_header(h: dict, obj: bytes) -> "KernelBuild":
        """Inverse of ``header``; ValueError naming the field on a malformed one."""
        if not isinstance(h, dict):
            raise ValueError("the kernel build description must be a JSON object")
        try:
            specs = {k: [_spec(s) for s in h[k]] for k in ("inputs", "outputs")}
            ws = int(h["workspace_bytes"])
            name, triple = str(h["name"]), str(h["triple"])
        except KeyError as e:
            raise ValueError(f"kernel build description lacks {e}") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"malformed kernel build description: {e}") from None
        if ws < 0:
            raise ValueError(f"negative workspace_bytes {ws}")
        return KernelBuild(name, bytes(obj), specs["inputs"], specs["outputs"], ws, triple,
                           bool(h.get("parallel", False)), str(h.get("target_key", "")))


def _spec(s) -> Spec:
    shape, dtype = s
    shape = tuple(int(n) for n in shape)
    if any(n < 0 for n in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    return shape, check_dtype(dtype).str


def check_dtype(d) -> np.dtype:
    """A plain numeric/bool numpy dtype; object and other dtypes never cross a wire."""
    dt = np.dtype(d)
    if dt.kind not in "biuf":
        raise ValueError(f"unsupported array dtype {dt.str!r}: only bool, integer and float arrays")
    return dt


@dataclass
class MeasureResult:
    times: list[float] = field(default_factory=list)   # seconds per kernel call, one per repeat
    outputs: list[np.ndarray] | None = None           # after one call, when asked for
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times and self.error is None else None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.times)


def build_kernel(func: Func, target="host") -> KernelBuild:
    """Compile one loop-level Func into object code with an ``mlc_entry`` that passes
    it its inputs, outputs and scratch buffers (placed in the workspace)."""
    target = Target.get(target)
    if target.kind != "cpu":
        raise ValueError(f"build_kernel compiles CPU kernels; target {target} is {target.kind}")
    program = codegen.Program.of_func(func, parallel=codegen.runs_parallel(target))
    obj = codegen.build(program, target)
    specs = lambda bufs: [(b.shape, b.dtype.np.str) for b in bufs]
    return KernelBuild(func.name, obj, specs(func.inputs), specs(func.outputs), program.workspace_bytes,
                       target.triple, program.parallel, target.key)


def check_inputs(build: KernelBuild, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """C-contiguous arrays matching the build's input specs; TypeError naming the first mismatch."""
    if len(inputs) != len(build.inputs):
        raise TypeError(f"kernel {build.name} takes {len(build.inputs)} input(s), got {len(inputs)}")
    out = []
    for n, (a, (shape, dtype)) in enumerate(zip(inputs, build.inputs)):
        a = np.asarray(a)
        if a.shape != tuple(shape) or a.dtype != np.dtype(dtype):
            raise TypeError(f"kernel {build.name}: input {n} must be {np.dtype(dtype).name} of shape {tuple(shape)}, "
                            f"got {a.dtype.name} of shape {a.shape}")
        out.append(np.ascontiguousarray(a))
    return out


_FLUSH: list = []


def _flush_buffer() -> np.ndarray:
    """Twice the host's last-level cache, overwritten before each timed call."""
    if not _FLUSH:
        _FLUSH.append(np.zeros(max(8 << 20, 2 * Target.get("host").l3_bytes) // 4, np.float32))
    return _FLUSH[0]


def run_build(build: KernelBuild, inputs: Sequence[np.ndarray], repeat: int = 5,
              min_repeat_ms: float = 2.0, flush: bool = False) -> MeasureResult:
    """Load and time the build in this process: one warm-up call (its outputs are
    returned), then ``repeat`` timings, each of ``number`` back-to-back calls where
    ``number`` makes one timing last at least ``min_repeat_ms``. Times are seconds
    per call. ``flush``: instead, ``repeat`` single calls each after overwriting the
    caches (what a kernel meets inside a whole model). A crashing kernel takes this
    process down: use a runner to isolate it."""
    if repeat < 1:
        raise ValueError(f"run_build: repeat must be >= 1, got {repeat}")
    host = Target.get("host")
    if build.triple != host.triple:
        raise ValueError(f"kernel {build.name} was built for {build.triple}; this machine is {host.triple}")
    ins = check_inputs(build, inputs)
    code = codegen.load(build.object, host)
    outs = [np.zeros(shape, dtype) for shape, dtype in build.outputs]
    arena = np.zeros(build.workspace_bytes + ALIGN, np.uint8)
    ws = arena.ctypes.data + (-arena.ctypes.data) % ALIGN
    ptrs = lambda xs: (ctypes.c_void_p * max(1, len(xs)))(*[x.ctypes.data for x in xs])
    ins_p, outs_p, params_p = ptrs(ins), ptrs(outs), ptrs([])
    entry = code.entry

    def timed(number: int) -> float:
        t0 = time.perf_counter()
        for _ in range(number):
            entry(ins_p, outs_p, params_p, ws)
        return time.perf_counter() - t0

    timed(1)
    first = [o.copy() for o in outs]
    if flush:
        # cold caches, as inside a model where each kernel's weights were last touched a
        # whole network ago: every call is timed alone after the caches are overwritten
        scratch = _flush_buffer()
        times = []
        for _ in range(repeat):
            scratch += 1.0
            t0 = time.perf_counter()
            entry(ins_p, outs_p, params_p, ws)
            times.append(time.perf_counter() - t0)
        del code
        return MeasureResult(times, first, None)
    min_s = max(0.0, min_repeat_ms) / 1e3
    number = 1
    while number < _MAX_NUMBER:   # grow `number` until one timing is long enough
        t = timed(number)
        if t >= min_s:
            break
        number = min(_MAX_NUMBER, max(2 * number, math.ceil(1.2 * number * min_s / max(t, 1e-9))))
    times = [timed(number) / number for _ in range(repeat)]
    del code   # keep the engine (and the code it owns) alive until every call is done
    return MeasureResult(times, first, None)
