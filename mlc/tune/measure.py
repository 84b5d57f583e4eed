"""Build and run one kernel candidate: a loop-level ``Func`` compiled alone into an
object file with its own ``mlc_entry``, then timed.

``build_kernel`` compiles (in the tuner's process); ``run_build`` loads and times
the object code in the *current* process -- the runners (``mlc.tune.runner``,
``mlc.tune.rpc``) call it in a worker process, so a candidate that crashes or
hangs costs one measurement, not the tuner.

A cuda target's candidate is PTX and its launches (``codegen.nvptx.build_gpu``),
timed on the worker's CUDA device with CUDA events (``run_gpu_build``); built with
``emulate=True`` it is instead its CPU emulation (``passes.emulate``) as object code
for this machine, which runs and checks it without a device.
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
    # a GPU build: ``object`` is PTX and these are its launches, in order, each
    # {"kernel", "grid", "block", "shared_bytes", "dynamic_shared_bytes", "args": [[space, index], ...]}
    launches: list = field(default_factory=list)

    @property
    def is_gpu(self) -> bool:
        return self.triple.startswith("nvptx")

    def header(self) -> dict:
        """The JSON description sent with the object bytes to a worker or server."""
        h = {"name": self.name, "inputs": [[list(s), d] for s, d in self.inputs],
             "outputs": [[list(s), d] for s, d in self.outputs], "workspace_bytes": self.workspace_bytes,
             "triple": self.triple, "parallel": self.parallel, "target_key": self.target_key}
        if self.launches:
            h["launches"] = self.launches
        return h

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
                           bool(h.get("parallel", False)), str(h.get("target_key", "")),
                           [_launch(x) for x in h.get("launches", [])])


def _launch(x) -> dict:
    """One launch of a GPU build's header, checked; ValueError naming what is wrong."""
    try:
        out = {"kernel": str(x["kernel"]), "grid": [int(n) for n in x["grid"]],
               "block": [int(n) for n in x["block"]], "shared_bytes": int(x.get("shared_bytes", 0)),
               "dynamic_shared_bytes": int(x.get("dynamic_shared_bytes", 0)),
               "args": [[str(sp), int(i)] for sp, i in x["args"]]}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"malformed launch {x!r}: {e}") from None
    if len(out["grid"]) != 3 or len(out["block"]) != 3 or any(n < 0 for n in out["grid"] + out["block"]):
        raise ValueError(f"launch {out['kernel']}: grid and block must be 3 non-negative sizes")
    if any(sp not in ("input", "output", "workspace") for sp, _ in out["args"]):
        raise ValueError(f"launch {out['kernel']}: arguments live in input, output or workspace slots")
    return out


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


def build_kernel(func: Func, target="host", emulate: bool = False) -> KernelBuild:
    """Compile one loop-level Func into object code with an ``mlc_entry`` that passes
    it its inputs, outputs and scratch buffers (placed in the workspace). A cuda
    target's Func becomes PTX and launches (``build_gpu_kernel``), or with ``emulate``
    its CPU emulation compiled for this machine."""
    target = Target.get(target)
    if target.kind == "cuda":
        if emulate:
            from ..passes.emulate import emulate_gpu
            return build_kernel(emulate_gpu(func), "host")
        return build_gpu_kernel(func, target)
    if target.kind != "cpu":
        raise ValueError(f"build_kernel compiles CPU kernels; target {target} is {target.kind}")
    program = codegen.Program.of_func(func, parallel=codegen.runs_parallel(target))
    obj = codegen.build(program, target)
    specs = lambda bufs: [(b.shape, b.dtype.np.str) for b in bufs]
    return KernelBuild(func.name, obj, specs(func.inputs), specs(func.outputs), program.workspace_bytes,
                       target.triple, program.parallel, target.key)


def build_gpu_kernel(func: Func, target) -> KernelBuild:
    """One cuda-scheduled Func as PTX for ``target`` and its launch table (each launch's
    arguments: the inputs, outputs and scratch buffers in a workspace)."""
    from ..codegen.nvptx import build_gpu
    target = Target.get(target)
    program = codegen.Program.of_func(func)
    gpu = build_gpu(program, target)
    launches = [{"kernel": x.kernel, "grid": list(x.grid), "block": list(x.block), "shared_bytes": x.shared_bytes,
                 "dynamic_shared_bytes": x.dynamic_shared_bytes, "args": [[a.space, a.index] for a in x.args]}
                for x in gpu.launches]
    specs = lambda bufs: [(b.shape, b.dtype.np.str) for b in bufs]
    return KernelBuild(func.name, gpu.ptx.encode(), specs(func.inputs), specs(func.outputs), gpu.workspace_bytes,
                       target.triple, False, target.key, launches)


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
    if build.is_gpu:
        return run_gpu_build(build, inputs, repeat, min_repeat_ms, flush)
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


def run_gpu_build(build: KernelBuild, inputs: Sequence[np.ndarray], repeat: int = 5,
                  min_repeat_ms: float = 2.0, flush: bool = False) -> MeasureResult:
    """Load a GPU build's PTX on this process's CUDA device (through CuPy, as
    ``runtime.cuda.CudaCode`` does) and time its launches with CUDA events: one warm-up
    call (its outputs are returned), then ``repeat`` timings of ``number`` back-to-back
    calls, ``number`` growing until one timing lasts ``min_repeat_ms``. ``flush``: each
    of ``repeat`` calls timed alone after overwriting twice the device's L2 cache (the
    overwrite is queued first, so the launch is queued before its start event is
    reached and the events time the kernels, not the launch overhead)."""
    from ..codegen.nvptx import GpuModule, Launch
    from ..ir.plan import Slot
    from ..runtime.cuda import CudaCode
    launches = [Launch(kernel=x["kernel"], grid=tuple(x["grid"]), block=tuple(x["block"]),
                       shared_bytes=x["shared_bytes"], args=tuple(Slot(sp, i) for sp, i in x["args"]),
                       func=build.name, dynamic_shared_bytes=x["dynamic_shared_bytes"]) for x in build.launches]
    gm = GpuModule(build.object.decode(), launches, build.workspace_bytes)
    code = CudaCode(gm, [])   # CudaUnavailable without CuPy or a device: this measurement's error
    cp = code.cp
    ins = [cp.asarray(a) for a in check_inputs(build, inputs)]
    outs = [cp.zeros(shape, dtype) for shape, dtype in build.outputs]

    def call(number: int = 1) -> None:
        for _ in range(number):
            code.launch_all(ins, outs)

    call()
    cp.cuda.Device().synchronize()
    first = [cp.asnumpy(o) for o in outs]
    if flush:
        l2 = int(cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["l2CacheSize"])
        scrub = cp.empty(max(8 << 20, 2 * l2) // 4, cp.float32)
        marks = []
        for r in range(repeat):
            scrub.fill(float(r))
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            call()
            end.record()
            marks.append((start, end))
        marks[-1][1].synchronize()
        return MeasureResult([cp.cuda.get_elapsed_time(a, b) * 1e-3 for a, b in marks], first, None)

    def timed(number: int) -> float:
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        call(number)
        end.record()
        end.synchronize()
        return cp.cuda.get_elapsed_time(start, end) * 1e-3

    min_s = max(0.0, min_repeat_ms) / 1e3
    number = 1
    while number < _MAX_NUMBER:
        t = timed(number)
        if t >= min_s:
            break
        number = min(_MAX_NUMBER, max(2 * number, math.ceil(1.2 * number * min_s / max(t, 1e-9))))
    return MeasureResult([timed(number) / number for _ in range(repeat)], first, None)
