"""Code generation: a program's loop level and memory plan in, object code out.

    program = Program(name, funcs, calls, parallel)   # the schedule's functions, the plan's calls
    obj = codegen.build(program, target)                # a relocatable object for the target
    obj = codegen.build_split(program, target)          # the same, kernels compiled apart and cached
    code = codegen.load(obj, target)                    # linked into this process (host targets)

``backend(target)`` picks the generator for the target's kind. A backend turns a
Program into its source text (LLVM IR for ``codegen.llvm``, the CPU backend),
compiles that text to object code, and prints the later levels (``llvm-opt``,
``asm``). ``codegen.nvptx`` is the backend for ``cuda`` targets: its "object code"
is PTX text, and ``nvptx.build_gpu`` adds the launch table a GPU runtime replays
(it has no entry function and loads nothing into this process). Every entry here
takes ``LOCK``: LLVM's global context is not safe for concurrent compiles.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from ..ir.loop import Func
from ..ir.plan import ALIGN, EntryCall, Slot
from ..target import Target

LOCK = threading.RLock()


@dataclass
class Program:
    """What a backend compiles: kernel functions and the entry that calls them in order,
    each argument placed by the memory plan. ``parallel``: run ``parallel`` loops on
    threads (else serially). ``bounds_check``: check every load and store. ``profile``:
    record when each kernel call starts and ends, per thread."""
    name: str
    funcs: list[Func]
    calls: list[EntryCall]
    parallel: bool = False
    bounds_check: bool = False
    workspace_bytes: int = 0
    profile: bool = False   # time every kernel call (ModuleBuilder's profiling build)

    @classmethod
    def of_func(cls, func: Func, parallel: bool = False, bounds_check: bool = False,
                scratch: str = "workspace") -> "Program":
        """One function as a whole program: the entry passes the caller's inputs and
        outputs, and the scratch buffers in the workspace (``scratch="param"``: taken from
        the params array instead, so a caller can fill and inspect them)."""
        if scratch not in ("workspace", "param"):
            raise ValueError(f"scratch must be 'workspace' or 'param', got {scratch!r}")
        slots = [Slot("input", n) for n in range(len(func.inputs))]
        slots += [Slot("output", n) for n in range(len(func.outputs))]
        total = 0
        for n, b in enumerate(func.scratch):
            if scratch == "param":
                slots.append(Slot("param", n))
            else:
                slots.append(Slot("workspace", total))
                total += -(-b.type.nbytes // ALIGN) * ALIGN
        return cls(func.name, [func], [EntryCall(func, slots)], parallel, bounds_check, total)


class Backend:
    """The interface a code generator implements for one kind of target."""
    kind = ""

    def source(self, program: Program, target: Target) -> str:
        """The program as the backend's source text (before optimization)."""
        raise NotImplementedError

    def compile(self, source: str, target: Target) -> bytes:
        """Object code for ``source``."""
        raise NotImplementedError

    def build_split(self, program: Program, target: Target) -> bytes | None:
        """Object code for ``program`` with each kernel compiled apart and cached on disk by
        itself; None where the backend cannot (the caller compiles the whole program)."""
        return None

    def prepare(self, target: Target, kernels: int) -> None:
        """Start ahead what compiling about ``kernels`` kernels will need (worker processes)."""

    def text(self, source: str, target: Target, level: str) -> str:
        """A later level of ``source`` as text: ``llvm-opt`` or ``asm``."""
        raise NotImplementedError

    def load(self, obj: bytes, target: Target):
        """Link object code into this process: a ``runtime.executable.LoadedCode``."""
        raise NotImplementedError

    def runs_parallel(self, target: Target) -> bool:
        """Whether ``parallel`` loops get threads in code for ``target``."""
        raise NotImplementedError


def backend(target: Target) -> Backend:
    """The code generator for the target's kind; ValueError for a kind mlc cannot generate."""
    if target.kind == "cpu":
        from . import llvm
        return llvm.BACKEND
    if target.kind == "cuda":
        from . import nvptx
        return nvptx.BACKEND
    raise ValueError(f"target {target.name} is a {target.kind} target: mlc generates code for cpu and cuda "
                     "targets")


def source(program: Program, target) -> str:
    target = Target.get(target)
    with LOCK:
        return backend(target).source(program, target)


def build(program: Program, target) -> bytes:
    """Object code for ``program`` on ``target`` (any target the backend knows, not only this machine)."""
    target = Target.get(target)
    with LOCK:
        b = backend(target)
        return b.compile(b.source(program, target), target)


def build_split(program: Program, target) -> bytes | None:
    """Object code for ``program``, each distinct kernel compiled apart (in worker
    processes) and cached on disk by itself, so graphs sharing kernels compile them once;
    None where the backend cannot split (see ``Backend.build_split``)."""
    target = Target.get(target)
    with LOCK:
        return backend(target).build_split(program, target)


def prepare(target, kernels: int) -> None:
    """Called as soon as a compile knows it will generate about ``kernels`` kernels for
    ``target``: the backend starts what it will need (the CPU backend's compile workers), so
    that this overlaps the stages before code generation."""
    target = Target.get(target)
    if target.kind == "cpu":
        with LOCK:
            backend(target).prepare(target, kernels)


def load(obj: bytes, target="host"):
    """Link object code built for this machine into the process."""
    target = Target.get(target)
    with LOCK:
        return backend(target).load(obj, target)


def runs_parallel(target) -> bool:
    """Whether ``parallel`` loops get threads in code for ``target`` (asked before any code
    is generated, so also of targets no backend generates code for yet)."""
    target = Target.get(target)
    if target.kind != "cpu":
        return target.cores > 1
    return backend(target).runs_parallel(target)
