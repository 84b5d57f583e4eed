"""What the tuner searches for a cuda target: the knobs of the GPU rules
(``mlc.schedule.gpu.KNOBS``) that a kernel's rules read, over the values a launch can
use, and loop-nest features with the launch shape added.

A candidate is a knob assignment; ``gpu_schedule`` turns it into a schedule, so every
candidate is a schedule the GPU rules could have written. Only legal combinations
enter the space: at most 1024 threads a block and a register tile dividing the block
tile (``gpu.check_knobs``), a contraction's staged tiles and a row reduction's tree
within the architecture's shared memory per block (``codegen.nvptx.MAX_SHARED``).
Registers need no check: every kernel carries its block size (``maxntid``), so ptxas
fits its registers to the block. Values past what a kernel's shapes can use (a block
tile over twice the rows, more threads than elements) are left out: they would only
repeat a smaller value's schedule with more guarded threads.
"""
from __future__ import annotations

import itertools
import math
import random

import numpy as np

from ..codegen.nvptx import MAX_SHARED, MAX_STATIC_SHARED, SHARED_ALIGN, GpuCodegenError, kernels_of
from ..ir.loop import Func
from ..ir.tensor import Kernel
from ..schedule.gpu import KNOBS, check_knobs, gpu_schedule
from ..schedule.primitives import ScheduleError
from ..target import Target
from .space import config_id, features

THREADS = (64, 128, 256, 512, 1024)
TILES = (32, 64, 128)
REGS = (2, 4, 8)
K_TILES = (8, 16, 32)
ROW_THREADS = (32, 64, 128, 256, 512, 1024)
VALUES = {"threads": THREADS, "tile_m": TILES, "tile_n": TILES, "reg": REGS, "k_tile": K_TILES,
          "row_threads": ROW_THREADS}

GPU_FEATURES = ("log_threads_per_block", "log_blocks", "log_shared", "n_kernels")


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _size(xs) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


class GpuSearchSpace:
    """The legal knob grid of one kernel for a cuda target (see the module doc); the
    empty config is the default schedule."""

    def __init__(self, kernel: Kernel, target: Target):
        if target.kind != "cuda":
            raise ValueError(f"GpuSearchSpace is for cuda targets; {target.name} is a {target.kind} target")
        self.kernel = kernel
        self.target = target
        self.shared_limit = MAX_SHARED.get(target.arch, MAX_STATIC_SHARED)
        used = gpu_schedule(kernel, target).knobs_read   # the knobs this kernel's rules read
        reductions = [c for c in kernel.stages if c.is_reduction]
        rows = max((c.shape[-2] for c in reductions if len(c.shape) >= 2), default=1)
        cols = max((c.shape[-1] for c in reductions if len(c.shape) >= 2), default=1)
        depth = max((_size(c.body.extents) for c in reductions), default=1)
        elements = max((_size(c.shape) for c in kernel.stages), default=1)
        self.itemsize = max([c.dtype.itemsize for c in kernel.stages] +
                            [t.dtype.itemsize for t in kernel.inputs if hasattr(t, "dtype")])
        caps = {"threads": max(THREADS[0], _pow2_at_least(elements)), "tile_m": max(TILES[0], _pow2_at_least(rows)),
                "tile_n": max(TILES[0], _pow2_at_least(cols)), "k_tile": max(K_TILES[0], _pow2_at_least(depth)),
                "row_threads": max(ROW_THREADS[0], _pow2_at_least(depth)), "reg": REGS[-1]}
        grid = {}
        for name in KNOBS:   # in KNOBS order, so configs read the same every run
            if name in used:
                vals = tuple(v for v in VALUES[name] if v <= caps[name])
                if KNOBS[name] not in vals:   # the default stays a candidate
                    vals = tuple(sorted(vals + (KNOBS[name],)))
                grid[name] = vals
        self.names = list(grid)
        self.configs = []
        for values in itertools.product(*grid.values()):
            k = dict(zip(self.names, values))
            if self.legal(k) is None:
                self.configs.append(k)

    def shared_bytes(self, knobs: dict) -> int:
        """Shared memory of the largest launch these knobs give: a contraction's two
        staged tiles (``tile_m`` x ``k_tile`` and ``k_tile`` x ``tile_n``), a row
        reduction's tree (``row_threads`` partials); each launch is one stage."""
        k = {**KNOBS, **knobs}
        align = lambda n: -(-n * self.itemsize // SHARED_ALIGN) * SHARED_ALIGN
        most = 0
        if "tile_m" in self.names or "k_tile" in self.names:
            most = max(most, align(k["tile_m"] * k["k_tile"]) + align(k["k_tile"] * k["tile_n"]))
        if "row_threads" in self.names:
            most = max(most, align(k["row_threads"]))
        return most

    def legal(self, knobs: dict) -> str | None:
        """None when a launch can run these knobs on the target, else why not."""
        try:
            check_knobs(knobs)
        except ScheduleError as e:
            return str(e)
        shared = self.shared_bytes(knobs)
        if shared > self.shared_limit:
            return (f"{shared} bytes of shared memory per block: {self.target.arch} allows "
                    f"{self.shared_limit}")
        return None

    def __len__(self) -> int:
        return len(self.configs)

    def schedule(self, config: dict):
        """The Schedule the GPU rules write with these knobs (the others at their defaults)."""
        return gpu_schedule(self.kernel, self.target, config)

    def sample(self, n: int, rng: random.Random, exclude=()) -> list[dict]:
        pool = [c for c in self.configs if config_id(c) not in exclude]
        return rng.sample(pool, min(n, len(pool)))

    def features(self, func: Func) -> np.ndarray:
        return gpu_features(func, self.target)


def gpu_features(func: Func, target: Target) -> np.ndarray:
    """``space.features`` of the loop nest, then its launches' shape: threads per block
    and blocks (of the largest launch), shared memory, number of launches."""
    try:
        plans = kernels_of(func, target)
    except GpuCodegenError:
        plans = []
    threads = max((math.prod(p.block) for p in plans), default=1)
    blocks = max((math.prod(p.grid) for p in plans), default=1)
    shared = max((p.shared_bytes for p in plans), default=0)
    extra = [math.log2(threads), math.log2(max(1, blocks)), math.log2(1 + shared), len(plans)]
    return np.concatenate([features(func, target), np.array(extra, dtype=np.float64)])
