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


@dataclass
class Frame:
    """A control-flow body as the entry runs it: its own calls, whose ``input`` and
    ``output`` slots are the body's (filled by the ``ControlCall`` at each step),
    ``param`` slots the program's from ``param_base`` on, and ``workspace`` slots offsets
    into ``workspace_bytes`` starting where the ControlCall places its bodies."""
    name: str
    calls: list                 # EntryCall | ControlCall
    num_inputs: int
    num_outputs: int
    param_base: int
    workspace_bytes: int


@dataclass
class ControlCall:
    """A control-flow op of the entry (``ops/control.py``): ``scan`` calls ``frames[0]``
    ``length`` times, ``while_loop`` alternates ``frames[0]`` (the condition, writing a
    bool at ``flag``) and ``frames[1]``, ``cond`` calls one of ``frames[0]``/``frames[1]``.
    Carries live in two workspace buffers each (``carries``: their offsets, the two of
    carry 0 first), the step's results written to the one its inputs are not read from."""
    name: str
    op: str
    attrs: dict                 # num_carry, num_xs, length, reverse: what the loop needs
    args: list[Slot]            # the op's operands
    results: list[Slot]         # its results
    in_types: list              # TensorTypes of args and results: sizes and strides
    out_types: list
    frames: list[Frame]
    carries: list[int]
    flag: int                   # workspace offset of while_loop's condition (a bool)
    frames_workspace: int       # workspace offset where each frame's workspace begins


def entry_calls(calls: list):
    """Every EntryCall among ``calls``, those of control-flow bodies included."""
    for c in calls:
        if isinstance(c, ControlCall):
            for f in c.frames:
                yield from entry_calls(f.calls)
        else:
            yield c
