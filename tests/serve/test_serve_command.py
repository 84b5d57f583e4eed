"""`mlc serve` as a process: it starts from the command line, says where it listens and
when it is ready, drains requests in flight on SIGTERM and exits 0."""
from __future__ import annotations

import builtins
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from conftest import make_mlp, mlp_ref, require_serve_libraries

require_serve_libraries()

import mlc.cli


def _start(args, env=None):
    p = subprocess.Popen([sys.executable, "-m", "mlc.serve", "--host", "127.0.0.1", "--http-port", "0",
                          "--grpc-port", "0", "--metrics-port", "0", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})
    lines = []
    ports = None
    for line in p.stdout:
        lines.append(line)
        m = re.search(r"listening: HTTP http://[\d.]+:(\d+), gRPC [\d.]+:(\d+), metrics", line)
        if m:
            ports = int(m.group(1)), int(m.group(2))
        if "mlc serve: ready" in line or "not ready" in line:
            break
    assert ports and "mlc serve: ready: models mlp" in lines[-1], "".join(lines) + p.stdout.read()
    return p, ports, lines


def test_sigterm_drains_requests_in_flight(tmp_path):
    """A request waiting in its batching window (3 s) when SIGTERM arrives is answered,
    then the server exits 0."""
    path = make_mlp(tmp_path / "mlp.onnx")
    p, (http_port, _), lines = _start([path, "--max-delay-ms", "3000", "--log-level", "debug"])
    x = np.linspace(0, 1, 6, dtype=np.float32).reshape(1, 6)
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP32", "data": x.ravel().tolist()},
                                  {"name": "k", "shape": [1, 2], "datatype": "INT64", "data": [5, 6]}]}).encode()
    result = {}

    def client():
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v2/models/mlp/infer", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            result["status"], result["body"] = r.status, json.loads(r.read())
    t = threading.Thread(target=client)
    t.start()
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    t.join(60)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out
    assert "draining 1 request(s) in flight" in out and "mlc serve: stopped" in out
    assert re.search(r"infer protocol=http model=mlp version= status=200 latency_ms=", out)   # the debug line
    assert result["status"] == 200
    y = np.array(result["body"]["outputs"][0]["data"], np.float32).reshape(1, 5)
    np.testing.assert_allclose(y, mlp_ref(x, 0)[0], rtol=1e-5)
    assert result["body"]["outputs"][1]["data"] == [11, 13]


def test_command_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit, match="give model files"):
        mlc.cli.main(["serve"])
    with pytest.raises(SystemExit, match="no such model file: nope.onnx"):
        mlc.cli.main(["serve", "nope.onnx"])
    with pytest.raises(SystemExit, match="--max-batch must be at least 1"):
        mlc.cli.main(["serve", "x.onnx", "--max-batch", "0"])


def test_missing_libraries_name_the_extra(tmp_path, monkeypatch):
    real = builtins.__import__

    def no_aiohttp(name, *a, **kw):
        if name == "aiohttp":
            raise ImportError("No module named 'aiohttp'")
        return real(name, *a, **kw)
    monkeypatch.setattr(builtins, "__import__", no_aiohttp)
    with pytest.raises(SystemExit, match=r"mlc serve needs aiohttp: pip install 'mlc\[serve\]'"):
        mlc.cli.main(["serve", make_mlp(tmp_path / "mlp.onnx")])


def test_a_port_in_use_is_an_error_not_a_traceback(tmp_path):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "mlc.serve", make_mlp(tmp_path / "mlp.onnx"), "--host", "127.0.0.1",
                            "--http-port", str(port), "--grpc-port", "0", "--metrics-port", "0"],
                           capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "mlc serve: cannot start listening on 127.0.0.1:" in p.stderr and "address already in use" in p.stderr
