"""exe.profile: per-kernel times from the compiled code's own clock, the Chrome trace,
the roofline picture, and `mlc run --profile`."""
import json
import os

import numpy as np
import onnx
import pytest

import mlc
from mlc import codegen
from mlc.cli import main
from mlc.examples import mlp, mlp_inputs
from mlc.ir.cost import kernel_cost
from mlc.ir.tensor import Placeholder, compute, reduce, Kernel
from mlc.ir.types import float32
from mlc.runtime.executable import PROFILE_MAX_THREADS

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


@pytest.fixture(scope="module")
def mlp_profile():
    exe = mlc.compile(mlp, *mlp_inputs())
    return exe, exe.profile(*mlp_inputs(), runs=3, warmup=1)


def test_every_fused_kernel_is_reported_once_with_its_ops(mlp_profile):
    exe, report = mlp_profile
    fused = exe._compiled.fused
    assert [k.name for k in report.kernels] == fused.kernel_names()
    assert [k.info.ops for k in report.kernels] == [[n.op for n in g] for g in fused.groups]
    assert all(len(k.times) == 3 and all(t > 0 for t in k.times) for k in report.kernels)
    assert len(report.model_times) == 3 and report.model_time > 0
    assert all(k.info.schedule == "default" for k in report.kernels)
    text = str(report)
    assert "matmul_add_relu_0" in text and "matmul add relu" in text and "kernels' sum" in text


def test_kernel_records_follow_each_other_within_the_run(mlp_profile):
    exe, report = mlp_profile
    calls = sorted((s, e) for lane, n, s, e in report.spans if lane == 0)
    assert len(calls) == len(report.kernels)
    for (s0, e0), (s1, e1) in zip(calls, calls[1:]):
        assert s0 <= e0 <= s1 <= e1   # one after the other on the calling thread
    by_call = {n: (s, e) for lane, n, s, e in report.spans if lane == 0}
    workers = [(n, s, e) for lane, n, s, e in report.spans if lane > 0]
    for n, s, e in workers:   # a thread's share of a parallel loop lies inside its kernel call
        assert by_call[n][0] <= s <= e <= by_call[n][1]
    # the kernels' sum is the run's time less the gaps between calls, which the entry fills with nothing
    assert sum(e - s for s, e in calls) <= calls[-1][1] - calls[0][0]


def test_flops_and_bytes_come_from_the_tensor_level():
    m, k, n = 8, 16, 4
    a, b = Placeholder("A", (m, k), float32), Placeholder("B", (k, n), float32)
    out = compute((m, n), lambda i, j: reduce("sum", [k], lambda r: a[i, r] * b[r, j]), "out")
    cost = kernel_cost(Kernel("mm", [a, b], [out], [out], kind="reduction"))
    assert cost.flops == 2 * m * n * k   # a multiply and an add per reduced element
    assert cost.bytes == 4 * (m * k + k * n + m * n)


def test_chrome_trace_is_trace_event_json(mlp_profile, tmp_path):
    _, report = mlp_profile
    path = tmp_path / "trace.json"
    report.to_chrome_trace(path)
    events = json.loads(path.read_text())["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    assert {e["name"] for e in slices if e["tid"] == 0} == {k.name for k in report.kernels}
    assert all(e["dur"] >= 0 and e["ts"] >= 0 and e["pid"] == 0 for e in slices)
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names[0] == "calling thread" and set(names) == {e["tid"] for e in slices}


def test_roofline_is_drawn(mlp_profile, tmp_path):
    pytest.importorskip("matplotlib")
    _, report = mlp_profile
    report.roofline(tmp_path / "roofline.png")
    assert (tmp_path / "roofline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_normal_build_carries_no_profiling():
    exe = mlc.compile(lambda x: mlc.relu(x) * 2.0, np.ones((4, 4), np.float32))
    with pytest.raises(ValueError, match="not built for profiling"):
        exe._code.profile_records(1)
    c = exe._compiled
    assert "clock_gettime" not in c.llvm_module
    import dataclasses
    profiled = codegen.source(dataclasses.replace(c.program, profile=True), c.target)
    assert "clock_gettime" in profiled and f"[{2 * len(c.plan.calls) * PROFILE_MAX_THREADS} x i64]" in profiled


def test_a_loaded_library_says_where_to_profile(tmp_path):
    x = np.ones((4, 4), np.float32)
    mlc.compile(lambda x: x + 1.0, x).export(tmp_path / "m.so")
    with pytest.raises(ValueError, match="loaded from a library"):
        mlc.load(tmp_path / "m.so").profile(x)


def test_runs_must_be_positive():
    x = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="runs must be >= 1"):
        mlc.compile(lambda x: x + 1.0, x).profile(x, runs=0)


def test_cli_run_profiles_a_model(tmp_path, capsys):
    model = os.path.join(LIGHT, "light_squeezenet.onnx")
    trace = tmp_path / "t.json"
    assert main(["run", model, "--random-inputs", "--profile", "--runs", "2", "--trace", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "profile of" in out and "GFLOP/s" in out and "conv_add_relu_0" in out
    assert json.loads(trace.read_text())["traceEvents"]


def test_a_target_file_gives_the_ceilings(tmp_path):
    from mlc.driver import machine_ceilings
    from mlc.target import Target
    spec = {"name": "fast-host", "base": "znver3", "peak_gflops": 1000, "bandwidth_gbs": 50.5}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(spec))
    t = Target.from_file(str(path))
    assert (t.peak_gflops, t.bandwidth_gbs) == (1000.0, 50.5)
    assert Target.from_json(t.to_json()) == t and machine_ceilings(t) == (1000.0, 50.5)
    path.write_text(json.dumps(dict(spec, peak_gflops=-1)))
    with pytest.raises(ValueError, match="'peak_gflops' must be a number >= 0"):
        Target.from_file(str(path))


def test_a_library_built_with_profile_times_its_kernels(tmp_path, capsys):
    import ctypes
    lib = tmp_path / "mlp.so"
    assert main(["compile", "mlp", "-o", str(lib), "--profile"]) == 0
    exe = mlc.load(lib)
    names = [k["name"] for k in exe.metadata["profile"]]
    assert names == ["matmul_add_relu_0", "matmul_1", "softmax_2"]
    report = exe.profile(*mlp_inputs(), runs=2, warmup=1, ceilings=(100.0, 10.0))
    assert [k.name for k in report.kernels] == names and report.peak_gflops == 100.0
    assert all(k.median > 0 for k in report.kernels) and report.kernels[0].info.flops == 2 * 32 * 784 * 128 + 2 * 32 * 128
    # the C API hands the records back (mlc.load maps a private copy: its functions, not the file's)
    c = exe._code.lib
    c.mlc_model_profile.restype = ctypes.c_size_t
    c.mlc_model_profile.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.POINTER(ctypes.c_int64))]
    records = ctypes.POINTER(ctypes.c_int64)()
    n = c.mlc_model_profile(ctypes.c_void_p(exe._code.handle), ctypes.byref(records))
    assert n == 3 and all(0 < records[2 * i] <= records[2 * i + 1] for i in range(3))
    assert records[1] <= records[2] and records[3] <= records[4]
    capsys.readouterr()
    assert main(["run", str(lib), "--random-inputs", "--profile", "--runs", "2"]) == 0
    assert "softmax_2" in capsys.readouterr().out
    # a library built without --profile has no records, and says how to get them
    plain = tmp_path / "plain.so"
    assert main(["compile", "mlp", "-o", str(plain)]) == 0
    with pytest.raises(ValueError, match="built without profiling: export it with `mlc compile MODEL -o LIB.so --profile`"):
        mlc.load(plain).profile(*mlp_inputs())
    with pytest.raises(SystemExit, match="--profile builds a model library"):
        main(["compile", "mlp", "--profile"])
