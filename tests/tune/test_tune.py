"""The auto-tuner end to end: tuning a model into a database, resuming it, a tuner
killed with SIGKILL or stopped with Ctrl-C, wrong and crashing candidates, the RPC
runner, the report, ``mlc compile --db``, entry points and target files on the
command line, workload keys, the search space and the cost model."""
import contextlib
import io
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter

import numpy as np
import pytest

import mlc
from mlc.cli import main
from mlc.examples import mlp, mlp_inputs, mlp_numpy
from mlc.schedule.default import default_knobs, rule_schedule
from mlc.schedule.primitives import replay
from mlc.target import Target
from mlc.schedule.database import TuningDB, best_schedule, schedule_hash, workload_key
from mlc.tune.measure import MeasureResult
from mlc.tune.rpc import RPCServer
from mlc.tune.runner import LocalRunner
from mlc.tune.space import FEATURES, ROWS, VECTORS, SearchSpace
from mlc.tune.tuner import MIN_TRAIN, CostModel, extract_tasks, tune
from processes import child_processes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repository
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _mm_bias_relu(x, w, b):
    return mlc.relu(x @ w + b)


def _integrity(path) -> str:
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def _copy_db(src, dst) -> None:
    """A consistent copy of a tuning database (SQLite's backup API: WAL included)."""
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()


def _cli(*argv) -> tuple[int, str]:
    """``mlc ARGV`` in this process: (exit status, what it printed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main([*argv])
    return rc, out.getvalue()


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    return [c for c, state in child_processes(pid).items() if state != "Z"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


class _Wrapped:
    """A runner that hands every measurement to ``inner`` and lets ``change(n, result,
    want_outputs)`` alter result number n (0: the first)."""

    def __init__(self, inner, change):
        self.inner, self.change, self.calls = inner, change, 0

    def measure(self, build, inputs, want_outputs=True, **kw):
        res = self.inner.measure(build, inputs, want_outputs, **kw)
        n, self.calls = self.calls, self.calls + 1
        return self.change(n, res, want_outputs)


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    args = (rng.standard_normal((64, 64)).astype(np.float32),
            (rng.standard_normal((64, 64)) * 0.1).astype(np.float32),
            rng.standard_normal(64).astype(np.float32))
    return mlc.trace(_mm_bias_relu, *args), args


@pytest.fixture(scope="module")
def runner():
    with LocalRunner(timeout=30.0, repeat=3, min_repeat_ms=1.0) as r:
        yield r


@pytest.fixture(scope="module")
def tuned(model, tmp_path_factory):
    """8 trials of the matmul+bias+relu model into a fresh database (tune's own runner)."""
    graph, _ = model
    path = tmp_path_factory.mktemp("tuned") / "tune.db"
    events = []
    tuner = tune(graph, "host", str(path), trials=8, progress=lambda t, e: events.append(e))
    return path, tuner, events


# ----------------------------------------------------------------------------- tune()

def test_tune_stores_replayable_records_and_compile_uses_them(model, tuned):
    graph, (x, w, b) = model
    path, tuner, events = tuned
    host = Target.get("host")
    assert tuner.trials == 8 and tuner.stopped_by == "trials"
    assert events.count("measured") == 8 and "round" in events and events[-1] == "done"
    assert len(tuner.tasks) == 1
    t = tuner.tasks[0]
    assert t.trials == 8 and t.default_time > 0 and t.best_time <= t.default_time
    default_trace = rule_schedule(t.kernel, host).trace
    with TuningDB(path) as db:
        task = db.task(t.key, host.key)
        assert task is not None and task.default_median > 0 and task.weight == 1
        recs = db.records(t.key, host.key)
        assert len(recs) == 8 == db.count()
        assert recs[0].schedule == default_trace and recs[0].ok   # the default first, measured
        for r in recs:
            replay(t.kernel, host, json.dumps(r.schedule)).finalize()   # every stored schedule replays
            assert r.ok and r.error is None and r.median > 0 and r.times, r.error
        # no schedule measured twice, but the default (its time is the mean of two) and the
        # fastest, confirmed once at the end of the run
        hashes = [schedule_hash(r.schedule) for r in recs]
        assert hashes[0] == hashes[1] and len(set(hashes)) == 6 and hashes[-1] in hashes[:-1]
        best = db.best(t.key, host.key)
        assert best.median <= statistics.median(r.median for r in recs if r.schedule == default_trace) and t.best_time <= best.median
        assert best_schedule(db, t.kernel, host) == best.schedule
    want = np.maximum(x @ w + b, 0)
    exe = mlc.compile(_mm_bias_relu, x, w, b, db=str(path))
    assert exe.stats["tuned_kernels"] == 1
    np.testing.assert_allclose(exe(x, w, b), want, rtol=1e-4, atol=1e-4)
    with TuningDB(path) as db:   # a TuningDB works as well as a path
        exe = mlc.compile(graph, db=db)
        assert exe.stats["tuned_kernels"] == 1
    np.testing.assert_allclose(exe(x, w, b), want, rtol=1e-4, atol=1e-4)
    assert mlc.compile(graph).stats["tuned_kernels"] == 0
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mlc.compile(graph, db=str(path) + ".missing")


def test_resume_measures_nothing_twice_and_keeps_the_best(model, tuned, tmp_path, runner):
    graph, _ = model
    src, first, _ = tuned
    path = tmp_path / "resume.db"
    _copy_db(src, path)
    host = Target.get("host")
    key = first.tasks[0].key
    with TuningDB(path) as db:
        before = db.records(key, host.key)
        best_before = db.best(key, host.key)
    default_hash = schedule_hash(before[0].schedule)
    second = tune(graph, "host", str(path), trials=8, runner=runner)   # the same seed: the same first picks
    assert second.trials == 8 and second.stopped_by == "trials"
    with TuningDB(path) as db:
        after = db.records(key, host.key)
        best_after = db.best(key, host.key)
        assert db.count() == len(after)
    assert [r.id for r in after[:len(before)]] == [r.id for r in before]   # nothing lost
    assert len(after) == len(before) + 8
    counts = Counter(schedule_hash(r.schedule) for r in after)
    twice = {h: n for h, n in counts.items() if n > 1}
    # twice per run (its time is the mean of two), maybe once more as one of the fastest
    assert twice.get(default_hash) in (4, 5, 6), "the default schedule is measured again on resume"
    # besides it, only the fastest schedules are measured again: one confirmation per run
    assert len(set(twice) - {default_hash}) <= 2
    assert schedule_hash(after[len(before)].schedule) == default_hash
    assert best_after.median <= best_before.median
    assert second.tasks[0].best_time <= best_before.median


# ----------------------------------------------------------------------------- wrong and crashing candidates

def test_wrong_results_are_never_stored_as_good(model, tmp_path, runner):
    graph, _ = model
    path = tmp_path / "wrong.db"

    def corrupt(n, res, want_outputs):
        if n == 0 or not want_outputs or res.outputs is None:   # the default's reference, its second timing
            return res
        return MeasureResult(res.times, [o + np.float32(1.0) for o in res.outputs], res.error)

    tuner = tune(graph, "host", str(path), trials=6, runner=_Wrapped(runner, corrupt))
    assert tuner.trials == 6 and tuner.stopped_by == "trials"
    host = Target.get("host")
    t = tuner.tasks[0]
    default_trace = rule_schedule(t.kernel, host).trace
    with TuningDB(path) as db:
        recs = db.records(t.key, host.key)
        assert len(recs) == 6
        assert recs[0].schedule == default_trace and recs[0].ok
        assert recs[1].schedule == default_trace          # measured twice: its time is the mean of two
        for r in recs[2:]:
            assert r.schedule != default_trace
            assert r.median is None and not r.ok and r.error.startswith("wrong result"), r.error
            assert "differs from the default schedule's" in r.error
        assert best_schedule(db, t.kernel, host) == default_trace
    assert t.best_schedule == default_trace


def test_a_crashing_candidate_costs_one_trial(model, tmp_path, runner):
    graph, _ = model
    path = tmp_path / "crash.db"
    crash = "worker crashed with signal SIGSEGV"

    def crash_third(n, res, want_outputs):   # 0: the default, 1: its second timing, 2: the first candidate
        return MeasureResult(error=crash) if n == 2 else res

    tuner = tune(graph, "host", str(path), trials=6, runner=_Wrapped(runner, crash_third))
    assert tuner.trials == 6 and tuner.stopped_by == "trials"
    host = Target.get("host")
    with TuningDB(path) as db:
        recs = db.records(tuner.tasks[0].key, host.key)
    assert len(recs) == 6
    failed = [r for r in recs if not r.ok]
    assert len(failed) == 1 and failed[0].error == crash and failed[0].median is None and failed[0].times == []
    assert all(r.error is None and r.median > 0 for r in recs if r is not failed[0])


def test_time_budget_stops_the_search(model, tmp_path, runner):
    graph, _ = model
    t0 = time.monotonic()
    tuner = tune(graph, "host", str(tmp_path / "budget.db"), trials=10_000, time_budget=3.0, runner=runner)
    elapsed = time.monotonic() - t0
    assert tuner.stopped_by == "time budget" and 1 <= tuner.trials < 10_000
    assert elapsed < 30, elapsed
    with TuningDB(tmp_path / "budget.db") as db:
        assert db.count() == tuner.trials


def test_cli_refuses_files_that_are_not_tuning_databases(tmp_path):
    junk = tmp_path / "notes.db"
    junk.write_text("not a database\n" * 100)
    with pytest.raises(SystemExit, match="--db: .*notes.db.*not an mlc tuning database"):
        main(["tune", "gelu", "--trials", "2", "--db", str(junk), "--no-live"])
    with pytest.raises(SystemExit, match="--db: .*notes.db.*not an mlc tuning database"):
        main(["compile", "gelu", "--db", str(junk)])
    assert junk.read_text() == "not a database\n" * 100


def test_cli_default_schedule_failure_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="matmul_add_relu_0.*timed out"):
        main(["tune", "mlp", "--trials", "3", "--db", str(tmp_path / "t.db"), "--timeout", "0.000001", "--no-live"])


def test_cli_bad_timeout_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="timeout"):
        main(["tune", "gelu", "--trials", "2", "--db", str(tmp_path / "t.db"), "--timeout", "0", "--no-live"])


# ----------------------------------------------------------------------------- kill -9 and Ctrl-C

def _start_tune(db, log, *extra):
    """``mlc tune mlp`` as a user starts it: its own process group (a terminal's job)."""
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "mlc.cli", "tune", "mlp", "--db", str(db), "--no-live",
                                 *extra], stdout=f, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)


def _wait_for_records(proc, db, log, n: int, timeout: float = 180.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mlc tune exited early ({proc.returncode}):\n{open(log).read()}"
        if os.path.exists(db):
            with TuningDB(db) as d:
                count = d.count()
            if count >= n:
                return count
        time.sleep(0.2)
    raise AssertionError(f"no {n} records within {timeout} s:\n{open(log).read()}")


def _stop(proc) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_tuner_killed_with_sigkill_resumes(tmp_path):
    db, log = tmp_path / "kill.db", tmp_path / "kill.log"
    proc = _start_tune(db, log, "--trials", "200")
    try:
        seen = _wait_for_records(proc, db, log, 4)   # the 3 defaults, then the search
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _stop(proc)
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 15   # an orphaned measurement worker notices and exits
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers), "the measurement worker outlived its killed tuner"
    assert _integrity(db) == "ok"
    with TuningDB(db) as d:
        killed_count = d.count()
        assert killed_count >= seen
        assert len(d.tasks(Target.get("host").key)) == 3
    r = subprocess.run([sys.executable, "-m", "mlc.cli", "tune", "mlp", "--trials", "5", "--db", str(db),
                        "--no-live"], capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 trials in" in r.stdout and "stopped: trial budget reached" in r.stdout
    assert _integrity(db) == "ok"
    with TuningDB(db) as d:
        assert d.count() == killed_count + 5


def test_tuner_stopped_with_ctrl_c_keeps_everything(tmp_path):
    db, log = tmp_path / "int.db", tmp_path / "int.log"
    proc = _start_tune(db, log, "--trials", "200")
    try:
        seen = _wait_for_records(proc, db, log, 4)
        workers = _children(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)   # Ctrl-C on a terminal: the whole job gets it
        proc.wait(timeout=60)
    finally:
        _stop(proc)
    out = open(log).read()
    assert proc.returncode == 130, out
    assert "stopped: interrupted (Ctrl-C); everything measured is kept" in out, out
    assert "Traceback" not in out, out
    assert not any(_alive(p) for p in workers), "the measurement worker outlived the interrupted tuner"
    assert _integrity(db) == "ok"
    with TuningDB(db) as d:
        recs = [r for t in d.tasks(Target.get("host").key) for r in d.records(t.workload_key, t.target_key)]
        assert len(recs) == d.count() >= seen
    # Ctrl-C reached the worker too: it must not turn a good candidate into a failed record
    assert all(r.ok for r in recs), [r.error for r in recs if not r.ok]


# ----------------------------------------------------------------------------- RPC, report, compile --db

@pytest.fixture(scope="module")
def rpc_server():
    srv = RPCServer(port=0, runner=LocalRunner(timeout=30.0, repeat=3, min_repeat_ms=1.0))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    thread.join(10)


@pytest.fixture(scope="module")
def mlp_db(rpc_server, tmp_path_factory):
    """``mlc tune mlp`` through an RPC server on loopback, with a report."""
    d = tmp_path_factory.mktemp("rpc")
    db, png = d / "mlp.db", d / "report.png"
    rc, out = _cli("tune", "mlp", "--trials", "6", "--db", str(db), "--runner", f"rpc://127.0.0.1:{rpc_server.port}",
                   "--no-live", "--report", str(png))
    return rc, out, db, png


def test_tune_through_rpc_server(mlp_db):
    rc, out, db, _ = mlp_db
    assert rc == 0, out
    assert "stopped: trial budget reached. 6 trials in" in out
    host = Target.get("host")
    with TuningDB(db) as d:
        assert d.count() == 6
        tasks = d.tasks(host.key)
        assert len(tasks) == 3 and all(t.default_median and t.default_median > 0 for t in tasks)
        assert all(d.best(t.workload_key, host.key) is not None for t in tasks)


def test_tune_unreachable_rpc_server_names_the_address(tmp_path):
    with pytest.raises(SystemExit, match=r"--runner: .*rpc://127\.0\.0\.1:1\b"):
        main(["tune", "mlp", "--trials", "2", "--db", str(tmp_path / "x.db"), "--runner", "rpc://127.0.0.1:1",
              "--no-live"])
    with pytest.raises(SystemExit, match="unknown runner"):
        main(["tune", "mlp", "--trials", "2", "--db", str(tmp_path / "x.db"), "--runner", "tcp://x:1", "--no-live"])


def test_report_png_and_compile_with_db(mlp_db, capsys, tmp_path):
    rc, out, db, png = mlp_db
    assert rc == 0, out
    assert f"report: {png}" in out
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert main(["compile", "mlp", "--db", str(db)]) == 0
    printed = capsys.readouterr().out
    m = re.search(r"(\d+) of (\d+) kernels tuned", printed)
    assert m and int(m.group(1)) > 0 and int(m.group(2)) == 3, printed
    inputs = mlp_inputs()
    exe = mlc.compile(mlp, *inputs, db=str(db))
    assert exe.stats["tuned_kernels"] > 0
    np.testing.assert_allclose(exe(*inputs), mlp_numpy(*inputs), rtol=1e-4, atol=1e-6)
    missing = tmp_path / "missing.db"
    with pytest.raises(SystemExit, match="--db .*missing.db: no such file"):
        main(["compile", "mlp", "--db", str(missing)])
    assert not missing.exists()   # a typo does not create an empty database


# ----------------------------------------------------------------------------- entry points and target files

_ENTRY = '''
import numpy as np
import mlc


def fn(x, w):
    return mlc.relu(x @ w) * 2.0


def model():
    rng = np.random.default_rng(0)
    return fn, (rng.standard_normal((8, 32)).astype(np.float32), rng.standard_normal((32, 16)).astype(np.float32))


def needs_args(batch):
    return model()
'''


def test_tune_module_function_entry_point(tmp_path, monkeypatch):
    name = "mlc_tune_test_entry"
    (tmp_path / f"{name}.py").write_text(_ENTRY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))   # the CLI puts the cwd on sys.path: undone afterwards
    try:
        rc, out = _cli("tune", f"{name}:model", "--trials", "4", "--db", "entry.db", "--no-live")
        assert rc == 0, out
        assert "stopped: trial budget reached. 4 trials in" in out
        with TuningDB(tmp_path / "entry.db") as d:
            assert d.count() == 4
        with pytest.raises(SystemExit, match=r"needs_args takes arguments \(batch\)"):
            main(["tune", f"{name}:needs_args", "--trials", "4", "--db", "entry.db", "--no-live"])
    finally:
        sys.modules.pop(name, None)


def test_tune_target_file_and_non_host_target(tmp_path, capsys):
    desc = {**Target.get("host").to_json(), "name": "mybox"}
    tfile = tmp_path / "t.json"
    tfile.write_text(json.dumps(desc))
    db = tmp_path / "t.db"
    assert main(["tune", "gelu", "--target", str(tfile), "--trials", "2", "--db", str(db), "--no-live"]) == 0
    out = capsys.readouterr().out
    assert "for mybox:" in out and "stopped:" in out, out
    with TuningDB(db) as d:
        assert d.count() == 2
        # a target file describing this machine: its records serve the host target
        assert d.tasks(Target.get("host").key)
    with pytest.raises(SystemExit, match="not this machine.*rpc-server.*--runner rpc://"):
        main(["tune", "gelu", "--target", "neoverse-n1", "--trials", "2", "--db", str(db), "--no-live"])


# ----------------------------------------------------------------------------- workload keys, space, cost model

def _kernel(n: int):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((16, 32)).astype(np.float32), rng.standard_normal((32, n)).astype(np.float32)
    return extract_tasks(mlc.trace(lambda x, w: x @ w, x, w), Target.get("host"))[0].kernel


def test_workload_key_ignores_the_name_only():
    host = Target.get("host")
    rng = np.random.default_rng(0)
    x, w1, w2 = (rng.standard_normal(s).astype(np.float32) for s in ((16, 32), (32, 8), (32, 8)))
    from mlc.driver import Compiled
    calls = Compiled(mlc.trace(lambda x, a, b: (x @ a, x @ b), x, w1, w2), host).lowered.calls
    k0, k1 = calls[0].kernel, calls[1].kernel
    assert k0.name != k1.name
    assert workload_key(k0, host) == workload_key(k1, host)
    tasks = extract_tasks(mlc.trace(lambda x, a, b: (x @ a, x @ b), x, w1, w2), host)
    assert len(tasks) == 1 and tasks[0].weight == 2   # equal kernels are one task
    assert workload_key(_kernel(16), host) != workload_key(k0, host)   # another shape
    assert workload_key(k0, Target.get("skylake-avx512")) != workload_key(k0, host)   # another target
    renamed = Target.from_json({**host.to_json(), "name": "same-machine"})
    assert workload_key(k0, renamed) == workload_key(k0, host)


def test_tasks_include_loop_bodies_weighted_by_their_steps(tmp_path):
    """A scan's body kernels are tuning tasks, weighted by the steps they run; a tuned
    record for one applies when the model compiles (the body compiles with the database)."""
    host = Target.get("host")
    rng = np.random.default_rng(0)
    w, h0, xs = (rng.standard_normal(s).astype(np.float32) for s in ((32, 32), (4, 32), (9, 4, 32)))
    w *= 0.05   # a contracting recurrence: a summation order's rounding does not grow step by step

    def rnn(w, h0, xs):
        return mlc.scan(lambda h, x: (mlc.tanh(x + h @ w), h), h0, xs)[1]
    tasks = extract_tasks(mlc.trace(rnn, w, h0, xs), host)
    body = [t.kernel.kind for t in tasks if t.weight == 9]   # the step's product and the copy of its output
    assert sorted(body) == ["contraction", "injective"]
    path = str(tmp_path / "t.db")
    tune(mlc.trace(rnn, w, h0, xs), host, path, trials=6)
    exe = mlc.compile(rnn, w, h0, xs, db=path)
    assert exe.stats["tuned_kernels"] >= 1
    np.testing.assert_allclose(exe(w, h0, xs), rnn(w, h0, xs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target, registers", [("znver3", 16), ("neoverse-n1", 16), ("skylake-avx512", 32)])
def test_search_space_respects_the_register_budget(target, registers):
    t = Target.get(target)
    space = SearchSpace(_kernel(64), t)
    pairs = {(c["rows"], c["vectors"]) for c in space.configs}
    assert pairs == {(r, v) for r in ROWS for v in VECTORS if r * v + v + 1 <= registers}
    default = default_knobs(space.kernel, t)
    assert (default["rows"], default["vectors"]) in pairs
    assert len(space) == len(space.configs) > 0
    assert len({json.dumps(c, sort_keys=True) for c in space.configs}) == len(space)
    assert all(set(c) == set(space.names) for c in space.configs)
    ew = extract_tasks(mlc.trace(lambda x: mlc.tanh(x) * 2.0, np.ones((8, 8), np.float32)), t)[0].kernel
    assert sorted(c["parallel"] for c in SearchSpace(ew, t).configs) == [0, 1]   # no tile knobs without a reduction
    assert all(set(c) == {"parallel"} for c in SearchSpace(ew, t).configs)


def test_cost_model_ranks_by_the_learned_feature():
    rng = np.random.default_rng(0)
    n = len(FEATURES)

    def feats(v):
        f = rng.uniform(0, 1, n)
        f[3] = v
        return f

    m = CostModel()
    for _ in range(MIN_TRAIN - 1):
        v = rng.uniform(0, 4)
        m.add(feats(v), float(np.exp(v)))   # relative time grows with feature 3
    assert m.predict([feats(1.0)]) is None   # too few samples to trust
    for _ in range(60):
        v = rng.uniform(0, 4)
        m.add(feats(v), float(np.exp(v)))
    pred = m.predict([feats(v) for v in (3.5, 0.2, 2.0, 1.0)])
    assert pred is not None and len(pred) == 4
    assert list(np.argsort(pred)) == [1, 3, 2, 0]


def test_cli_tune_reports_the_model_end_to_end(tmp_path, capsys):
    assert main(["tune", "mlp", "--trials", "8", "--db", str(tmp_path / "t.db"), "--no-live"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("end to end on this machine"))
    assert "default schedules" in line and "with the records" in line and line.endswith("x)")


def test_a_time_budget_alone_is_not_capped_by_the_default_trial_count(tmp_path, monkeypatch):
    from mlc.tune import tuner as tuner_module
    from mlc.tune.tuner import DEFAULT_TRIALS, TuneError, trial_limit
    assert trial_limit(None, None) == DEFAULT_TRIALS == 200
    assert trial_limit(None, 30.0) == float("inf")     # the time is the limit
    assert trial_limit(50, 30.0) == 50                   # both: whichever comes first
    assert trial_limit(50, None) == 50
    # what `mlc tune` hands the tuner, and what it announces, without tuning anything
    seen = []

    def planned(graph, target, db, trials, time_budget, **kw):
        seen.append((trials, time_budget))
        raise TuneError("planned only")

    monkeypatch.setattr(tuner_module, "tune", planned)
    db = str(tmp_path / "t.db")
    for argv, plan, line in [(["--time-budget", "30"], (None, 30.0), "up to 30 s,"),
                             (["--time-budget", "30", "--trials", "7"], (7, 30.0), "up to 7 trials or 30 s,"),
                             ([], (None, None), "up to 200 trials,")]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit, match="mlc tune: planned only"):
            main(["tune", "gelu", "--db", db, "--no-live", *argv])
        assert seen.pop() == plan and line in out.getvalue(), out.getvalue()


def test_progress_line_without_a_trial_limit():
    from mlc.tune.progress import summary_line

    class T:
        trials, started, default_latency, estimated_latency = 12, time.monotonic(), 2e-3, 1e-3

    assert summary_line(T, float("inf")).startswith("trials 12  ")
    assert summary_line(T, 200).startswith("trials 12/200  ")
