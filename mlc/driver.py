"""The compile pipeline, one stage after another:

    trace -> Graph -> graph passes (per -O level) -> fuse -> lower (tensor)
          -> schedule (loop) -> memory plan -> codegen (LLVM module)
          -> object code (each kernel cached on disk) -> Executable

``passes.manager.PassManager`` runs the graph passes and times and dumps every stage.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import sys
import threading
import time
import warnings
from typing import Callable

import llvmlite
import numpy as np

from . import codegen
from .frontend.trace import TraceError, Traced, Tracer, trace_info
from .ir.cost import Cost, kernel_cost
from .ir.graph import Graph
from .logs import Progress
from .ir.tensor import Kernel
from .passes.fuse import fuse, unfused
from .passes.lower import lower_graph
from .passes.emulate import emulate_gpu
from .passes.manager import DEFAULT_OPT_LEVEL, FUSION_LEVEL, PassManager, check_opt_level, env_flag
from .passes.plan import place_aliases, plan_memory
from .ir.plan import ControlCall, Frame
from .ir.loop import Buffer, CallExtern, Func
from .runtime import cache, comm, graph_cache
from .runtime.executable import MISS, Executable, Signature
from .runtime.profile import KernelInfo
from .schedule.database import TuningDB, best_schedule
from .schedule.default import schedule_kernel
from .schedule.primitives import ScheduleError
from .target import Target
from .tree import flatten, unflatten
from .version import __version__


log = logging.getLogger(__name__)


class _Funcs(list):
    """The scheduled loop functions; prints as the loop level."""

    def __str__(self) -> str:
        return "\n\n".join(str(f) for f in self)


def collective_func(kernel) -> Func:
    """A collective as a loop-level function: one call of the runtime's dispatcher
    with the op's descriptor, the source and the destination."""
    x = Buffer("x", kernel.in_type.shape, kernel.in_type.dtype) if kernel.in_type is not None else None
    y = Buffer("y", kernel.out_type.shape, kernel.out_type.dtype)
    body = CallExtern(comm.SYMBOL, kernel.descriptor(), [x, y])
    return Func(kernel.name, [x] if x is not None else [], [y], body)


class Compiled:
    """Every level of one compilation, kept for printing."""

    def __init__(self, graph: Graph, target: Target, pm: PassManager | None = None,
                 aliases: dict[int, int] | None = None, db=None, profile: bool = False):
        pm = pm or PassManager()
        self.aliases = dict(aliases or {})
        self.pm = pm
        self.source = graph
        self.target = target
        self.graph = pm.run(graph, target)
        partition = fuse if pm.opt_level >= FUSION_LEVEL else unfused
        self.fused = pm.timed("fuse", "graph", partition, self.graph)
        self.lowered = pm.timed("lower", "tensor", lower_graph, self.fused)
        pm.run_tensor_passes(self.lowered)
        if self.aliases:
            place_aliases(self.lowered, self.aliases)
        self.tuned = 0
        self.tuned_names: set[str] = set()
        _stage_done(pm, f"graph passes, fuse and lower: {len(self.lowered.calls)} kernels")
        codegen.prepare(target, len(self.lowered.calls))   # compile workers start while the loops are made
        with Progress("schedule", len(self.lowered.calls)) if pm.progress else contextlib.nullcontext() as bar:
            def schedule_all():
                funcs = _Funcs()
                for c in self.lowered.calls:
                    if c.kernel.kind != "control":   # a control-flow op's bodies are compiled below
                        funcs.append(self._schedule(c.kernel, db))
                    if bar is not None:
                        bar.advance(detail=c.kernel.name)
                return funcs
            self.funcs = pm.timed("schedule", "loop", schedule_all)
        pm.run_loop_passes(self.funcs)
        scheduled = iter(self.funcs)
        call_funcs = [None if c.kernel.kind == "control" else next(scheduled) for c in self.lowered.calls]
        frames = self._compile_bodies(db)
        self.plan = pm.timed("plan", "memory", plan_memory, self.lowered, call_funcs, self.aliases, frames)
        # MLC_CUDA_EMULATE=1: a cuda target's functions run here as CPU code (passes/emulate.py)
        self.emulated = target.kind == "cuda" and emulating()
        self.code_target = Target.get("host") if self.emulated else target
        self.parallel = codegen.runs_parallel(self.code_target)
        # MLC_BOUNDS_CHECK=1: every load and store checked (codegen.llvm), BoundsError on a miss
        self.bounds_check = env_flag("MLC_BOUNDS_CHECK")
        self.profile = profile   # a profiling build (mlc compile --profile): every kernel call timed

    def _compile_bodies(self, db) -> dict[str, list[Frame]]:
        """Each control-flow op's bodies compiled as programs of their own (their kernels
        named after the op, their constants appended to this program's parameters): the
        frames the memory plan places. A body's own control flow nests the same way."""
        frames: dict[str, list[Frame]] = {}
        self.bodies: list[Compiled] = []
        for call in self.lowered.calls:
            kernel = call.kernel
            if kernel.kind != "control":
                continue
            if self.target.kind == "cuda" and not emulating():
                raise NotImplementedError(
                    f"{kernel.op} (kernel {kernel.name}) is not compiled for cuda targets yet: its loop runs in the "
                    f"entry function, which GPU code does not have (MLC_CUDA_EMULATE=1 runs it on the CPU); compile "
                    f"this model for a cpu target")
            frames[kernel.name] = []
            for attr, graph in kernel.bodies():
                body = Compiled(graph, self.target, self.pm.for_body(f"{kernel.name}.{attr}"), db=db)
                self.pm.timings += body.pm.timings
                for f in body.funcs:   # unique among the program's kernels
                    f.name = f"{kernel.name}_{f.name}"
                base = len(self.lowered.param_data)
                self.lowered.params += body.lowered.params
                self.lowered.param_data += body.lowered.param_data
                self.funcs.extend(body.funcs)
                self.tuned += body.tuned
                self.bodies.append(body)
                frames[kernel.name].append(Frame(f"{kernel.name}_{attr}", body.plan.calls, len(graph.inputs),
                                                 len(body.lowered.outputs), base, body.plan.workspace_bytes))
        return frames

    def _schedule(self, kernel, db):
        """The kernel's best schedule in the tuning database, else the rules' default."""
        if kernel.kind == "collective":
            return collective_func(kernel)
        if db is not None:
            # emulated GPU records (mlc tune under MLC_CUDA_EMULATE=1) only for an emulated compile
            trace = best_schedule(db, kernel, self.target, emulated=self.target.kind == "cuda" and emulating())
            if trace is not None:
                try:
                    func = schedule_kernel(kernel, self.target, trace)
                    self.tuned += 1
                    self.tuned_names.add(kernel.name)
                    return func
                except ScheduleError as e:
                    warnings.warn(f"tuning record for kernel {kernel.name} does not apply ({e}); "
                                  "using the default schedule", stacklevel=2)
        return schedule_kernel(kernel, self.target)

    def stats(self) -> dict:
        """Counts and sizes for reports: ops in, kernels out, memory planned."""
        ops_in = sum(1 for n in self.source.nodes if n.op != "constant")
        outputs = {id(v) for v in self.graph.outputs}
        intermediates = sum(o.type.nbytes for n in self.graph.nodes if n.op != "constant"
                            for o in n.outputs if id(o) not in outputs)
        return {"opt_level": self.pm.opt_level, "ops": ops_in,
                "nodes_after_passes": sum(1 for n in self.graph.nodes if n.op != "constant"),
                "kernels": len(self.funcs), "workspace_bytes": self.plan.workspace_bytes,
                "intermediate_bytes": intermediates, "materialized_bytes": self.plan.naive_bytes,
                "in_place": self.plan.in_place, "views": self.plan.views, "tuned_kernels": self.tuned,
                "param_bytes": sum(p.nbytes for p in self.lowered.param_data)}

    @property
    def program(self) -> codegen.Program:
        """What code generation compiles: the scheduled functions and the plan's calls."""
        funcs, calls = list(self.funcs), self.plan.calls
        if self.emulated:   # the same calls, each running its function's emulation
            emulated = {id(f): emulate_gpu(f) for f in funcs}
            funcs = [emulated[id(f)] for f in funcs]
            calls = _with_funcs(calls, emulated)
        return codegen.Program(self.graph.name, funcs, calls, self.parallel, self.bounds_check,
                               self.plan.workspace_bytes, self.profile)

    @functools.cached_property
    def llvm_module(self) -> str:
        return codegen.source(self.program, self.code_target)

    @functools.cached_property
    def gpu_module(self):
        """A cuda target's code for a GPU runtime: the PTX of every GPU function's kernels and
        the launches that run the plan (``codegen.nvptx.GpuModule``), also when the functions
        are emulated here."""
        if self.target.kind != "cuda":
            raise ValueError(f"IR level 'ptx' is for cuda targets; {self.target.name} is a {self.target.kind} "
                             "target (its assembly is level 'asm')")
        from .codegen.nvptx import build_gpu
        control = next((c for c in self.plan.calls if isinstance(c, ControlCall)), None)
        if control is not None:
            raise NotImplementedError(
                f"{control.op} (kernel {control.name}) has no GPU code yet: its loop runs in the entry function, "
                f"which GPU code does not have (MLC_CUDA_EMULATE=1 runs it on the CPU); compile this model for a "
                f"cpu target")
        program = codegen.Program(self.graph.name, list(self.funcs), self.plan.calls, False, self.bounds_check,
                                  self.plan.workspace_bytes)
        return build_gpu(program, self.target)

    @property
    def ptx(self) -> str:
        return self.gpu_module.ptx

    def cache_key(self, profile: bool = False) -> str:
        return cache.key_of(__version__, cache.source_hash(), llvmlite.__version__, self.code_target.key,
                            self.target.key, str(self.parallel),
                            f"bounds_check={self.bounds_check}", str(self.fused), "\n\n".join(map(str, self.funcs)),
                            str(self.plan), f"profile={profile}")

    def object_code(self, profile: bool | None = None) -> bytes:
        """The object code, one relocatable object; ``profile``: of the profiling build or not
        (default: the build this compilation was made for). For this machine each distinct
        kernel is compiled apart, on several processes, and cached on disk by itself
        (``codegen.build_split``); for another target, or without ``ld``, the whole program
        is one LLVM module, cached whole."""
        profile = self.profile if profile is None else profile
        program = self.program if profile == self.profile else dataclasses.replace(self.program, profile=profile)
        obj = codegen.build_split(program, self.code_target)   # each kernel cached by itself, compiled in parallel
        if obj is not None:
            return obj
        key = self.cache_key(profile)
        obj = cache.load(key)
        if obj is None:
            source = self.llvm_module if profile == self.profile else \
                codegen.source(dataclasses.replace(self.program, profile=profile), self.code_target)
            with codegen.LOCK:
                obj = codegen.backend(self.code_target).compile(source, self.code_target)
            cache.store(key, obj)
        return obj

    def profiling_code(self):
        """This compilation's profiling build (every kernel call timed, per thread), loaded."""
        return codegen.load(self.object_code(profile=True), self.code_target)

    def generate(self, gpu: bool = False):
        """Code generation as a stage of the pipeline: timed, shown under -v (mlc compile
        -v), its LLVM dumped under --dump-ir. The object code, or with ``gpu`` the GPU
        module (PTX and its launches)."""
        pm = self.pm
        if pm.progress:
            print(f"mlc: codegen: {'PTX' if gpu else 'LLVM'}, {len(self.funcs)} kernels ...", file=sys.stderr,
                  flush=True)
        out = pm.timed("codegen", None, (lambda: self.gpu_module) if gpu else self.object_code)
        _stage_done(pm, "codegen")
        if pm.dump_dir is not None:
            pm.record("codegen", "llvm", self.llvm_module)
        return out

    def kernel_calls(self) -> list[KernelInfo]:
        """What the profiler reports of each call of the entry, in order: the kernel, the
        graph ops fused into it, its schedule's origin and its cost (ir.cost)."""
        groups = dict(zip(self.fused.kernel_names(), self.fused.groups))
        kernels = {c.kernel.name: c.kernel for c in self.lowered.calls}
        out = []
        for call in self.plan.calls:
            if isinstance(call, ControlCall):   # timed as one call: its bodies' kernels, every step
                out.append(KernelInfo(call.name, [call.op], "default", 0,
                                      sum(t.nbytes for t in call.in_types + call.out_types)))
                continue
            name = call.func.name
            k = kernels.get(name)
            if isinstance(k, Kernel):
                cost = kernel_cost(k)
            else:   # a collective, or a copy the plan added: it moves its buffers
                cost = Cost(0, sum(b.type.nbytes for b in call.func.inputs + call.func.outputs))
            ops = [n.op for n in groups.get(name, [])] or [name.rsplit("_", 1)[0]]
            out.append(KernelInfo(name, ops, "tuned" if name in self.tuned_names else "default", cost.flops,
                                  cost.bytes))
        return out

    def export(self, path, **options):
        """Write this compilation as a model library (``codegen.export.export_library``)."""
        from .codegen.export import export_library
        return export_library(self, path, **options)

    def ceilings(self) -> tuple[float, float]:
        return machine_ceilings(self.target)

    def text(self, level: str) -> str:
        if level == "graph":
            return str(self.graph)
        if level == "fused":
            return str(self.fused)
        if level == "tensor":
            return str(self.lowered)
        if level == "loop":
            return str(self.funcs)
        if level == "llvm":
            return self.llvm_module
        if level in ("llvm-opt", "asm"):
            with codegen.LOCK:
                return codegen.backend(self.code_target).text(self.llvm_module, self.code_target, level)
        if level == "ptx":
            return self.ptx
        if level in IR_LEVELS:
            return IR_LEVELS[level](self)
        raise ValueError(f"unknown IR level {level!r}: use graph, fused, tensor, loop, llvm, llvm-opt, asm, ptx"
                         + "".join(f", {k}" for k in IR_LEVELS))


# IR levels that packages above the driver print (``register_ir_level``): ``mlir`` and
# ``mlir-loop`` from ``interop``, which the driver may not import
IR_LEVELS: dict[str, Callable] = {}


def register_ir_level(name: str, text: Callable) -> None:
    """``exe.ir(name)`` gives ``text(compiled)``, ``compiled`` the compilation's ``Compiled``."""
    IR_LEVELS[name] = text


def _with_funcs(calls: list, funcs: dict) -> list:
    """The plan's calls with each function replaced by ``funcs[id(function)]`` where given,
    control-flow bodies' calls included."""
    out = []
    for c in calls:
        if isinstance(c, ControlCall):
            frames = [dataclasses.replace(f, calls=_with_funcs(f.calls, funcs)) for f in c.frames]
            out.append(dataclasses.replace(c, frames=frames))
        else:
            out.append(dataclasses.replace(c, func=funcs.get(id(c.func), c.func)))
    return out


def _stage_done(pm: PassManager, what: str) -> None:
    """After a stage: a line under -v (mlc compile -v), a debug record always."""
    elapsed = sum(t for _, t in pm.timings)
    log.debug("%s (%.2f s so far)", what, elapsed)
    if pm.progress:
        print(f"mlc: {what} done, {elapsed:.2f} s so far", file=sys.stderr, flush=True)


_CEILINGS: dict[str, tuple[float, float]] = {}


def machine_ceilings(target: Target) -> tuple[float, float]:
    """(peak GFLOP/s, memory GB/s) of ``target``: as the target gives them (a target file's
    ``peak_gflops``, ``bandwidth_gbs``), else measured on this machine once (cached on disk
    by target key) when the target is the host, else 0: unknown."""
    if target.peak_gflops and target.bandwidth_gbs:
        return target.peak_gflops, target.bandwidth_gbs
    if not target.is_host:
        return target.peak_gflops, target.bandwidth_gbs
    found = _CEILINGS.get(target.key)
    if found is None:
        key = cache.key_of("ceilings", __version__, target.key)
        data = cache.load(key)
        try:
            found = tuple(json.loads(data)) if data else None
        except ValueError:
            found = None
        if found is None:
            found = (_measure_peak(target), _measure_bandwidth(target))
            cache.store(key, json.dumps(found).encode())
        _CEILINGS[target.key] = found
    return target.peak_gflops or found[0], target.bandwidth_gbs or found[1]


def _fma_func(target: Target, iterations: int) -> Func:
    """Independent FMA chains on one thread, enough to cover the FMA units' latency:
    ``acc = acc * x + y`` on registers, one row of lanes per chain."""
    from .ir.expr import Const, Load, Var
    from .ir.loop import Alloc, For, Seq, Store
    from .ir.types import float32
    lanes, chains = target.lanes(4), 24 if target.vector_bytes >= 64 else 12
    out = Buffer("out", (chains, lanes), float32)
    acc = Buffer("acc", (chains, lanes), float32, "local")
    i, a, v = Var("i"), Var("a"), Var("v")

    def each(store):
        return For(a, chains, For(v, lanes, store, "vector"), "unroll")
    step = each(Store(acc, [a, v], Load(acc, [a, v]) * Const(0.999, float32) + Const(1e-3, float32)))
    # starting from memory the compiler cannot see, so it cannot fold the chains away
    body = Seq([each(Store(acc, [a, v], Load(out, [a, v]))), For(i, iterations, step),
                each(Store(out, [a, v], Load(acc, [a, v])))])
    return Func("fma_peak", [], [out], Alloc(acc, body))


def _best_time(fn, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _measure_peak(target: Target) -> float:
    """One core's FMA throughput times the cores: short single-thread runs, the best of
    many, so that a machine shared with other work still shows what a core can do."""
    import ctypes
    iterations = 1 << 15
    func = _fma_func(target, iterations)
    code = codegen.load(codegen.build(codegen.Program.of_func(func), target), target)
    out = np.zeros(func.outputs[0].shape, np.float32)
    ptr = lambda xs: (ctypes.c_void_p * max(1, len(xs)))(*[x.ctypes.data for x in xs])
    args = (ptr([]), ptr([out]), ptr([]), None)
    seconds = _best_time(lambda: code.entry(*args), 50)
    return 2 * iterations * out.size / seconds / 1e9 * max(1, target.cores)


def _measure_bandwidth(target: Target) -> float:
    """Read plus write bytes per second of mlc's own streaming kernel (x * 1.5 on 64 MiB in
    and out), on all cores and on one (the better of the two: a parallel loop on a busy
    machine waits for its slowest thread)."""
    x = np.ones(16 << 20, np.float32)
    best = float("inf")
    for t in (target, dataclasses.replace(target, cores=1)):
        exe = compile(lambda a: a * 1.5, x, target=t)
        best = min(best, _best_time(lambda: exe(x), 10))
    return 2 * x.nbytes / best / 1e9


def compile_graph(graph: Graph, target="host", single_output: bool | None = None, opt_level: int = DEFAULT_OPT_LEVEL,
                  pm: PassManager | None = None, traced: Traced | None = None,
                  aliases: dict[int, int] | None = None, db=None) -> Executable:
    """Compile a graph. ``aliases`` maps output positions to the input positions whose
    buffers they are written into (the Executable updates those arguments in place).
    ``db``: a tuning database (path or ``TuningDB``) whose best schedules are used.

    A graph compiled before (the same text and constants, target, opt level, disabled
    passes, tuning records and mlc sources; by any function, in any process) is loaded
    from the compile cache (``runtime.graph_cache``) without running the pipeline; its
    levels are rebuilt when first printed, profiled or exported."""
    target = Target.get(target)
    if target.kind == "cuda" and not emulating():
        return _compile_for_device(graph, target, single_output, opt_level, pm, traced, aliases, db)
    if not target.is_host and target.kind != "cuda":   # (a cuda target here runs emulated)
        raise ValueError(f"target {target.name} is not this machine ({Target.get('host').triple}): code for it "
                         f"cannot run here; write it to a file with `mlc compile MODEL --target {target.name} -o out.o`")
    pm = pm or PassManager(opt_level)
    t0 = time.perf_counter()
    with codegen.LOCK, _open_db(db) as database:   # LLVM's global context is not safe for concurrent compiles
        key = _graph_key(graph, target, pm, aliases, database)
        entry = graph_cache.load(key) if key is not None else None
        if entry is not None:
            code_target = Target.get("host") if target.kind == "cuda" else target
            code = codegen.load(entry.object_code, code_target)
            pm.timings.append(("graph cache", time.perf_counter() - t0))
            log.info("compiled @%s for %s: loaded from the compile cache in %.3f s", graph.name, target.name,
                     time.perf_counter() - t0)
            if pm.progress:
                print(f"mlc: @{graph.name} loaded from the compile cache", file=sys.stderr, flush=True)
            lazy = _Restored(graph, target, pm.opt_level, pm.disabled, aliases, db, entry.loop_digest)
            return _make_executable(Executable, graph, aliases, entry.output_types, entry.params,
                                    entry.workspace_bytes, code, single_output, traced, lazy.text, entry.stats, lazy)
        c = Compiled(graph, target, pm, aliases, database)
        obj = c.generate()
        code = codegen.load(obj, c.code_target)
        if key is not None:
            graph_cache.store(key, graph_cache.Entry(obj, list(c.lowered.param_data),
                                                     [v.type for v in c.lowered.outputs], c.plan.workspace_bytes,
                                                     c.stats(), _loop_digest(c)), background=True)
    log.info("compiled @%s for %s: %d kernels in %.2f s (%s)", graph.name, target.name, len(c.funcs),
             sum(t for _, t in pm.timings), ", ".join(f"{n} {t * 1e3:.0f} ms" for n, t in pm.timings))
    return _executable(Executable, c, code, single_output, traced)


def _graph_key(graph: Graph, target: Target, pm: PassManager, aliases, database) -> str | None:
    """The compile cache's key of this graph's compilation (``runtime.graph_cache``): None
    when the cache is off (MLC_CACHE_DIR=off; MLC_GRAPH_CACHE=off keeps only the kernels')
    or the passes must run (IR dumps asked for)."""
    if (cache.cache_dir() is None or pm.dump_dir is not None
            or os.environ.get("MLC_GRAPH_CACHE", "").strip().lower() in ("0", "false", "no", "off")):
        return None
    emulated = target.kind == "cuda"   # (here only when emulated)
    code_target = Target.get("host") if emulated else target
    return cache.key_of("compiled-graph", __version__, graph_cache.source_hash(), llvmlite.__version__,
                        graph_cache.graph_text(graph), graph_cache.constants_digest(graph), target.key,
                        repr(target), code_target.key, f"emulated={emulated}", f"O{pm.opt_level}",
                        f"disabled={sorted(pm.disabled)}", f"aliases={sorted((aliases or {}).items())}",
                        f"bounds_check={env_flag('MLC_BOUNDS_CHECK')}",
                        f"parallel={codegen.runs_parallel(code_target)}", _db_state(database))


def _db_state(database) -> str:
    """What of a tuning database decides the schedules: every measured record's kernel,
    target, schedule and median (a record added, or a file swapped, changes it)."""
    if database is None:
        return "db=none"
    h = hashlib.blake2b(digest_size=32)
    for row in database._run("SELECT workload_key, target_key, schedule_hash, median FROM records "
                             "WHERE median IS NOT NULL ORDER BY id"):
        h.update(repr(row).encode())
    return "db=" + h.hexdigest()


def _loop_digest(c: Compiled) -> str:
    return cache.key_of(str(c.funcs), str(c.plan))


class _Restored:
    """The compilation behind an Executable loaded from the compile cache: rebuilt (the
    pipeline run once more, the object code not) the first time a level is printed, the
    model profiled or exported; a rebuild that differs from what the cached code was
    made of (the tuning database changed meanwhile) is an error, never a mismatched report."""

    def __init__(self, graph, target, opt_level, disabled, aliases, db, loop_digest):
        self._args = (graph, target, opt_level, disabled, aliases, db)
        self._digest = loop_digest
        self._compiled: Compiled | None = None
        self._lock = threading.Lock()

    def compiled(self) -> Compiled:
        with self._lock:
            if self._compiled is None:
                graph, target, opt_level, disabled, aliases, db = self._args
                with codegen.LOCK, _open_db(db) as database:
                    c = Compiled(graph, target, PassManager(opt_level, disabled=disabled), aliases, database)
                if _loop_digest(c) != self._digest:
                    raise RuntimeError(f"@{graph.name} was loaded from the compile cache, and compiling it again now "
                                       "gives other loops (its tuning database changed?): compile it again for its "
                                       "levels and profile")
                self._compiled = c
            return self._compiled

    def text(self, level: str) -> str:
        return self.compiled().text(level)

    def __getattr__(self, name):   # export, kernel_calls, profiling_code, target, ... of the rebuilt compilation
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.compiled(), name)


def _executable(cls, c: Compiled, code, single_output: bool | None, traced: Traced | None) -> Executable:
    """The Executable (``cls``) of a compilation over its loaded ``code``."""
    return _make_executable(cls, c.source, c.aliases or None, [v.type for v in c.lowered.outputs],
                            c.lowered.param_data, c.plan.workspace_bytes, code, single_output, traced, c.text,
                            c.stats(), c)


def _make_executable(cls, graph: Graph, aliases, output_types, params, workspace_bytes: int, code,
                     single_output: bool | None, traced: Traced | None, ir_text, stats: dict, compiled):
    returned = len(graph.outputs) - len(aliases or {})   # outputs written in place are not returned
    single = returned == 1 if single_output is None else single_output
    return cls(graph.name, [v.name for v in graph.inputs], [v.type for v in graph.inputs], output_types, params,
               workspace_bytes, code, single, ir_text, stats, signature=_signature(traced, aliases),
               aliases=aliases or None, compiled=compiled)


def _compile_for_device(graph: Graph, target: Target, single_output, opt_level, pm, traced, aliases, db):
    """A cuda target with a device: PTX and its launch table, run through CuPy
    (``runtime.cuda``); CudaUnavailable says what is missing."""
    from .runtime.cuda import CudaCode, CudaExecutable, CudaUnavailable, cupy_module
    try:
        cupy_module()
    except CudaUnavailable as e:
        raise CudaUnavailable(f"{e}; or write the code to a file: `mlc compile MODEL --target {target.name} -o "
                              "model.ptx`") from None
    pm = pm or PassManager(opt_level)
    with codegen.LOCK, _open_db(db) as database:
        c = Compiled(graph, target, pm, aliases, database)
        gpu = c.generate(gpu=True)
    return _executable(CudaExecutable, c, CudaCode(gpu, c.lowered.param_data), single_output, traced)


def emulating() -> bool:
    """``MLC_CUDA_EMULATE=1``: compiling for a cuda target runs its GPU schedules on this
    CPU (block and thread loops serial, each phase between barriers for every thread),
    numpy arrays in and out; the target name ``cuda`` then means ``cuda-sm90`` when no
    device is present (``Target.get``)."""
    return env_flag("MLC_CUDA_EMULATE")


def _signature(traced: Traced | None, aliases) -> Signature | None:
    """How the Executable maps pytree arguments and results onto its flat arrays; None
    when arguments are plain arrays and the result an array or a tuple of arrays."""
    if traced is None:
        return None
    if aliases:   # the function returned (result, *updated arguments): only result is returned
        return Signature(traced.in_tree, traced.static, traced.out_tree.children[0])
    t = traced.in_tree
    flat_args = all(c.kind == "leaf" for c in t.children) and not any(s is not None for s in traced.static)
    o = traced.out_tree
    flat_out = o.kind == "leaf" or (o.kind == "tuple" and all(c.kind == "leaf" for c in o.children))
    if flat_args and flat_out:
        return None
    return Signature(t, traced.static, o)


def compile(fn: Callable | Graph, *example_args, target="host", opt_level: int = DEFAULT_OPT_LEVEL,
            pm: PassManager | None = None, in_place: tuple[int, ...] = (), db=None) -> Executable:
    """Compile a Graph, or trace ``fn`` on example arguments and compile that.

    The Executable takes the array arguments (Python scalars among the example
    arguments are baked in as constants; any argument may be a pytree of arrays) and
    returns numpy arrays. ``opt_level`` 0-3 picks the pass pipeline
    (``passes.manager``); ``pm`` a configured manager.

    ``in_place=(i, ...)``: fn returns ``(result, new_arg_i, ...)``, each new value with
    the structure and types of argument i; the Executable writes them into argument
    i's arrays (which must be writeable, C-contiguous and of the exact dtype) and
    returns only ``result``. This is how a training step updates parameters and
    optimizer state without copies.

    ``db``: a tuning database (``mlc tune``); kernels with a record there use the
    fastest schedule measured, the others the default rules."""
    if isinstance(fn, Graph):
        if example_args:
            raise TypeError("compile(graph) takes no example arguments")
        return compile_graph(fn, target, opt_level=opt_level, pm=pm, db=db)
    traced = trace_info(fn, example_args)
    if traced.captured:
        raise TraceError("compile: the function uses tensors of an enclosing trace; pass them as arguments")
    aliases = _in_place_aliases(traced, in_place) if in_place else None
    return compile_graph(traced.graph, target, single_output=traced.single_output, opt_level=opt_level, pm=pm,
                         traced=traced, aliases=aliases, db=db)


@contextlib.contextmanager
def _open_db(db):
    """A TuningDB for a path (closed afterwards), the given TuningDB, or None."""
    if db is None or not isinstance(db, (str, os.PathLike)):
        yield db
        return
    if not os.path.exists(db):
        raise FileNotFoundError(f"tuning database {os.fspath(db)!r} does not exist (create it with `mlc tune`)")
    with TuningDB(db) as d:
        yield d


def _in_place_aliases(traced: Traced, in_place) -> dict[int, int]:
    """Output leaf position -> graph input position for ``compile(..., in_place=...)``."""
    out = traced.out_tree
    if out.kind != "tuple" or len(out.children) != len(in_place) + 1:
        raise TypeError(f"compile(in_place={tuple(in_place)}): the function must return a tuple (result, "
                        f"{', '.join(f'new_arg{i}' for i in in_place)})")
    graph = traced.graph
    arg_inputs = traced.arg_inputs()
    aliases, o = {}, out.children[0].num_leaves
    for i, sub in zip(in_place, out.children[1:]):
        tree = traced.in_tree.children[i]
        if tree != sub:
            raise TypeError(f"compile(in_place): the new value of argument {i} has structure {sub!r}, the argument "
                            f"{tree!r}")
        for m, j in enumerate(arg_inputs[i]):
            if j is None:
                raise TypeError(f"compile(in_place): argument {i} holds a Python scalar (leaf {m}); an argument "
                                f"updated in place must hold arrays only")
            if graph.outputs[o].type != graph.inputs[j].type:
                raise TypeError(f"compile(in_place): the new value of argument {i} (leaf {m}) has type "
                                f"{graph.outputs[o].type}, the argument {graph.inputs[j].type}")
            aliases[o] = j
            o += 1
    return aliases


def _is_static(a) -> bool:
    return isinstance(a, (bool, int, float)) and not isinstance(a, np.generic)


class JitFunction:
    """``@mlc.jit``: traces and compiles on the first call for each (shapes, dtypes,
    static scalars, target), then calls the cached Executable. MLC_DUMP_IR=DIR
    dumps every stage of each compile into DIR."""

    def __init__(self, fn: Callable, target="host", opt_level: int = DEFAULT_OPT_LEVEL, in_place: tuple = ()):
        self.fn = fn
        self.in_place = tuple(in_place)
        self.target = target
        self.opt_level = check_opt_level(opt_level)
        self._cache: dict = {}
        self._fast: dict = {}   # (shape, dtype) per argument -> Executable, for calls of plain arrays
        self._hot = None   # the fast call (Executable.fast_call) of the last plain call's Executable
        self._last_tree = None   # (structure, (shape, dtype) per leaf, Executable) of the last pytree call
        resolved = Target.get(target)
        self._target_key = resolved.key
        self._on_device = resolved.kind == "cuda" and not emulating()
        functools.update_wrapper(self, fn)

    def lower(self, *args) -> Executable:
        """The Executable for these arguments, compiling it on first use."""
        return self._executable(*flatten(tuple(args)))[0]

    def _executable(self, leaves, tree) -> tuple[Executable, list]:
        """(Executable, argument leaves as arrays): zero-copy for __dlpack__ objects;
        Python scalars stay static (baked into the compiled code, part of the cache key)."""
        if self._on_device:   # device arrays stay where they are (CuPy views of torch tensors, ...)
            from .runtime.cuda import cupy_module
            cp = cupy_module()
            leaves = [a if _is_static(a) or isinstance(a, (np.ndarray, cp.ndarray)) else
                      cp.asarray(a) if hasattr(a, "__cuda_array_interface__") or hasattr(a, "__dlpack__") else
                      np.asarray(a) for a in leaves]
        else:
            leaves = [a if _is_static(a) or isinstance(a, np.ndarray) else
                      np.from_dlpack(a) if hasattr(a, "__dlpack__") else np.asarray(a) for a in leaves]
        key = (tree, tuple(("static", type(a).__name__, a) if _is_static(a) else (a.shape, a.dtype.str)
                           for a in leaves), self._target_key)
        exe = self._cache.get(key)
        if exe is None:
            exe = compile(self.fn, *unflatten(tree, leaves), target=self.target, opt_level=self.opt_level,
                          in_place=self.in_place)
            self._cache[key] = exe
        return exe, leaves

    def __call__(self, *args):
        # the hottest call: the arrays the last plain call compiled for; the Executable's
        # fast call checks every argument itself (MISS when one differs in any way)
        hot = self._hot
        if hot is not None:
            out = hot(args)
            if out is not MISS:
                return out
        # the common call, plain numpy arrays seen before, skips the pytree walk: keyed by
        # (shape, dtype) per argument, it finds the Executable the full path chose for them
        key = tuple([(a.shape, a.dtype) for a in args if type(a) is np.ndarray])
        plain = len(key) == len(args)
        if plain:
            exe = self._fast.get(key)
            if exe is not None:
                self._hot = exe.fast_call()
                return exe.call_flat(args)
        # a pytree call (parameters in dicts and lists) of the structure, shapes and dtypes of
        # the last one: its leaves collected by the structure's generated extractor
        last = self._last_tree
        if last is not None:
            leaves = last[0].leaves_of(args)
            if leaves is not None and all(type(a) is np.ndarray and a.shape == shape and a.dtype == dt
                                          for a, (shape, dt) in zip(leaves, last[1])):
                return last[2].call_flat(leaves)
        leaves, tree = flatten(args)
        if any(isinstance(a, Tracer) for a in leaves):   # called inside another trace: inline it
            return self.fn(*args)
        exe, leaves = self._executable(leaves, tree)
        if plain and len(leaves) == len(args):
            self._fast[key] = exe
            self._hot = exe.fast_call()
        elif not any(_is_static(a) for a in leaves):
            self._last_tree = (tree, tuple((a.shape, a.dtype) for a in leaves), exe)
        return exe.call_flat([a for a in leaves if not _is_static(a)])


def jit(fn: Callable | None = None, *, target="host", opt_level: int = DEFAULT_OPT_LEVEL, in_place: tuple = ()):
    """Decorator: ``@mlc.jit`` or ``@mlc.jit(target="host", opt_level=3)``.
    ``in_place=(i, ...)``: see ``mlc.compile``."""
    if fn is None:
        return lambda f: JitFunction(f, target, opt_level, in_place)
    return JitFunction(fn, target, opt_level, in_place)
