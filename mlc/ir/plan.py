"""The memory plan's vocabulary, shared by the pass that makes the plan
(``passes.plan``) and the code generators that follow it: where each kernel
argument lives, and the calls of the entry function in order."""
from __future__ import annotations

from dataclasses import dataclass

from .loop import Func

ALIGN = 64   # bytes: every workspace offset, so vector loads of any width are aligned


@dataclass(frozen=True)
class Slot:
    """Where a kernel argument lives: ``input``/``output``/``param`` (index into the
    pointer array) or ``workspace`` (byte offset into the arena)."""
    space: str
    index: int


@dataclass
class EntryCall:
    """One kernel call of the entry function, with where each of its parameters lives."""
    func: Func
    args: list[Slot]
