"""What ``mlc tune`` shows while it works: a live table (rich) on a terminal, one
line per round otherwise (logs, CI)."""
from __future__ import annotations

import math
import sys
import time


def _us(t: float | None) -> str:
    if t is None:
        return "-"
    return f"{t * 1e6:,.1f} us" if t < 1e-2 else f"{t * 1e3:,.2f} ms"


def summary_line(tuner, total: float) -> str:
    """``total``: the trial limit (``math.inf`` when a time budget alone limits the run)."""
    elapsed = time.monotonic() - tuner.started
    speed = tuner.default_latency / tuner.estimated_latency if tuner.estimated_latency else 1.0
    of = "" if total == math.inf else f"/{total}"
    return (f"trials {tuner.trials}{of}  {elapsed:6.1f} s  estimated latency {_us(tuner.estimated_latency)} "
            f"(default {_us(tuner.default_latency)}, {speed:.2f}x)")


class LineProgress:
    """A line after every round."""

    def __init__(self, total: int, stream=None):
        self.total = total
        self.stream = stream or sys.stdout

    def __call__(self, tuner, event: str) -> None:
        if event in ("round", "done"):
            print(summary_line(tuner, self.total), file=self.stream, flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """A live table: per kernel its weight, trials, default and best time, speed-up;
    above it trials done, elapsed time and the estimated model latency."""

    MAX_ROWS = 15

    def __init__(self, total: int):
        from rich.console import Console
        from rich.live import Live
        self.total = total
        self.console = Console()
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def _render(self, tuner):
        from rich.table import Table
        table = Table(title=summary_line(tuner, self.total), title_justify="left")
        for col, just in (("kernel", "left"), ("calls", "right"), ("trials", "right"), ("default", "right"),
                          ("best", "right"), ("speed-up", "right"), ("share", "right")):
            table.add_column(col, justify=just)
        total = tuner.estimated_latency or 1.0
        rows = sorted(tuner.tasks, key=lambda t: -(t.weight * (t.best_time or t.default_time or 0)))
        for t in rows[:self.MAX_ROWS]:
            up = (t.default_time / t.best_time) if t.default_time and t.best_time else None
            share = t.weight * (t.best_time or t.default_time or 0) / total
            table.add_row(t.name[:40], str(t.weight), str(t.trials), _us(t.default_time), _us(t.best_time),
                          f"{up:.2f}x" if up else "-", f"{100 * share:.0f}%")
        if len(rows) > self.MAX_ROWS:
            table.add_row(f"... {len(rows) - self.MAX_ROWS} more kernels", "", "", "", "", "", "")
        return table

    def __call__(self, tuner, event: str) -> None:
        self.live.update(self._render(tuner))

    def close(self) -> None:
        self.live.stop()


def make_progress(total: int, force_lines: bool = False):
    if not force_lines and sys.stdout.isatty():
        try:
            return RichProgress(total)
        except ImportError:
            pass
    return LineProgress(total)
