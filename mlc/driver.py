"""The compile pipeline, one stage after another:

    trace -> Graph -> verify -> lower (tensor) -> schedule (loop) -> memory plan
          -> LLVM module -> object code (cached on disk) -> Executable
"""
from __future__ import annotations

import functools
import threading
from typing import Callable

import llvmlite
import numpy as np

from . import __version__, ops
from .codegen import llvm as cg
from .frontend.trace import Tracer, trace_info
from .ir.graph import Graph, print_graph
from .passes.lower import lower_graph
from .passes.plan import plan_memory
from .runtime import cache
from .runtime.executable import Executable, LoadedCode
from .schedule.default import schedule_kernel
from .target import Target


_LLVM_LOCK = threading.RLock()


class Compiled:
    """Every level of one compilation, kept for printing."""

    def __init__(self, graph: Graph, target: Target):
        ops.verify(graph)
        self.graph = graph
        self.target = target
        self.lowered = lower_graph(graph)
        self.funcs = [schedule_kernel(c.kernel, target) for c in self.lowered.calls]
        self.plan = plan_memory(self.lowered, self.funcs)
        self.parallel = cg.gomp_available()

    @functools.cached_property
    def llvm_module(self) -> str:
        mb = cg.ModuleBuilder(self.graph.name, self.target.triple, self.parallel)
        for f in self.funcs:
            mb.add_func(f)
        mb.add_entry(self.plan.calls)
        return str(mb.module)

    @functools.cached_property
    def tm(self):
        return cg.target_machine(self.target.triple, self.target.cpu, self.target.features)

    def cache_key(self) -> str:
        return cache.key_of(__version__, cache.source_hash(), llvmlite.__version__, self.target.key, str(self.parallel),
                            print_graph(self.graph, elide_constants=True))

    def object_code(self) -> bytes:
        key = self.cache_key()
        obj = cache.load(key)
        if obj is None:
            obj = self.tm.emit_object(cg.optimize(self.llvm_module, self.tm))
            cache.store(key, obj)
        return obj

    def text(self, level: str) -> str:
        if level == "graph":
            return str(self.graph)
        if level == "tensor":
            return str(self.lowered)
        if level == "loop":
            return "\n\n".join(str(f) for f in self.funcs)
        if level == "llvm":
            return self.llvm_module
        if level in ("llvm-opt", "asm"):
            with _LLVM_LOCK:
                mod = cg.optimize(self.llvm_module, self.tm)
                return str(mod) if level == "llvm-opt" else self.tm.emit_assembly(mod)
        raise ValueError(f"unknown IR level {level!r}: use graph, tensor, loop, llvm, llvm-opt or asm")


def compile_graph(graph: Graph, target="host", single_output: bool | None = None) -> Executable:
    target = Target.get(target)
    with _LLVM_LOCK:   # LLVM's global context is not safe for concurrent compiles
        c = Compiled(graph, target)
        code = LoadedCode(c.object_code(), c.tm)
    single = len(graph.outputs) == 1 if single_output is None else single_output
    return Executable(graph.name, [v.name for v in graph.inputs], [v.type for v in graph.inputs],
                      [v.type for v in c.lowered.outputs], c.lowered.param_data, c.plan.workspace_bytes, code,
                      single, c.text, c.plan.naive_bytes, len(c.funcs))


def compile(fn: Callable | Graph, *example_args, target="host") -> Executable:
    """Compile a Graph, or trace ``fn`` on example arguments and compile that.

    The Executable takes the array arguments (Python scalars among the example
    arguments are baked in as constants) and returns numpy arrays."""
    if isinstance(fn, Graph):
        if example_args:
            raise TypeError("compile(graph) takes no example arguments")
        return compile_graph(fn, target)
    graph, is_tuple = trace_info(fn, example_args)
    return compile_graph(graph, target, single_output=not is_tuple)


def _is_static(a) -> bool:
    return isinstance(a, (bool, int, float)) and not isinstance(a, np.generic)


class JitFunction:
    """``@mlc.jit``: traces and compiles on the first call for each (shapes, dtypes,
    static scalars, target), then calls the cached Executable."""

    def __init__(self, fn: Callable, target="host"):
        self.fn = fn
        self.target = target
        self._cache: dict = {}
        self._target_key = Target.get(target).key
        functools.update_wrapper(self, fn)

    def _arrays(self, args) -> list:
        """Arguments as numpy arrays (zero-copy for __dlpack__ objects); scalars stay static."""
        return [a if _is_static(a) or isinstance(a, np.ndarray) else
                np.from_dlpack(a) if hasattr(a, "__dlpack__") else np.asarray(a) for a in args]

    def lower(self, *args) -> Executable:
        """The Executable for these arguments, compiling it on first use."""
        return self._executable(self._arrays(args))

    def _executable(self, args) -> Executable:
        key = (tuple(("static", type(a).__name__, a) if _is_static(a) else (a.shape, a.dtype.str) for a in args),
               self._target_key)
        exe = self._cache.get(key)
        if exe is None:
            exe = compile(self.fn, *args, target=self.target)
            self._cache[key] = exe
        return exe

    def __call__(self, *args):
        if any(isinstance(a, Tracer) for a in args):   # called inside another trace: inline it
            return self.fn(*args)
        args = self._arrays(args)
        return self._executable(args)(*[a for a in args if not _is_static(a)])


def jit(fn: Callable | None = None, *, target="host"):
    """Decorator: ``@mlc.jit`` or ``@mlc.jit(target="host")``."""
    if fn is None:
        return lambda f: JitFunction(f, target)
    return JitFunction(fn, target)
