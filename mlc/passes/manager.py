"""The pass manager: named graph passes, pipelines per optimization level, the
verifier after each pass, per-pass timing and IR dumps.

    pm = PassManager(opt_level=2, verify=True, dump_dir="ir/", time_passes=True)
    graph = pm.run(graph)          # the graph passes of the level's pipeline
    pm.record("lower", "tensor", lowered)   # later stages report through the same manager

Dumps are numbered in pipeline order (``00-input.graph.txt``, ``01-fold_constants.graph.txt``,
``...-lower.tensor.txt``), so ``diff`` between neighbouring files shows what one pass did.

Levels: -O0 runs no graph pass (one kernel per op); -O1 simplifies (folding, CSE,
DCE, algebraic identities, batch_norm folding); -O2, the default, also picks the
convolution layout and fuses; -O3 folds constants without the size cap.

After lowering, every level runs the tensor passes (``TENSOR_PASSES``) on each kernel
and, after scheduling, the loop passes (``LOOP_PASSES``) on each function; each is
verified under MLC_VERIFY=1 and dumped like a graph pass. ``disabled`` (the CLI's
``--disable-pass NAME``) switches passes off by name at any level, except the ones
code generation needs.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from .. import ops
from ..ir import loop as loop_ir, tensor as tensor_ir
from ..ir.graph import Graph
from . import graph_rules, layout, loops, lower, simplify

DEFAULT_OPT_LEVEL = 2


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable          # graph: Graph -> Graph; tensor: Kernel -> Kernel; loop: Func -> Func
    doc: str
    level: str = "graph"
    required: bool = False   # a later stage cannot do without it: it cannot be disabled
    takes_target: bool = False   # a graph pass whose decisions depend on the Target: run(graph, target)


PASSES: dict[str, Pass] = {p.name: p for p in (
    Pass("infer_types", simplify.infer_types, "recompute every result type from the op type rules"),
    Pass("fold_constants", simplify.fold_constants, "evaluate nodes with constant inputs (size-capped)"),
    Pass("fold_all_constants", partial(simplify.fold_constants, max_bytes=1 << 62),
         "evaluate nodes with constant inputs, whatever the size"),
    Pass("simplify", graph_rules.simplify, "algebraic identities, transpose/reshape chains, batch_norm folding "
         "(the rule tables of graph_rules.py)"),
    Pass("cse", simplify.eliminate_common_subexpressions, "merge identical nodes and constants"),
    Pass("hoist_loop_invariants", simplify.hoist_loop_invariants, "compute what a scan or while_loop body reads "
         "only from outside the loop once, before it"),
    Pass("dce", simplify.eliminate_dead_code, "drop nodes whose results are never used"),
    Pass("conv_layout", layout.select_conv_layout, "narrow or 1x1 convolutions as matrix products",
         takes_target=True),
)}

_SIMPLIFY = ["infer_types", "fold_constants", "simplify", "cse", "hoist_loop_invariants", "dce"]
PIPELINES: dict[int, list[str]] = {
    0: [],
    1: _SIMPLIFY,
    2: _SIMPLIFY + ["conv_layout"],
    3: ["infer_types", "fold_all_constants", "simplify", "cse", "hoist_loop_invariants", "dce", "conv_layout"],
}
FUSION_LEVEL = 2   # the first level that fuses ops into kernels

# The passes after lowering, at every -O level, in order: each runs on every kernel
# (tensor) or every scheduled function (loop), then is verified and dumped.
TENSOR_PASSES = [
    Pass("inline", lower.inline, "inline injective temporaries read about once per element", "tensor"),
    Pass("simplify_indices", lower.simplify_indices, "simplify index arithmetic with the axes' ranges", "tensor"),
    Pass("reindex_reductions", lower.reindex_reductions,
         "recompute a reduction read through a reshape in its reader's index space (an epilogue)", "tensor"),
]
LOOP_PASSES = [
    Pass("partition", loops.partition, "remove likely guards by loop partitioning", "loop",
         required=True),   # a guard left inside a vector loop cannot be generated
    Pass("lower_accumulate", loops.lower_accumulate, "accumulations as loads, combines and stores", "loop",
         required=True),
    Pass("simplify_loops", loops.simplify, "fold conditions and simplify indices with the loops' ranges", "loop"),
]
ALL_PASSES: dict[str, Pass] = {**PASSES, **{p.name: p for p in TENSOR_PASSES + LOOP_PASSES}}


def check_opt_level(level) -> int:
    if not isinstance(level, int) or level not in PIPELINES:
        raise ValueError(f"optimization level must be one of {sorted(PIPELINES)}, got {level!r}")
    return level


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def check_disabled(names) -> frozenset[str]:
    """The pass names ``--disable-pass`` may switch off, or a ValueError naming the choices."""
    names = frozenset(names)
    for n in sorted(names):
        if n not in ALL_PASSES:
            raise ValueError(f"unknown pass {n!r}; passes: {', '.join(ALL_PASSES)}")
        if ALL_PASSES[n].required:
            raise ValueError(f"pass {n} cannot be disabled: code generation needs its result ("
                             f"{', '.join(p.name for p in ALL_PASSES.values() if p.required)} always run)")
    return names


class PassManager:
    """Runs one pipeline; keeps (name, seconds) per pass and writes dumps when asked.

    ``verify=None`` reads MLC_VERIFY (the test suite sets it); ``dump_dir=None`` reads
    MLC_DUMP_IR, and then each compile dumps into its own subfolder (``DIR/<graph name>``,
    ``DIR/<graph name>.1``, ...), so every ``mlc.jit`` specialization keeps its dumps."""

    def __init__(self, opt_level: int = DEFAULT_OPT_LEVEL, verify: bool | None = None,
                 dump_dir: str | os.PathLike | None = None, time_passes: bool = False, disabled=()):
        self.opt_level = check_opt_level(opt_level)
        self.disabled = check_disabled(disabled)
        self.verify = env_flag("MLC_VERIFY") if verify is None else verify
        self._env_dump = dump_dir is None and bool(os.environ.get("MLC_DUMP_IR"))
        dump_dir = dump_dir if dump_dir is not None else os.environ.get("MLC_DUMP_IR") or None
        self.dump_dir = Path(dump_dir) if dump_dir else None
        self.time_passes = time_passes
        self.progress = False   # show each compile stage and the kernels scheduled (mlc compile -v)
        self.timings: list[tuple[str, float]] = []
        self._step = 0

    def for_body(self, name: str) -> "PassManager":
        """The pass manager for a control-flow body of this compile: the same options, its
        dumps in a subfolder ``name`` of this one's."""
        pm = PassManager(self.opt_level, self.verify, self.dump_dir / name if self.dump_dir else None,
                         self.time_passes, self.disabled)
        pm._env_dump = False
        return pm

    @property
    def pipeline(self) -> list[str]:
        return PIPELINES[self.opt_level]

    def run(self, graph: Graph, target=None) -> Graph:
        """The level's graph passes, in order; ``target`` (a Target) for the passes that
        depend on it (None: their defaults)."""
        ops.verify(graph)
        if self._env_dump:   # MLC_DUMP_IR=DIR: one fresh folder per compile, named after the graph
            base, n = self.dump_dir / graph.name, 1
            while base.exists():
                base, n = self.dump_dir / f"{graph.name}.{n}", n + 1
            self.dump_dir, self._env_dump = base, False
        self.record("input", "graph", graph)
        for name in self.pipeline:
            if name not in self.disabled:
                graph = self.apply(PASSES[name], graph, target)
        return graph

    def run_tensor_passes(self, lowered) -> None:
        """The tensor-level passes on every kernel of a ``LoweredGraph``, in place."""
        calls = [c for c in lowered.calls if isinstance(c.kernel, tensor_ir.Kernel)]

        def run(p):
            for c in calls:
                c.kernel = p.run(c.kernel)
            return [c.kernel for c in calls]
        self._run_level(TENSOR_PASSES, run, tensor_ir.verify, [c.kernel for c in calls], lowered)

    def run_loop_passes(self, funcs: list) -> None:
        """The loop-level passes on every scheduled function, in place."""
        def run(p):
            funcs[:] = [p.run(f) for f in funcs]
            return funcs
        self._run_level(LOOP_PASSES, run, loop_ir.verify, funcs, funcs)

    def _run_level(self, passes: list[Pass], run: Callable, verify: Callable, units: list, whole) -> None:
        """Run ``passes`` over ``units`` (``run(p)`` applies one and returns the new
        units); under ``verify``, the units are verified before the first pass and after each."""
        def check(units, what: str):   # what: the message, "{}" standing for the level
            for u in units if self.verify else ():
                try:
                    verify(u)
                except Exception as e:
                    raise RuntimeError(f"{what.format(passes[0].level)}: {e}") from e
        check(units, "invalid {} IR before its passes")
        for p in passes:
            if p.name in self.disabled:
                continue
            t0 = time.perf_counter()
            units = run(p)
            self.timings.append((p.name, time.perf_counter() - t0))
            check(units, f"pass {p.name} produced invalid {{}} IR")
            self.record(p.name, p.level, whole)

    def apply(self, p: Pass, graph: Graph, target=None) -> Graph:
        t0 = time.perf_counter()
        out = p.run(graph, target) if p.takes_target else p.run(graph)
        self.timings.append((p.name, time.perf_counter() - t0))
        if self.verify:
            try:
                ops.verify(out)
            except Exception as e:
                raise RuntimeError(f"pass {p.name} produced an invalid graph: {e}") from e
        self.record(p.name, "graph", out)
        return out

    def timed(self, name: str, level: str | None, fn: Callable, *args):
        """Run a later stage (``fn(*args)``), time it and dump its result at ``level`` (None: no dump)."""
        t0 = time.perf_counter()
        out = fn(*args)
        self.timings.append((name, time.perf_counter() - t0))
        if level is not None:
            self.record(name, level, out)
        return out

    def record(self, name: str, level: str, ir) -> None:
        if self.dump_dir is None:
            return
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        (self.dump_dir / f"{self._step:02d}-{name}.{level}.txt").write_text(f"{ir}\n")
        self._step += 1

    def timing_report(self) -> str:
        total = sum(t for _, t in self.timings) or 1e-12
        lines = [f"{'pass':<24}{'ms':>10}{'%':>7}"]
        for name, t in self.timings:
            lines.append(f"{name:<24}{t * 1e3:>10.2f}{100 * t / total:>6.1f}%")
        lines.append(f"{'total':<24}{total * 1e3:>10.2f}")
        return "\n".join(lines)
