"""LocalRunner: measure kernel candidates in a persistent worker process.

The worker (``python -m mlc.tune.worker``, a fresh interpreter: LLVM state does
not survive ``fork`` well) loads and times each candidate. A candidate that
crashes the worker or runs past the time-out costs that one measurement: its
result carries the error, the worker is killed and reaped, and the next
measurement starts a new one.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from typing import Sequence

import numpy as np

from ..version import __version__
from ..target import Target
from .measure import KernelBuild, MeasureResult, check_inputs
from .worker import PROTOCOL_VERSION, ProtocolError, array_spec, decode_arrays, fd_reader, fd_writer, recv_frame, \
    send_frame

_STARTUP_TIMEOUT = 120.0   # a fresh interpreter importing numpy and llvmlite on a loaded machine


def target_info(target: Target | None = None) -> dict:
    """What a runner measures on: enough for a tuner to build code for it."""
    t = Target.get(target or "host")
    # "description": every Target field, so the tuner can rebuild the Target and compile for it
    return {"target": str(t), "target_key": t.key, "triple": t.triple, "cpu": t.cpu, "features": t.features,
            "cores": t.cores, "vector_bytes": t.vector_bytes, "description": dataclasses.asdict(t),
            "mlc_version": __version__}


def check_triple(build: KernelBuild, info: dict, where: str) -> None:
    if build.is_gpu:   # PTX runs on whatever CUDA device the worker finds (or fails saying none is there)
        return
    if build.triple != info["triple"]:
        raise ValueError(f"kernel {build.name} is compiled for {build.triple}, but {where} runs "
                         f"{info['triple']} ({info['target']}): build it for that target")


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def _kill(proc: subprocess.Popen) -> None:
    """Kill and reap (never leave a zombie)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            f.close()


class _Worker:
    def __init__(self):
        env = dict(os.environ)
        # the worker imports the same mlc as this process, wherever it was imported from
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["MLC_WORKER_PARENT"] = str(os.getpid())
        self.proc = subprocess.Popen([sys.executable, "-m", "mlc.tune.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, close_fds=True)
        # the pipes are used as raw descriptors: poll() needs to see every unread byte
        self.write = fd_writer(self.proc.stdin.fileno())
        self._finalizer = weakref.finalize(self, _kill, self.proc)
        try:
            frame = recv_frame(fd_reader(self.proc.stdout.fileno(), time.monotonic() + _STARTUP_TIMEOUT))
        except TimeoutError:
            self.close()
            raise RuntimeError(f"the measurement worker did not start within {_STARTUP_TIMEOUT} s") from None
        except ProtocolError as e:
            self.close()
            raise RuntimeError(f"the measurement worker did not start: {e}") from None
        if frame is None or frame[0].get("type") != "ready":
            self.close()
            raise RuntimeError(f"the measurement worker did not start (exit status {self.proc.returncode}; "
                               f"see its error output)")

    def read(self, deadline: float | None):
        return recv_frame(fd_reader(self.proc.stdout.fileno(), deadline))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self._finalizer()


class LocalRunner:
    """Measures candidates on this machine, each in a worker process.

    ``timeout``: seconds one measurement (load, warm-up and timings) may take;
    ``repeat`` timings of at least ``min_repeat_ms`` each (see ``run_build``).
    Measurements are serialized (one at a time gives honest timings)."""

    def __init__(self, timeout: float = 10.0, repeat: int = 5, min_repeat_ms: float = 2.0,
                 flush: bool = False):
        if timeout <= 0 or repeat < 1:
            raise ValueError(f"LocalRunner: timeout must be > 0 and repeat >= 1, got {timeout} and {repeat}")
        self.timeout = float(timeout)
        self.repeat = int(repeat)
        self.min_repeat_ms = float(min_repeat_ms)
        self.flush = bool(flush)
        self._worker: _Worker | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def info(self) -> dict:
        return target_info()

    @property
    def worker_pid(self) -> int | None:
        """The current worker's process id (None before the first measurement)."""
        w = self._worker
        return w.proc.pid if w is not None and w.alive() else None

    def measure(self, build: KernelBuild, inputs: Sequence[np.ndarray], want_outputs: bool = True, *,
                timeout: float | None = None, repeat: int | None = None,
                min_repeat_ms: float | None = None, flush: bool | None = None) -> MeasureResult:
        """Time one candidate; a crash or time-out comes back as ``result.error``.
        Keyword arguments override the runner's settings for this measurement."""
        check_triple(build, self.info, "this machine")
        inputs = check_inputs(build, inputs)
        timeout = self.timeout if timeout is None else float(timeout)
        header = {"v": PROTOCOL_VERSION, "type": "measure", "build": build.header(),
                  "inputs": [array_spec(a) for a in inputs], "want_outputs": bool(want_outputs),
                  "repeat": int(self.repeat if repeat is None else repeat),
                  "min_repeat_ms": float(self.min_repeat_ms if min_repeat_ms is None else min_repeat_ms),
                  "flush": self.flush if flush is None else bool(flush)}
        with self._lock:
            if self._closed:
                raise RuntimeError("LocalRunner is closed")
            if self._worker is None or not self._worker.alive():
                self._worker = _Worker()
            w = self._worker
            deadline = time.monotonic() + timeout
            try:
                send_frame(w.write, header, [build.object, *inputs])
                frame = w.read(deadline)
            except TimeoutError:
                self._drop_worker()
                return MeasureResult(error=f"timed out after {timeout} s")
            except (BrokenPipeError, ProtocolError) as e:
                frame = None
                if w.alive() and isinstance(e, ProtocolError):
                    self._drop_worker()
                    return MeasureResult(error=f"worker sent a malformed reply: {e}")
            if frame is None:   # end of stream: the worker died
                code = w.proc.wait()
                self._drop_worker()
                if code < 0:
                    return MeasureResult(error=f"worker crashed with signal {_signal_name(-code)}")
                return MeasureResult(error=f"worker exited with status {code}")
        reply, bufs = frame
        try:
            outputs = decode_arrays(reply.get("outputs", []), bufs) if want_outputs else None
        except ValueError as e:
            return MeasureResult(error=f"worker sent malformed outputs: {e}")
        times = [float(t) for t in reply.get("times", [])]
        return MeasureResult(times, outputs if reply.get("error") is None else None, reply.get("error"))

    def _drop_worker(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def close(self) -> None:
        """Stop the worker (asks it to exit, kills it if it does not) and reap it."""
        with self._lock:
            self._closed = True
            w, self._worker = self._worker, None
        if w is not None and w.alive():
            try:
                send_frame(w.write, {"v": PROTOCOL_VERSION, "type": "exit"})
                w.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if w is not None:
            w.close()

    def __enter__(self) -> "LocalRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        w = getattr(self, "_worker", None)
        if w is not None:
            w.close()
