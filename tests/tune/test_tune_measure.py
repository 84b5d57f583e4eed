"""The auto-tuner's measurement side: building one loop-level kernel, timing it in
a worker process that survives crashing and hanging candidates, the SQLite
tuning database (including a writer killed with SIGKILL), and the RPC runner."""
import json
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from mlc.ir.expr import Const, Load, Var
from mlc.ir.loop import Buffer, For, Func, Seq, Store
from mlc.ir.types import float32
from mlc.schedule.database import SCHEMA_VERSION, TuningDB, TuningDBError, schedule_hash
from mlc.tune.measure import KernelBuild, build_kernel, run_build
from mlc.tune.rpc import RPCError, RPCRunner, RPCServer, runner_from_spec
from mlc.tune.runner import LocalRunner
from mlc.tune.worker import PROTOCOL_VERSION, recv_frame, send_frame
from processes import child_processes

N = 1024
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repository


def _double() -> Func:
    """out[i] = (a[i] * 2) + 1, through a scratch buffer placed in the workspace."""
    a, out = Buffer("a", [N], float32), Buffer("out", [N], float32)
    tmp = Buffer("tmp", [N], float32)
    i, j = Var("i"), Var("j")
    body = Seq([For(i, N, Store(tmp, [i], Load(a, [i]) * Const(2.0, float32))),
                For(j, N, Store(out, [j], Load(tmp, [j]) + Const(1.0, float32)))])
    return Func("double", [a], [out], body, scratch=[tmp])


def _crash() -> Func:
    # a store ~2**46 bytes past the output: far outside any mapping, so it segfaults
    a, out = Buffer("a", [N], float32), Buffer("out", [N], float32)
    return Func("crash", [a], [out], Store(out, [Const(1 << 44)], Load(a, [Const(0)])))


def _hang() -> Func:
    # 10**12 dependent float adds: LLVM cannot shorten the loop, it never ends in a test
    a, out = Buffer("a", [N], float32), Buffer("out", [1], float32)
    i = Var("i")
    acc = Store(out, [Const(0)], Load(out, [Const(0)]) + Load(a, [Const(0)]))
    return Func("hang", [a], [out], For(i, 10**12, acc))


@pytest.fixture(scope="module")
def builds():
    return {"good": build_kernel(_double()), "crash": build_kernel(_crash()), "hang": build_kernel(_hang())}


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal(N).astype(np.float32)


def _children() -> dict[int, str]:
    """This process's child processes: pid -> state letter ('Z' is a zombie)."""
    return child_processes(os.getpid())


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


# ----------------------------------------------------------------------------- build and run

def test_build_kernel_describes_the_kernel(builds):
    b = builds["good"]
    assert b.name == "double" and b.object and b.triple
    assert b.inputs == [((N,), "<f4")] and b.outputs == [((N,), "<f4")]
    assert b.workspace_bytes == N * 4   # the scratch buffer, 64-byte aligned
    assert KernelBuild.from_header(json.loads(json.dumps(b.header())), b.object) == b


def test_run_build_in_process(builds, x):
    r = run_build(builds["good"], [x], repeat=3, min_repeat_ms=1.0)
    assert r.error is None and len(r.times) == 3 and all(t > 0 for t in r.times) and r.median > 0
    np.testing.assert_array_equal(r.outputs[0], x * np.float32(2) + np.float32(1))
    with pytest.raises(TypeError, match="input 0 must be float32 of shape"):
        run_build(builds["good"], [x.astype(np.float64)], 1, 0.0)


def test_local_runner_survives_crash_and_timeout(builds, x):
    want = x * np.float32(2) + np.float32(1)
    with LocalRunner(timeout=10.0, repeat=3, min_repeat_ms=1.0) as runner:
        r = runner.measure(builds["good"], [x])
        assert r.error is None and len(r.times) == 3 and r.median > 0
        np.testing.assert_array_equal(r.outputs[0], want)
        first = runner.worker_pid

        r = runner.measure(builds["crash"], [x])
        assert r.error == "worker crashed with signal SIGSEGV" and r.median is None and r.outputs is None

        r = runner.measure(builds["good"], [x], want_outputs=False)
        assert r.error is None and r.outputs is None and r.median > 0
        assert runner.worker_pid != first   # a fresh worker replaced the crashed one

        t0 = time.monotonic()
        r = runner.measure(builds["hang"], [x], timeout=1.0)
        assert r.error == "timed out after 1.0 s" and time.monotonic() - t0 < 8
        assert not any(state == "Z" for state in _children().values())

        r = runner.measure(builds["good"], [x])
        np.testing.assert_array_equal(r.outputs[0], want)
        worker = runner.worker_pid
        assert worker in _children()
    assert worker not in _children()   # closed: the worker is gone and reaped


def test_local_runner_refuses_wrong_inputs_and_foreign_code(builds, x):
    with LocalRunner() as runner:
        with pytest.raises(TypeError, match="takes 1 input"):
            runner.measure(builds["good"], [x, x])
        arm = KernelBuild(**{**builds["good"].__dict__, "triple": "aarch64-unknown-linux-gnu"})
        with pytest.raises(ValueError, match="compiled for aarch64-unknown-linux-gnu, but this machine runs"):
            runner.measure(arm, [x])
        assert runner.worker_pid is None   # refused before starting a worker


# ----------------------------------------------------------------------------- database

def test_db_add_best_tried_tasks_and_reopen(tmp_path):
    path = tmp_path / "tune.db"
    with TuningDB(path) as db:
        a = db.add("w1", "cpu", {"tile": [8, 4], "vec": True}, [3e-4, 2e-4, 4e-4], workload="matmul 8x8")
        db.add("w1", "cpu", {"tile": [16, 4], "vec": True}, [1e-4, 1.5e-4])
        db.add("w1", "cpu", {"tile": [32, 4]}, None, error="worker crashed with signal SIGSEGV")
        db.add("w2", "cpu", [1, 2], [5e-5])
        assert a.median == 3e-4 and a.mlc_version and a.created > 0 and a.schedule == {"tile": [8, 4], "vec": True}
        best = db.best("w1", "cpu")
        assert best.schedule == {"tile": [16, 4], "vec": True} and best.median == 1.25e-4
        assert db.best("w1", "gpu") is None
        assert db.tried("w1", "cpu") == {schedule_hash({"vec": True, "tile": [8, 4]}),
                                         schedule_hash({"tile": [16, 4], "vec": True}),
                                         schedule_hash({"tile": [32, 4]})}
        assert db.count() == 4 and db.count("w1", "cpu") == 3 and db.count(target_key="gpu") == 0
        db.set_task("w1", "cpu", "matmul", weight=3, default_median=5e-4)
        db.set_task("w2", "cpu", "add", weight=1)
        db.set_task("w1", "cpu", "matmul", weight=2)   # a resumed job keeps the default's time
    with TuningDB(path) as db:
        recs = db.records("w1", "cpu")
        assert [r.median for r in recs] == [3e-4, 1.25e-4, None]
        assert recs[2].error == "worker crashed with signal SIGSEGV" and recs[2].times == []
        assert recs[0].workload == "matmul 8x8" and recs[0].times == [3e-4, 2e-4, 4e-4]
        assert [(t.name, t.weight, t.default_median) for t in db.tasks("cpu")] == [("add", 1.0, None),
                                                                                  ("matmul", 2.0, 5e-4)]
        assert db.best("w1", "cpu").median == 1.25e-4
        with pytest.raises(TypeError):
            db.add("w1", "cpu", {"f": object()}, [1.0])
    with pytest.raises(TuningDBError, match="closed"):
        db.count()


def test_db_refuses_other_files(tmp_path):
    junk = tmp_path / "notes.db"
    junk.write_text("these are not the records you are looking for\n" * 100)
    with pytest.raises(TuningDBError, match="notes.db.*not an mlc tuning database"):
        TuningDB(junk)
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE people (name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(TuningDBError, match="SQLite database but not an mlc tuning database"):
        TuningDB(other)
    newer = tmp_path / "newer.db"
    TuningDB(newer).close()
    con = sqlite3.connect(newer)
    con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(TuningDBError, match=f"schema version {SCHEMA_VERSION + 1}, written by a newer mlc"):
        TuningDB(newer)


_WRITER = """
import sys
from mlc.schedule.database import TuningDB
db = TuningDB(sys.argv[1])
n = 0
while True:
    db.add("w", "t", {"candidate": n}, [1e-3 + n * 1e-6], workload="x" * 1000)
    n += 1
    print(n, flush=True)
"""


def test_db_survives_kill_9(tmp_path):
    path = tmp_path / "tune.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            env=_env())
    try:
        written = 0
        while written < 200:
            line = proc.stdout.readline()
            assert line, "the writer died"
            written = int(line)
        with TuningDB(path) as reader:   # a second process reads while the writer writes
            assert reader.count("w", "t") >= 200
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    with TuningDB(path) as db:
        n = db.count("w", "t")
        assert n >= written   # every record reported written was committed
        assert len(db.tried("w", "t")) == n and db.best("w", "t").schedule == {"candidate": 0}
        db.add("w", "t", {"candidate": "after"}, [1e-6])
        assert db.count("w", "t") == n + 1 and db.best("w", "t").schedule == {"candidate": "after"}


# ----------------------------------------------------------------------------- RPC

@pytest.fixture(scope="module")
def server():
    srv = RPCServer(port=0, runner=LocalRunner(timeout=10.0))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    thread.join(10)
    assert not thread.is_alive()


def test_rpc_measures_and_survives_a_crash(server, builds, x):
    with runner_from_spec(f"rpc://127.0.0.1:{server.port}", repeat=2, min_repeat_ms=1.0) as runner:
        assert isinstance(runner, RPCRunner)
        assert runner.info["triple"] == builds["good"].triple and runner.info["mlc_version"]
        r = runner.measure(builds["good"], [x])
        assert r.error is None and len(r.times) == 2 and r.median > 0
        np.testing.assert_array_equal(r.outputs[0], x * np.float32(2) + np.float32(1))
        r = runner.measure(builds["crash"], [x])
        assert r.error == "worker crashed with signal SIGSEGV" and r.outputs is None
        r = runner.measure(builds["hang"], [x], timeout=1.0)
        assert r.error == "timed out after 1.0 s"
        r = runner.measure(builds["good"], [x], want_outputs=False)
        assert r.error is None and r.outputs is None and r.median > 0
        arm = KernelBuild(**{**builds["good"].__dict__, "triple": "aarch64-unknown-linux-gnu"})
        with pytest.raises(ValueError, match=f"the rpc server at rpc://127.0.0.1:{server.port} runs"):
            runner.measure(arm, [x])


def _raw_request(port: int, payload: bytes):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(payload)
        f = s.makefile("rb")
        return recv_frame(f.read)


def test_rpc_malformed_requests_get_error_replies(server, builds, x):
    reply, _ = _raw_request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply["ok"] is False and "not an mlc frame" in reply["error"]
    reply, _ = _raw_request(server.port, b"MLCF" + struct.pack(">I", 5) + b"{nope")
    assert reply["ok"] is False and "not JSON" in reply["error"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:   # one connection, several errors
        f = s.makefile("rb")
        send_frame(s.sendall, {"v": 99, "type": "hello"})
        assert "protocol version 99 is not supported" in recv_frame(f.read)[0]["error"]
        send_frame(s.sendall, {"v": PROTOCOL_VERSION, "type": "dance"})
        assert "unknown request type 'dance'" in recv_frame(f.read)[0]["error"]
        send_frame(s.sendall, {"v": PROTOCOL_VERSION, "type": "measure", "build": {"name": "k"}}, [b"\0"])
        assert "lacks" in recv_frame(f.read)[0]["error"]
        h = builds["good"].header()
        send_frame(s.sendall, {"v": PROTOCOL_VERSION, "type": "measure", "build": h,
                               "inputs": [{"shape": [N], "dtype": "|O"}]}, [builds["good"].object, x])
        assert "unsupported array dtype" in recv_frame(f.read)[0]["error"]
        send_frame(s.sendall, {"v": PROTOCOL_VERSION, "type": "hello"})
        assert recv_frame(f.read)[0]["ok"] is True   # still serving on the same connection
    with RPCRunner(f"rpc://127.0.0.1:{server.port}") as runner:   # and new clients
        assert runner.measure(builds["good"], [x]).error is None
        with pytest.raises(RPCError, match="refused the request"):
            runner._request({"type": "dance"}, [], 30)


def test_rpc_connection_refused_names_the_address():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()   # a port nobody listens on
    with pytest.raises(ConnectionError, match=f"rpc://127.0.0.1:{port}: connection refused"):
        RPCRunner(f"rpc://127.0.0.1:{port}")
    with pytest.raises(ValueError, match="unknown runner 'tcp://x:1'"):
        runner_from_spec("tcp://x:1")
    with pytest.raises(ValueError, match="expected rpc://HOST:PORT"):
        runner_from_spec("rpc://nohost")
    with runner_from_spec(None) as local:
        assert isinstance(local, LocalRunner)


def test_rpc_server_main_prints_address_and_stops_on_ctrl_c():
    code = "import sys; from mlc.tune.rpc import main_rpc_server; sys.exit(main_rpc_server(0))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env())
    try:
        line = proc.stdout.readline()
        assert line.startswith("mlc rpc-server listening on 127.0.0.1:") and "(target " in line, line
        port = int(line.split()[4].rsplit(":", 1)[1])
        with RPCRunner(f"rpc://127.0.0.1:{port}") as runner:
            assert runner.info["target_key"]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "stopped" in out
