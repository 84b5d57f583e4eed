"""Measure candidates on another machine: ``mlc rpc-server`` there, ``RPCRunner``
in the tuner.

The server runs every request through its own ``LocalRunner``, so a candidate
that crashes or hangs costs one measurement, never the server. Requests and
replies are frames of ``mlc.tune.worker`` (a length-prefixed JSON header with a
protocol version, then raw array bytes). A ``hello`` request answers with the
server's target, so a tuner builds code the server can run.

The server loads and runs the machine code it is sent: anyone who can connect
can run code as the server's user. It binds to 127.0.0.1 unless told otherwise;
expose it only on a network you trust (or through an SSH tunnel).
"""
from __future__ import annotations

import socket
import socketserver
import sys
import threading
from typing import Sequence
from urllib.parse import urlsplit

import numpy as np

from ..version import __version__
from .measure import KernelBuild, MeasureResult, check_inputs
from .runner import LocalRunner, check_triple, target_info
from .worker import PROTOCOL_VERSION, ProtocolError, array_spec, decode_arrays, recv_frame, send_frame

DEFAULT_PORT = 9190
_REPLY_SLACK = 180.0   # beyond the measurement's time-out: a worker restart, the transfers


class RPCError(RuntimeError):
    """The server refused a request (a protocol or version mismatch, a malformed request)."""


def _socket_reader(sock: socket.socket):
    def read_exact(n: int) -> bytearray:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = sock.recv_into(view[got:])
            if k == 0:
                return buf[:got]
            got += k
        return buf

    return read_exact


# ----------------------------------------------------------------------------- server

class _Handler(socketserver.BaseRequestHandler):
    server: "_TCPServer"

    def setup(self) -> None:
        self.server.owner._connections.add(self.request)

    def finish(self) -> None:
        self.server.owner._connections.discard(self.request)

    def handle(self) -> None:
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        read = _socket_reader(sock)
        owner = self.server.owner
        while True:
            try:
                frame = recv_frame(read)
            except ProtocolError as e:   # the stream is out of step: answer, then hang up
                self._reply({"ok": False, "error": f"malformed request: {e}"})
                return
            except OSError:
                return
            if frame is None:
                return
            header, bufs = frame
            try:
                reply, outs = owner._answer(header, bufs)
            except Exception as e:   # a request the server cannot serve is answered, never fatal
                reply, outs = {"ok": False, "error": f"{type(e).__name__}: {e}"}, []
            if not self._reply(reply, outs):
                return

    def _reply(self, header: dict, buffers: Sequence = ()) -> bool:
        try:
            send_frame(self.request.sendall, {"v": PROTOCOL_VERSION, **header}, buffers)
            return True
        except OSError:
            return False


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "RPCServer"


class _TCPServer6(_TCPServer):
    address_family = socket.AF_INET6


class RPCServer:
    """Serves measurement requests on ``host:port`` (port 0: any free port, see ``.port``).
    ``max_timeout`` caps the time-out a client may ask for."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, runner: LocalRunner | None = None,
                 max_timeout: float = 600.0):
        server_class = _TCPServer6 if ":" in host else _TCPServer
        self._server = server_class((host, port), _Handler)
        self._server.owner = self
        self.host = host
        self.port = self._server.server_address[1]
        self.runner = runner or LocalRunner()
        self.max_timeout = float(max_timeout)
        self.info = target_info()
        self._serving = threading.Event()
        self._stopped = False
        self._connections: set[socket.socket] = set()

    @property
    def address(self) -> str:
        return f"rpc://{'[' + self.host + ']' if ':' in self.host else self.host}:{self.port}"

    def serve_forever(self) -> None:
        """Serve until ``shutdown()`` (from another thread) or Ctrl-C."""
        self._serving.set()
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._serving.clear()

    def shutdown(self) -> None:
        """Stop serving, close the socket and stop the worker. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if self._serving.is_set():
            self._server.shutdown()   # waits for serve_forever to return
        self._server.server_close()
        for sock in list(self._connections):   # wake handlers blocked on an idle client
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.runner.close()

    def __enter__(self) -> "RPCServer":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def _answer(self, header: dict, bufs: list) -> tuple[dict, list]:
        v = header.get("v")
        if v != PROTOCOL_VERSION:
            return {"ok": False, "error": f"protocol version {v!r} is not supported; this server (mlc "
                                          f"{__version__}) speaks version {PROTOCOL_VERSION}"}, []
        kind = header.get("type")
        if kind == "hello":
            return {"ok": True, "protocol": PROTOCOL_VERSION, **self.info}, []
        if kind != "measure":
            return {"ok": False, "error": f"unknown request type {kind!r} (expected 'hello' or 'measure')"}, []
        if not bufs:
            return {"ok": False, "error": "measure request without object code"}, []
        build = KernelBuild.from_header(header.get("build"), bufs[0])
        inputs = decode_arrays(header.get("inputs"), bufs[1:])
        timeout = float(header.get("timeout", self.runner.timeout))
        if not timeout > 0:
            return {"ok": False, "error": f"timeout must be a positive number of seconds, got {timeout}"}, []
        timeout = min(timeout, self.max_timeout)
        want = bool(header.get("want_outputs", True))
        r = self.runner.measure(build, inputs, want, timeout=timeout, repeat=int(header.get("repeat", 5)),
                                min_repeat_ms=float(header.get("min_repeat_ms", 2.0)),
                                flush=bool(header.get("flush", False)))
        outs = (r.outputs or []) if want else []
        return {"ok": True, "times": r.times, "error": r.error, "outputs": [array_spec(o) for o in outs]}, outs


def main_rpc_server(port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> int:
    """``mlc rpc-server``: serve until Ctrl-C, then exit cleanly (status 0)."""
    server = RPCServer(host, port)
    try:
        print(f"mlc rpc-server listening on {host}:{server.port} (target {server.info['target']})", flush=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print("warning: anyone who can reach this port can run code on this machine as this user",
                  file=sys.stderr, flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        print("mlc rpc-server stopped", flush=True)
    finally:
        server.shutdown()
    return 0


# ----------------------------------------------------------------------------- client

def parse_address(spec: str) -> tuple[str, int]:
    """``rpc://HOST:PORT`` -> (host, port); ValueError on anything else."""
    u = urlsplit(spec)
    try:
        port = u.port
    except ValueError:
        port = None
    if u.scheme != "rpc" or not u.hostname or port is None or u.path not in ("", "/"):
        raise ValueError(f"bad RPC address {spec!r}: expected rpc://HOST:PORT")
    return u.hostname, port


class RPCRunner:
    """Measures candidates on an ``mlc rpc-server``; the ``LocalRunner`` interface.
    Connects (and asks the server's target) on construction: ``.info``."""

    def __init__(self, address: str, timeout: float = 10.0, repeat: int = 5, min_repeat_ms: float = 2.0,
                 flush: bool = False, connect_timeout: float = 10.0):
        if timeout <= 0 or repeat < 1:
            raise ValueError(f"RPCRunner: timeout must be > 0 and repeat >= 1, got {timeout} and {repeat}")
        self.address = address
        self.host, self.port = parse_address(address)
        self.timeout = float(timeout)
        self.repeat = int(repeat)
        self.min_repeat_ms = float(min_repeat_ms)
        self.flush = bool(flush)
        self.connect_timeout = float(connect_timeout)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        reply, _ = self._request({"type": "hello"}, [], self.connect_timeout)
        self.info = {k: v for k, v in reply.items() if k not in ("v", "ok", "buffers")}
        if "triple" not in self.info:
            raise RPCError(f"{self.address} did not describe its target: {reply}")

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except ConnectionRefusedError:
            raise ConnectionError(f"cannot connect to the mlc rpc server at {self.address}: connection refused "
                                  f"(is `mlc rpc-server` running there?)") from None
        except OSError as e:
            raise ConnectionError(f"cannot connect to the mlc rpc server at {self.address}: {e}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _request(self, header: dict, buffers: Sequence, wait: float) -> tuple[dict, list]:
        with self._lock:
            if self._sock is None:
                self._sock = self._connect()
            sock = self._sock
            try:
                sock.settimeout(wait)
                send_frame(sock.sendall, {"v": PROTOCOL_VERSION, **header}, buffers)
                frame = recv_frame(_socket_reader(sock))
            except socket.timeout:
                self._disconnect()
                raise TimeoutError(f"no reply from the mlc rpc server at {self.address} within {wait:.0f} s") \
                    from None
            except (OSError, ProtocolError) as e:
                self._disconnect()
                raise ConnectionError(f"lost the connection to the mlc rpc server at {self.address}: {e}") from None
            if frame is None:
                self._disconnect()
                raise ConnectionError(f"the mlc rpc server at {self.address} closed the connection")
        reply, bufs = frame
        if not reply.get("ok"):
            raise RPCError(f"the mlc rpc server at {self.address} refused the request: {reply.get('error')}")
        return reply, bufs

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def measure(self, build: KernelBuild, inputs: Sequence[np.ndarray], want_outputs: bool = True, *,
                timeout: float | None = None, repeat: int | None = None,
                min_repeat_ms: float | None = None, flush: bool | None = None) -> MeasureResult:
        """Time one candidate on the server; a crash or time-out there comes back as
        ``result.error``. ConnectionError when the server cannot be reached."""
        check_triple(build, self.info, f"the rpc server at {self.address}")
        inputs = check_inputs(build, inputs)
        timeout = self.timeout if timeout is None else float(timeout)
        header = {"type": "measure", "build": build.header(), "inputs": [array_spec(a) for a in inputs],
                  "want_outputs": bool(want_outputs), "timeout": timeout,
                  "repeat": int(self.repeat if repeat is None else repeat),
                  "min_repeat_ms": float(self.min_repeat_ms if min_repeat_ms is None else min_repeat_ms),
                  "flush": self.flush if flush is None else bool(flush)}
        reply, bufs = self._request(header, [build.object, *inputs], timeout + _REPLY_SLACK)
        error = reply.get("error")
        outputs = decode_arrays(reply.get("outputs", []), bufs) if want_outputs and error is None else None
        return MeasureResult([float(t) for t in reply.get("times", [])], outputs, error)

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    def __enter__(self) -> "RPCRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def runner_from_spec(spec: str | None, **kw):
    """None or "local" -> LocalRunner(**kw); "rpc://HOST:PORT" -> RPCRunner(spec, **kw)."""
    if spec is None or spec == "local":
        return LocalRunner(**kw)
    if isinstance(spec, str) and spec.startswith("rpc://"):
        return RPCRunner(spec, **kw)
    raise ValueError(f"unknown runner {spec!r}: use 'local' or rpc://HOST:PORT")
