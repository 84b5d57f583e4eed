"""The measurement worker (``python -m mlc.tune.worker``) and the wire format that
the worker pipes and the RPC sockets share.

A frame is ``b"MLCF"``, a 4-byte big-endian header length, a UTF-8 JSON header,
then the raw buffers whose byte lengths the header lists under ``"buffers"``.
Arrays travel as a ``{"shape", "dtype"}`` spec in the header plus their bytes;
nothing is ever pickled.

The worker reads measure requests on stdin and answers on stdout, one at a time.
It runs candidates in its own process so that one that segfaults or never ends
costs the runner (``mlc.tune.runner.LocalRunner``) one measurement.
"""
from __future__ import annotations

import json
import os
import signal
import struct
import sys
import threading
import time
from typing import Callable, Sequence

import numpy as np

PROTOCOL_VERSION = 1
MAGIC = b"MLCF"
MAX_HEADER = 1 << 20      # a garbage length never makes us allocate much
MAX_PAYLOAD = 1 << 36     # 64 GiB of buffers in one frame
_PREFIX = struct.Struct(">4sI")


class ProtocolError(ValueError):
    """A frame that cannot be read: the stream is out of step and must be closed."""


def encode_frame(header: dict, buffers: Sequence = ()) -> list:
    """The pieces of one frame (header bytes, then the buffers as memoryviews, uncopied)."""
    views = [memoryview(b).cast("B") for b in buffers]
    h = dict(header, buffers=[v.nbytes for v in views])
    text = json.dumps(h, separators=(",", ":")).encode()
    return [_PREFIX.pack(MAGIC, len(text)) + text, *views]


def send_frame(write: Callable, header: dict, buffers: Sequence = ()) -> None:
    for piece in encode_frame(header, buffers):
        write(piece)


def recv_frame(read_exact: Callable[[int], bytearray]) -> tuple[dict, list[bytearray]] | None:
    """Read one frame with ``read_exact(n)`` (which returns fewer bytes only at end of
    stream). None at a clean end of stream; ProtocolError on anything malformed."""
    prefix = read_exact(_PREFIX.size)
    if not prefix:
        return None
    if len(prefix) < _PREFIX.size:
        raise ProtocolError("truncated frame")
    magic, n = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise ProtocolError(f"not an mlc frame (starts with {bytes(prefix[:4])!r}, expected {MAGIC!r})")
    if n > MAX_HEADER:
        raise ProtocolError(f"frame header of {n} bytes exceeds the {MAX_HEADER}-byte limit")
    text = read_exact(n)
    if len(text) < n:
        raise ProtocolError("truncated frame header")
    try:
        header = json.loads(text.decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"frame header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise ProtocolError("frame header is not a JSON object")
    sizes = header.get("buffers", [])
    if not (isinstance(sizes, list) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                            for s in sizes)):
        raise ProtocolError("frame header 'buffers' must be a list of byte counts")
    if sum(sizes) > MAX_PAYLOAD:
        raise ProtocolError(f"frame payload of {sum(sizes)} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    bufs = []
    for s in sizes:
        b = read_exact(s)
        if len(b) < s:
            raise ProtocolError("truncated frame payload")
        bufs.append(b)
    return header, bufs


def array_spec(a: np.ndarray) -> dict:
    return {"shape": list(a.shape), "dtype": a.dtype.str}


def decode_arrays(specs, bufs: Sequence) -> list[np.ndarray]:
    """Arrays from their header specs and raw buffers; ValueError on a mismatch."""
    from .measure import check_dtype
    if not isinstance(specs, list) or len(specs) != len(bufs):
        raise ValueError(f"{len(bufs)} array buffer(s) for {specs if isinstance(specs, list) else '?'} spec(s)")
    out = []
    for n, (s, b) in enumerate(zip(specs, bufs)):
        try:
            shape = tuple(int(d) for d in s["shape"])
            dt = check_dtype(s["dtype"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"array {n}: malformed spec {s!r}: {e}") from None
        if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.int64)) * dt.itemsize != len(b):
            raise ValueError(f"array {n}: {len(b)} bytes do not hold {dt.name} of shape {shape}")
        out.append(np.frombuffer(b, dt).reshape(shape))
    return out


def fd_reader(fd: int, deadline: float | None = None) -> Callable[[int], bytearray]:
    """``read_exact`` over a file descriptor; TimeoutError past ``deadline`` (monotonic)."""
    import select

    def read_exact(n: int) -> bytearray:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while got < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not poller.poll(left * 1000):
                    raise TimeoutError
            k = os.readv(fd, [view[got:]])
            if k == 0:
                return buf[:got]
            got += k
        return buf

    return read_exact


def fd_writer(fd: int) -> Callable:
    def write(data) -> None:
        view = memoryview(data).cast("B")
        while view:
            k = os.write(fd, view)
            view = view[k:]

    return write


# ----------------------------------------------------------------------------- the worker process

def _watch_parent(parent: int) -> None:
    """Exit when the runner's process is gone, even in the middle of a kernel that
    never ends (ctypes calls release the GIL, so this thread keeps running)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(3)


def _measure(header: dict, bufs: list) -> tuple[dict, list]:
    from .measure import KernelBuild, run_build
    if not bufs:
        raise ValueError("measure request without object code")
    build = KernelBuild.from_header(header.get("build"), bufs[0])
    inputs = decode_arrays(header.get("inputs"), bufs[1:])
    r = run_build(build, inputs, int(header.get("repeat", 5)), float(header.get("min_repeat_ms", 2.0)),
                  bool(header.get("flush", False)))
    outs = r.outputs if header.get("want_outputs", True) else []
    return {"times": r.times, "error": r.error, "outputs": [array_spec(o) for o in outs]}, outs


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is for the runner, which ends this process
    parent = int(os.environ.get("MLC_WORKER_PARENT", os.getppid()))
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    # the protocol owns the original stdout; anything else printed (by native code too) goes to stderr
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    read, write = fd_reader(0), fd_writer(out_fd)
    import mlc.tune.measure  # noqa: F401  (import before 'ready': startup is not part of any time-out)
    send_frame(write, {"v": PROTOCOL_VERSION, "type": "ready", "pid": os.getpid()})
    while True:
        try:
            frame = recv_frame(read)
        except ProtocolError as e:
            send_frame(write, {"v": PROTOCOL_VERSION, "type": "result", "times": [], "outputs": [],
                               "error": f"worker: {e}"})
            return 2
        if frame is None:
            return 0
        header, bufs = frame
        kind = header.get("type")
        if kind == "exit":
            return 0
        if kind != "measure":
            reply, outs = {"times": [], "outputs": [], "error": f"worker: unknown request type {kind!r}"}, []
        else:
            try:
                reply, outs = _measure(header, bufs)
            except Exception as e:   # a bad candidate or request is one failed measurement
                reply, outs = {"times": [], "outputs": [], "error": f"{type(e).__name__}: {e}"}, []
        send_frame(write, {"v": PROTOCOL_VERSION, "type": "result", **reply}, outs)


if __name__ == "__main__":
    sys.exit(main())
