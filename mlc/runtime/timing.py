"""Wall-clock timing of a call, the one way mlc measures: warm up, then take the
median of repeated calls (robust to a thread descheduled on a shared machine)."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def median_seconds(fn: Callable[[], object], repeat: int, warmup: int = 2) -> float:
    """Median seconds of one ``fn()`` over ``repeat`` calls after ``warmup`` calls."""
    if repeat < 1:
        raise ValueError(f"median_seconds: repeat must be >= 1, got {repeat}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
