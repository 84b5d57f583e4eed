"""Default GPU schedules by rule (targets of kind ``cuda``): the tuner's starting point,
each a trace of schedule primitives like the CPU rules' (``default.py``).

Every stage becomes its own launch nest: a ``blockIdx`` loop nest with constant
extents, its ``threadIdx`` loops inside (what the NVPTX code generator takes; a
block's size per axis is its widest thread loop, narrower ones are guarded).

* every stage (the rule that covers all kernels): one thread per output element --
  the output axes fused into one, split by ``THREADS``, the outer part bound to
  ``blockIdx.x`` and the inner to ``threadIdx.x`` (the tail block guarded); a
  reduction's loops run serially in its thread, accumulating in a register.
"""
from __future__ import annotations

from ..ir.tensor import Compute, Kernel
from .primitives import Schedule

THREADS = 256     # threads per block of the one-thread-per-element rule


def _name(s: Schedule, base: str) -> str:
    name, n = base, 1
    while name in s.taken:
        name, n = f"{base}{n}", n + 1
    return name


def gpu_schedule(kernel: Kernel, target, knobs: dict | None = None) -> Schedule:
    """The GPU rules applied to a fresh Schedule; ``.trace`` is the JSON list of calls."""
    k = {"threads": THREADS}
    k.update(knobs or {})
    s = Schedule(kernel, target)
    for c in kernel.stages:
        if s.stages[c.name].status == "root":
            per_element(s, c, k["threads"])
    return s


def per_element(s: Schedule, c: Compute, threads: int = THREADS) -> None:
    """One thread per output element: ``blockIdx.x`` over blocks of ``threads`` output
    elements (row-major), ``threadIdx.x`` over the elements of a block; a reduction
    accumulates serially in the thread's register."""
    st = s.stages[c.name]
    rank = len(c.shape)
    size = 1
    for n in c.shape:
        size *= n
    if size == 0:
        return     # an empty output: nothing to compute, no launch
    if rank == 0:
        thread = s.add_loop(c.name, _name(s, f"{c.name}_thread"))
        s.bind(s.add_loop(c.name, _name(s, f"{c.name}_block")), "blockIdx.x")   # around the thread loop
        s.bind(thread, "threadIdx.x")
        return
    names = st.loop_names[:rank]
    if c.is_reduction:
        s.cache_write(c.name, names[-1])
    flat = names[0]
    for n in names[1:]:
        flat = s.fuse(flat, n, _name(s, f"{flat}_{n}"))
    bo, ti = s.split(flat, min(threads, size), [_name(s, f"{flat}_b"), _name(s, f"{flat}_t")])
    s.bind(bo, "blockIdx.x")
    s.bind(ti, "threadIdx.x")
