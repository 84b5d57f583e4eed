"""Logging and progress for long work.

mlc logs through Python's ``logging``, one logger per module under its stage
("mlc.passes.manager", "mlc.codegen", "mlc.runtime.cache", "mlc.driver", ...), so
``logging.getLogger("mlc.passes").setLevel(logging.DEBUG)`` selects a stage. Nothing is
printed unless the application configures logging, or the environment asks:

    MLC_LOG=debug mlc run model.onnx ...          # every mlc logger at DEBUG, to stderr
    MLC_LOG=info,mlc.passes=debug python app.py   # a default level, then per-logger levels

Warnings (``warnings.warn``) stay for what the user must act on.

``Progress`` shows a long job advancing: a bar redrawn in place on a terminal, plain
lines (at most one a second) otherwise.
"""
from __future__ import annotations

import logging
import os
import sys
import time

ROOT = "mlc"
_HANDLER: logging.Handler | None = None

logging.getLogger(ROOT).addHandler(logging.NullHandler())


class _Stderr(logging.StreamHandler):
    """Records to ``sys.stderr`` as it is when each one is written (a redirect, a test's
    capture, a server's), not the stream that was stderr when logging was configured --
    which may be closed by then, while a background thread still logs."""

    def __init__(self):
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):   # StreamHandler.setStream: the current stderr is always the stream
        pass


def configure(spec: str | None = None, stream=None) -> None:
    """Apply a level spec (``MLC_LOG``'s syntax: ``LEVEL`` or ``name=LEVEL``, comma-separated)
    and send mlc's records to ``stream`` (default stderr). ValueError for an unknown level."""
    global _HANDLER
    spec = os.environ.get("MLC_LOG", "") if spec is None else spec
    if not spec.strip():
        return
    levels = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, level = part.rpartition("=")
        name = name.strip() or ROOT
        if name != ROOT and not name.startswith(ROOT + "."):
            name = f"{ROOT}.{name}"
        value = logging.getLevelName(level.strip().upper())
        if not isinstance(value, int):
            raise ValueError(f"MLC_LOG: unknown level {level.strip()!r} in {part!r} (use debug, info, warning or "
                             "error)")
        levels[name] = value
    root = logging.getLogger(ROOT)
    if _HANDLER is not None:
        root.removeHandler(_HANDLER)
    _HANDLER = logging.StreamHandler(stream) if stream is not None else _Stderr()
    _HANDLER.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
    root.addHandler(_HANDLER)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


class Progress:
    """``with Progress("schedule", total=57) as p: p.advance(detail="conv_add_relu_3")``."""

    def __init__(self, label: str, total: int | None = None, stream=None, min_interval: float = 1.0):
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self.started = time.monotonic()
        self.min_interval = min_interval
        self._last = -float("inf")

    def advance(self, n: int = 1, detail: str = "") -> None:
        self.done += n
        self._show(detail, final=False)

    def _show(self, detail: str, final: bool) -> None:
        now = time.monotonic()
        if not final and not self.tty and now - self._last < self.min_interval:
            return
        self._last = now
        elapsed = now - self.started
        if self.total:
            count = f"{self.done}/{self.total}"
            if self.tty:
                width = 24
                fill = width * min(self.done, self.total) // self.total
                count = f"[{'#' * fill}{'.' * (width - fill)}] {count}"
        else:
            count = f"{self.done}"
        line = f"{self.label}: {count} {elapsed:6.1f} s" + (f"  {detail}" if detail else "")
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self, detail: str = "") -> None:
        self._show(detail, final=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
