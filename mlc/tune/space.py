"""What the tuner searches: per kernel, the knobs of the default-schedule rules
(``mlc.schedule.default``), and features of the loop nest each choice produces.

A candidate is a knob assignment; the rules turn it into a schedule (a trace of
primitives), so every candidate is a schedule the rules could have picked, and
the space grows from the same rules that make an untuned compile fast.
"""
from __future__ import annotations

import itertools
import json
import math
import random

import numpy as np

from ..ir import expr as E
from ..ir.loop import Accumulate, Alloc, For, Func, Store
from ..ir.tensor import Kernel
from ..schedule.default import rule_schedule
from ..schedule.primitives import walk_stmts
from ..target import Target

ROWS = (1, 2, 3, 4, 6, 8)
VECTORS = (1, 2, 3, 4)
BLOCKS = (32, 64, 128, 256, 512, 1024)


class SearchSpace:
    """The knob grid of one kernel, with register-file pruning: a rows x vectors tile
    plus one row operand and one vector of the other must fit the vector registers."""

    def __init__(self, kernel: Kernel, target: Target):
        self.kernel = kernel
        self.target = target
        registers = 32 if target.vector_bytes >= 64 else 16
        contraction = any(c.is_reduction for c in kernel.stages)
        grid = {"parallel": (1, 0)}
        if contraction:
            grid.update(rows=ROWS, vectors=VECTORS, block_n=BLOCKS, block_k=BLOCKS, pack=(1, 0), row_axis=(0, 1))
        self.names = list(grid)
        self.configs = []
        for values in itertools.product(*grid.values()):
            k = dict(zip(self.names, values))
            if contraction and k["rows"] * k["vectors"] + k["vectors"] + 1 > registers:
                continue
            self.configs.append(k)

    def __len__(self) -> int:
        return len(self.configs)

    def schedule(self, config: dict):
        """The Schedule the rules write with these knobs (the others at their defaults);
        its ``trace`` is what is stored."""
        return rule_schedule(self.kernel, self.target, config)

    def sample(self, n: int, rng: random.Random, exclude=()) -> list[dict]:
        pool = [c for c in self.configs if config_id(c) not in exclude]
        return rng.sample(pool, min(n, len(pool)))

    def features(self, func: Func) -> np.ndarray:
        """What the cost model reads of a candidate's loop nest (``features``)."""
        return features(func, self.target)


def config_id(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


# ----------------------------------------------------------------------------- features

FEATURES = ("log_work", "log_out", "n_serial", "n_parallel", "n_vector", "n_unroll", "log_serial", "log_parallel",
            "log_vector", "log_unroll", "max_unrolled_body", "local_bytes", "log_scratch", "n_stores",
            "loads_per_store", "par_iters", "work_per_thread", "tile_rows", "tile_cols", "scratch_over_l2")


def features(func: Func, target: Target) -> np.ndarray:
    """A fixed-length description of a scheduled loop nest, read from the loops alone
    (so stored schedules train the model too): loop counts and trip counts by kind,
    unrolled body size, register (local) bytes and tile shape, scratch (packed
    blocks) against the L2 cache, loads per store, parallel iterations and work per
    thread."""
    kinds = {"serial": [0, 0.0], "parallel": [0, 0.0], "vector": [0, 0.0], "unroll": [0, 0.0]}
    max_unroll, local, stores, loads, par_iters, work = 1, 0, 0, 0, 1, 0.0
    tile = (0, 0)
    for s, above in walk_stmts(func.body):
        if isinstance(s, For):
            k = kinds.get(s.kind if s.kind in kinds else "serial")
            n = _extent(s)
            k[0] += 1
            k[1] += math.log2(max(1, n))
            if s.kind == "parallel":
                par_iters = max(par_iters, n)
        elif isinstance(s, Alloc):
            if s.buffer.type.nbytes > local:
                local = s.buffer.type.nbytes
                shape = s.buffer.shape
                tile = (shape[-2] if len(shape) > 1 else 1, shape[-1] if shape else 1)
        elif isinstance(s, (Store, Accumulate)):
            stores += 1
            loads += sum(1 for _ in _loads_in(s))
            trip, unrolled = 1, 1
            for a in above:
                if isinstance(a, For):
                    trip *= _extent(a)
                    if a.kind in ("unroll", "vector"):
                        unrolled *= _extent(a)
            work += trip
            max_unroll = max(max_unroll, unrolled)
    out = sum(b.type.size for b in func.outputs)
    scratch = sum(b.type.nbytes for b in func.scratch)
    vals = [math.log2(1 + work), math.log2(1 + out), kinds["serial"][0], kinds["parallel"][0], kinds["vector"][0],
            kinds["unroll"][0], kinds["serial"][1], kinds["parallel"][1], kinds["vector"][1], kinds["unroll"][1],
            math.log2(max_unroll), local, math.log2(1 + scratch), math.log2(1 + stores), loads / max(1, stores),
            math.log2(par_iters), math.log2(1 + work / max(1, min(par_iters, target.cores))),
            tile[0], tile[1], scratch / max(1, target.l2_bytes)]
    return np.array(vals, dtype=np.float64)


def _extent(f: For) -> int:
    return int(f.extent.value) if isinstance(f.extent, E.Const) else 1


def _loads_in(s):
    for e in (*s.indices, s.value):
        for x in E.walk(e):
            if isinstance(x, E.Load):
                yield x
