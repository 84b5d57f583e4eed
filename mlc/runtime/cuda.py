"""Running a compiled program on a CUDA device, through CuPy.

A GPU compilation (``codegen.nvptx.build_gpu``) is one PTX module and a launch table:
every kernel of every plan call, in order, with its grid, block, shared memory and
the plan's slot for each argument (an input, an output, a weight, or an offset in the
one workspace arena). ``CudaCode`` loads the PTX once (the driver JIT-compiles it for
the device), keeps the weights and the arena on the device, and replays the table on
the current stream. After the first call it captures the replay as a CUDA graph
(static input and output buffers; each call copies its inputs in and its outputs
out), so a call of a small model costs one graph launch instead of one launch per
kernel. ``MLC_CUDA_GRAPH=0`` keeps plain launches. A collective op in the table (the
all-reduce of data-parallel gradients) runs between the launches through
``comm.device_world()`` -- NCCL on the same stream -- and keeps the table out of a
CUDA graph.

``CudaExecutable`` is the ``Executable`` of a GPU program: CuPy arrays, or anything
with ``__cuda_array_interface__`` or ``__dlpack__`` on the device (a torch CUDA tensor),
go in without a copy; numpy arrays are copied to the device; results are CuPy arrays.
``exe.profile()`` times each launch with CUDA events.
"""
from __future__ import annotations

import os
import tempfile
import threading

import numpy as np

from .executable import Executable


class CudaUnavailable(RuntimeError):
    """CuPy or a CUDA device is missing."""


def cupy_module():
    """CuPy with a device, or CudaUnavailable saying what is missing."""
    try:
        import cupy
    except ImportError:
        raise CudaUnavailable("running on a CUDA device needs CuPy: pip install 'mlc[gpu]' (cupy-cuda13x); "
                              "without a device, MLC_CUDA_EMULATE=1 runs GPU schedules on the CPU") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:   # no driver, or no device
        raise CudaUnavailable(f"no CUDA device is usable here ({e}); MLC_CUDA_EMULATE=1 runs GPU schedules on "
                              "the CPU") from None
    if count < 1:
        raise CudaUnavailable("no CUDA device found; MLC_CUDA_EMULATE=1 runs GPU schedules on the CPU")
    return cupy


class CudaCode:
    """A GPU module loaded on the current device: the launch table, replayed."""

    needs_workspace = False

    def __init__(self, gpu_module, params):
        cp = cupy_module()
        self.cp = cp
        with tempfile.TemporaryDirectory(prefix="mlc-ptx-") as d:
            path = os.path.join(d, "module.ptx")
            with open(path, "w") as f:
                f.write(gpu_module.ptx)
            self.module = cp.RawModule(path=path)
            self.kernels = {}
            for launch in gpu_module.launches:
                if not launch.collective and launch.kernel not in self.kernels:
                    k = self.module.get_function(launch.kernel)
                    if launch.dynamic_shared_bytes:
                        k.max_dynamic_shared_size_bytes = launch.dynamic_shared_bytes
                    self.kernels[launch.kernel] = k
        self.launches = [launch for launch in gpu_module.launches if all(launch.grid)]   # a 0 in a grid: empty
        self.params = [cp.asarray(np.ascontiguousarray(p)) for p in params]
        self.arena = cp.zeros(max(1, gpu_module.workspace_bytes), cp.uint8)
        self._views: dict = {}   # workspace offset -> a view of the arena there
        self._graph = None
        self._static = None
        self._collectives: dict = {}   # descriptor -> (op, attrs, source type, destination type, call site)
        # a collective runs on the host's communicator between launches: no graph around it
        self.use_graph = os.environ.get("MLC_CUDA_GRAPH", "1").strip() not in ("0", "off", "no") and not any(
            launch.collective for launch in self.launches)
        self._lock = threading.Lock()   # one workspace: calls on one executable run one at a time

    def _pointer(self, slot, inputs, outputs) -> "object":
        cp = self.cp
        space = slot.space
        if space == "input":
            return inputs[slot.index]
        if space == "output":
            return outputs[slot.index]
        if space == "param":
            return self.params[slot.index]
        # a view into the arena at the plan's offset (the kernel takes its data pointer), made once
        view = self._views.get(slot.index)
        if view is None:
            view = self._views[slot.index] = cp.ndarray((1,), cp.uint8, memptr=self.arena.data + slot.index)
        return view

    def _array(self, slot, typestr: str, shape: tuple, inputs, outputs):
        """The slot's memory as a CuPy array of the given type (a view, no copy)."""
        cp = self.cp
        base = self._pointer(slot, inputs, outputs)
        memptr = self.arena.data + slot.index if slot.space == "workspace" else base.data
        return cp.ndarray(shape, np.dtype(typestr), memptr=memptr)

    def collective(self, launch, inputs, outputs) -> None:
        """A collective entry of the table, by the device communicator (NCCL) on the
        current stream (``runtime.comm.device_world``)."""
        from .comm import device_group_of, parse_descriptor, run_collective
        parsed = self._collectives.get(launch.collective)
        if parsed is None:
            parsed = self._collectives[launch.collective] = parse_descriptor(launch.collective)
        op, attrs, t_in, t_out, site = parsed
        src, dst = launch.args
        out = self._array(dst, *t_out, inputs, outputs)
        x = None if t_in is None else out if (src == dst and t_in == t_out) else \
            self._array(src, *t_in, inputs, outputs)
        run_collective(op, attrs, x, out, device_group_of(tuple(attrs["group"])), site)

    def launch_all(self, inputs, outputs, each=None) -> None:
        """Every launch of the table on the current stream; ``each(n, run)`` wraps launch n."""
        for n, launch in enumerate(self.launches):
            if launch.collective:
                def run(launch=launch):
                    self.collective(launch, inputs, outputs)
                run() if each is None else each(n, run)
                continue
            args = tuple(self._pointer(s, inputs, outputs) for s in launch.args)
            kernel = self.kernels[launch.kernel]

            def run(kernel=kernel, launch=launch, args=args):
                kernel(launch.grid, launch.block, args, shared_mem=launch.dynamic_shared_bytes)
            if each is None:
                run()
            else:
                each(n, run)

    def run(self, inputs, outputs) -> None:
        """Run on device arrays (C-contiguous, the signature's dtypes and shapes)."""
        with self._lock:
            if not self.use_graph:
                self.launch_all(inputs, outputs)
                return
            if self._graph is None:
                self._capture(inputs, outputs)
            static_in, static_out = self._static
            for dst, src in zip(static_in, inputs):
                dst[...] = src
            self._graph.launch()
            for dst, src in zip(outputs, static_out):
                dst[...] = src

    def _capture(self, inputs, outputs) -> None:
        """The table as a CUDA graph over static buffers; on any failure, plain launches."""
        cp = self.cp
        static_in = [cp.empty_like(x) for x in inputs]
        static_out = [cp.empty_like(x) for x in outputs]
        self.launch_all(static_in, static_out)   # loads every kernel before capture
        stream = cp.cuda.Stream(non_blocking=True)
        try:
            with stream:
                stream.begin_capture()
                self.launch_all(static_in, static_out)
                self._graph = stream.end_capture()
            self._static = (static_in, static_out)
        except Exception as e:   # an old driver or CuPy: stay with plain launches
            import warnings
            warnings.warn(f"CUDA graph capture failed ({e}); running kernels one launch at a time", RuntimeWarning)
            self.use_graph = False
            self._graph = None

    def profile_records(self, calls: int):
        """Not used: ``CudaExecutable.profile`` times launches with CUDA events."""
        raise ValueError("GPU programs are profiled with CUDA events (CudaExecutable.profile)")


class CudaExecutable(Executable):
    """An Executable whose code runs on the current CUDA device (``CudaCode``)."""

    def call_flat(self, args):
        cp = self._code.cp
        if len(args) != len(self._expect):
            raise TypeError(f"{self.name}() takes {len(self.input_types)} array argument(s) "
                            f"({', '.join(self.input_names)}), got {len(args)}")
        inputs = [self._device_input(a, n) for n, a in enumerate(args)]
        outputs = []
        for n, (dt, shape) in enumerate(self._produce):
            j = self._alias_of[n]
            if j is None:
                outputs.append(cp.empty(shape, dtype=dt))
            elif inputs[j] is not args[j]:   # written in place: it must be the caller's own device array
                raise TypeError(f"{self.name}(): argument '{self.input_names[j]}' is updated in place, so it must be "
                                f"a C-contiguous CuPy array of type {self.input_types[j]} on the device")
            else:
                outputs.append(inputs[j])
        self._code.run(inputs, outputs)
        outputs = [o for n, o in enumerate(outputs) if self._alias_of[n] is None]
        if self.signature is not None:
            from ..tree import unflatten
            return unflatten(self.signature.out_tree, outputs)
        return outputs[0] if self._single else tuple(outputs)

    def _device_input(self, a, n: int):
        cp = self._code.cp
        dt, shape = self._expect[n]
        if isinstance(a, cp.ndarray):
            x = a
        elif hasattr(a, "__cuda_array_interface__"):
            x = cp.asarray(a)                       # a view of the same device memory
        elif hasattr(a, "__dlpack__") and not isinstance(a, np.ndarray) and _on_cuda(a):
            x = cp.from_dlpack(a)
        else:
            x = cp.asarray(np.asarray(a))           # host data: copied to the device
        if x.dtype != dt or x.shape != shape:
            raise TypeError(f"{self.name}(): argument '{self.input_names[n]}' expects {self.input_types[n]} "
                            f"(numpy {np.dtype(dt).name}, shape {shape}), got {x.dtype} of shape {x.shape}")
        return cp.ascontiguousarray(x)

    def profile(self, *args, runs: int = 20, warmup: int = 2, ceilings=None):
        """Per-kernel times from CUDA events around each launch (``ProfileReport``)."""
        from .profile import KernelInfo, KernelProfile, ProfileReport
        c = self._compiled
        if c is None or runs < 1:
            raise ValueError("profile: runs must be >= 1" if runs < 1 else "profile needs the compiled program")
        cp = self._code.cp
        flat = self.signature.flatten_args(args, self.name) if self.signature is not None else list(args)
        inputs = [self._device_input(a, n) for n, a in enumerate(flat)]
        outputs = [cp.empty(shape, dtype=dt) for dt, shape in self._produce]
        # one row per launch: a function's cost goes with its first kernel, its ops with each
        by_func = {info.name: info for info in c.kernel_calls()}
        kernels, seen = [], set()
        for launch in self._code.launches:
            info = by_func.get(launch.func)
            first = launch.func not in seen
            seen.add(launch.func)
            kernels.append(KernelProfile(KernelInfo(
                launch.kernel, info.ops if info else [], info.schedule if info else "default",
                info.flops if info and first else 0, info.bytes if info and first else 0)))
        model_times = []
        for r in range(warmup + runs):
            events = []

            def timed(n, run):
                start, end = cp.cuda.Event(), cp.cuda.Event()
                start.record()
                run()
                end.record()
                events.append((n, start, end))
            t0, t1 = cp.cuda.Event(), cp.cuda.Event()
            t0.record()
            self._code.run(inputs, outputs)
            t1.record()
            t1.synchronize()
            self._code.launch_all(inputs, outputs, timed)
            if events:
                events[-1][2].synchronize()
            if r < warmup:
                continue
            model_times.append(cp.cuda.get_elapsed_time(t0, t1) * 1e-3)
            for n, start, end in events:
                kernels[n].times.append(cp.cuda.get_elapsed_time(start, end) * 1e-3)
        return ProfileReport(self.name, c.target.name, kernels, model_times, *(ceilings or (0.0, 0.0)))


def _on_cuda(a) -> bool:
    device = getattr(a, "__dlpack_device__", None)
    return device is not None and device()[0] in (2, 3, 13)   # kDLCUDA, kDLCUDAHost, kDLCUDAManaged
