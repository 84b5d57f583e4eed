"""The GPU search space (mlc.tune.gpu_space) and `mlc tune --target cuda`: every
candidate is a legal launch, a covering sample of each kernel's space assembles with
ptxas for sm_80 and sm_90 and computes the numpy result in the CPU emulation
(MLC_CUDA_EMULATE=1); emulated tuning records are kept apart from GPU measurements;
without a device, tuning for a cuda target fails at once saying what is missing."""
import os

import numpy as np
import pytest

import mlc
from mlc.cli import main
from mlc.codegen.nvptx import MAX_SHARED, assemble, find_ptxas, kernels_of
from mlc.codegen.cross import ToolchainNotFound
from mlc.driver import Compiled
from mlc.ir import loop as L
from mlc.passes.loops import lower_loops
from mlc.schedule.database import TuningDB, best_schedule, record_key, schedule_hash, workload_key
from mlc.schedule.gpu import KNOBS, check_knobs, gpu_schedule
from mlc.schedule.primitives import ScheduleError
from mlc.target import Target
from mlc.tune.gpu_space import GpuSearchSpace
from mlc.tune.measure import KernelBuild, build_gpu_kernel, build_kernel, run_build
from mlc.tune.tuner import extract_tasks

SM90, SM80 = Target.get("cuda-sm90"), Target.get("cuda-sm80")


@pytest.fixture(autouse=True)
def emulate(monkeypatch):
    monkeypatch.setenv("MLC_CUDA_EMULATE", "1")


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _normalize(a, m):
    return a - m.max(a, axis=-1, keepdims=True)   # softmax's first step: a row max read by an elementwise stage


CASES = {   # fn, inputs, the numpy result; small shapes: the emulation runs every block and thread serially
    "matmul": (lambda a, b: a @ b, (_rand(48, 40), _rand(40, 72, seed=1)), lambda a, b: a @ b),
    "batch_matmul_bias_relu": (lambda a, b, c: mlc.relu(a @ b + c), (_rand(2, 40, 24), _rand(2, 24, 48, seed=1),
                                                                      _rand(48, seed=2)),
                               lambda a, b, c: np.maximum(a @ b + c, 0)),
    # without softmax's exp, LLVM does not link libdevice into every candidate (slow); the
    # CLI test below tunes a real softmax
    "softmax_like": (lambda a: _normalize(a, mlc), (_rand(6, 300),), lambda a: _normalize(a, np)),
    "elementwise": (lambda a, b: mlc.relu(a * b + b), (_rand(30, 70), _rand(30, 70, seed=1)),
                    lambda a, b: np.maximum(a * b + b, 0)),
}
KNOBS_OF = {"matmul": {"tile_m", "tile_n", "reg", "k_tile"}, "batch_matmul_bias_relu": {"tile_m", "tile_n", "reg", "k_tile"},
            "softmax_like": {"threads", "row_threads"}, "elementwise": {"threads"}}


def _task(case, target=SM90):
    fn, args, _ = CASES[case]
    tasks = extract_tasks(mlc.trace(fn, *args), target)
    assert len(tasks) == 1, [t.name for t in tasks]
    return tasks[0]


def _func(space, config):
    return lower_loops(space.schedule(config).finalize())


def _covering_sample(space) -> list[dict]:
    """Every value of every knob at least once, the default, and the candidates with the
    most threads per block and the most shared memory: a few configs instead of dozens."""
    chosen = [{}]
    for name in space.names:
        for v in sorted({c[name] for c in space.configs}):
            if not any(c.get(name, KNOBS[name]) == v for c in chosen):
                # prefer a config that also covers values not chosen yet
                pick = max((c for c in space.configs if c[name] == v),
                           key=lambda c: sum(all(d.get(n, KNOBS[n]) != c[n] for d in chosen) for n in space.names))
                chosen.append(pick)
    threads = lambda c: ({**KNOBS, **c}["tile_m"] // {**KNOBS, **c}["reg"]) * ({**KNOBS, **c}["tile_n"] //
                                                                             {**KNOBS, **c}["reg"])
    if "reg" in space.names:
        chosen.append(max(space.configs, key=threads))
    chosen.append(max(space.configs, key=space.shared_bytes))
    out = []
    for c in chosen:
        if c not in out:
            out.append(c)
    return out


# ----------------------------------------------------------------------------- the space

@pytest.mark.parametrize("case", list(CASES))
def test_every_candidate_is_a_legal_launch_with_its_knobs(case):
    # every staged tile of the grid fits sm_80's smaller shared memory too: the same candidates
    assert _task(case, SM80).space.configs == _task(case, SM90).space.configs
    for target in (SM90,):
        task = _task(case, target)
        space = task.space
        assert isinstance(space, GpuSearchSpace)
        assert set(space.names) == KNOBS_OF[case]   # only the knobs the kernel's rules read
        assert len(space) > 1 and {} not in space.configs
        defaults = {n: KNOBS[n] for n in space.names}
        assert defaults in space.configs   # the default schedule is one of the candidates
        hashes = set()
        for c in space.configs:
            assert space.legal(c) is None
            sched = space.schedule(c)
            hashes.add(schedule_hash(sched.trace))
            plans = kernels_of(lower_loops(sched.finalize()), target)   # GpuCodegenError on an illegal launch
            for p in plans:
                assert p.block[0] * p.block[1] * p.block[2] <= 1024
                assert p.shared_bytes <= MAX_SHARED[target.arch]
            if "reg" in c:   # the contraction's launch: (tile_n/reg) x (tile_m/reg) threads, both tiles staged
                blocks = {p.block for p in plans}
                assert (c["tile_n"] // c["reg"], c["tile_m"] // c["reg"], 1) in blocks, (c, blocks)
                isz = 4
                assert max(p.shared_bytes for p in plans) == (c["tile_m"] + c["tile_n"]) * c["k_tile"] * isz
            elif "row_threads" in c:
                assert any(p.block[0] == min(c["row_threads"], 512) for p in plans)   # a 300-long row: <= 512
            if "threads" in c:
                total = int(np.prod(CASES[case][1][0].shape))
                assert any(p.block == (min(c["threads"], total), 1, 1) for p in plans), (c, plans)
        assert len(hashes) == len(space)   # every candidate is a different schedule


def test_knobs_outside_what_a_launch_can_run_are_refused():
    kernel = _task("matmul").kernel
    for knobs, msg in [({"reg": 3}, "reg=3 must divide the block tile 64x64"),
                       ({"tile_m": 128, "tile_n": 128, "reg": 2}, "make 4096 threads per block: at most 1024"),
                       ({"threads": 2048}, "threads=2048: a block has at most 1024 threads"),
                       ({"row_threads": 48}, "row_threads must be a power of two in [32, 1024], got 48"),
                       ({"tile": 64}, "unknown GPU schedule knob(s) tile"),
                       ({"k_tile": 0}, "k_tile must be a positive integer, got 0")]:
        with pytest.raises(ScheduleError, match=msg.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            gpu_schedule(kernel, SM90, knobs)
    assert check_knobs({}) == KNOBS
    # a tiny shared-memory limit leaves out the candidates whose staged tiles exceed it
    space = _task("matmul").space
    space.shared_limit = 8 << 10
    big = {"tile_m": 128, "tile_n": 64, "reg": 4, "k_tile": 32}
    assert space.legal(big) == f"{(128 + 64) * 32 * 4} bytes of shared memory per block: sm_90 allows 8192"


# ----------------------------------------------------------------------------- a sample: ptxas and the emulation

def _ptxas():
    try:
        return find_ptxas()
    except ToolchainNotFound as e:
        pytest.skip(f"ptxas is not installed: {e}")


@pytest.mark.parametrize("case", list(CASES))
def test_sampled_candidates_assemble_for_sm80_and_sm90(case):
    _ptxas()
    for target in (SM80, SM90):
        space = _task(case, target).space
        for c in _covering_sample(space):
            build = build_gpu_kernel(_func(space, c), target)
            assert build.is_gpu and build.launches
            assert assemble(build.object, target.arch)[:4] == b"\x7fELF", (target.arch, c)


@pytest.mark.parametrize("case", list(CASES))
def test_sampled_candidates_compute_the_numpy_result_under_emulation(case):
    fn, args, ref = CASES[case]
    want = ref(*args)
    space = _task(case).space
    sample = _covering_sample(space)
    assert len(sample) >= 3
    for c in sample:
        res = run_build(build_kernel(_func(space, c), SM90, emulate=True), args, repeat=1, min_repeat_ms=0)
        assert res.error is None
        np.testing.assert_allclose(res.outputs[0], want, rtol=2e-5, atol=2e-5, err_msg=str(c))


def test_gpu_build_header_round_trips_and_bad_launches_are_refused():
    space = _task("softmax_like").space
    build = build_gpu_kernel(_func(space, {}), SM90)
    again = KernelBuild.from_header(build.header(), build.object)
    assert again == build and again.is_gpu and len(again.launches) == 2   # the row max, the subtraction
    h = build.header()
    h["launches"] = [{**h["launches"][0], "args": [["param", 0]]}]
    with pytest.raises(ValueError, match="arguments live in input, output or workspace slots"):
        KernelBuild.from_header(h, build.object)


# ----------------------------------------------------------------------------- mlc tune --target cuda-sm90

def _onnx_model(path):
    """x[16, 32] @ W + b, relu, softmax: a contraction with an epilogue, then a kernel of row reductions."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((32, 24)) * 0.2).astype(np.float32)
    b = (rng.standard_normal(24) * 0.1).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("Softmax", ["r"], ["y"], axis=-1)]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 24])],
                          initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    import onnx
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return lambda x: _softmax(np.maximum(x @ w + b, 0))


def test_cli_tunes_under_emulation_and_compile_uses_the_recorded_knobs(tmp_path, capsys):
    model, db = str(tmp_path / "tiny.onnx"), str(tmp_path / "gpu.db")
    reference = _onnx_model(model)
    assert main(["tune", model, "--target", "cuda-sm90", "--trials", "6", "--db", db, "--no-live"]) == 0
    out = capsys.readouterr().out
    assert "warning: MLC_CUDA_EMULATE=1: the cuda-sm90 candidates run in the CPU emulation" in out
    assert "times do not rank GPU speed" in out
    assert "stopped: trial budget reached. 6 trials" in out
    emulated = record_key(SM90, True)
    from mlc.cli import _load_graph
    graph = _load_graph(model, None, "tune")
    tasks = extract_tasks(graph, SM90)
    # the contraction's knobs; softmax's threads (rows of 24 are too short for a block per row)
    assert sorted(len(t.space.names) for t in tasks) == [1, 4]
    with TuningDB(db) as d:
        assert d.count(target_key=SM90.key) == 0   # nothing stored as a GPU measurement
        assert d.count(target_key=emulated) == 6
        recs = [r for t in tasks for r in d.records(t.key, emulated)]
        assert len(recs) == 6 and all(r.ok for r in recs), [r.error for r in recs]
        # a device compile never reads emulated records; an emulated compile does
        mm = next(t for t in tasks if "reg" in t.space.names)
        assert best_schedule(d, mm.kernel, SM90) is None
        assert best_schedule(d, mm.kernel, SM90, emulated=True) is not None
        # make a known non-default candidate the best, so the compile's loops must show its knobs
        knobs = {"tile_m": 32, "tile_n": 32, "reg": 2, "k_tile": 8}
        d.add(mm.key, emulated, gpu_schedule(mm.kernel, SM90, knobs).trace, [1e-9], None, str(mm.kernel))
    x = _rand(16, 32, seed=3)
    tuned = mlc.compile(graph, target="cuda-sm90", db=db)
    assert tuned.stats["tuned_kernels"] == 2
    np.testing.assert_allclose(tuned(x), reference(x), rtol=1e-5, atol=1e-6)
    ir, ir0 = tuned.ir("loop"), Compiled(graph, SM90).text("loop")   # (the default schedules, not compiled)
    assert ir != ir0
    # 16 x 16 threads with 2 x 2 registers each, the tiles staged 8 deep: 32x8 and 8x32 floats in shared memory
    for text in ("alloc acc: f32[2,2] local", "alloc A_shared: f32[32,8] shared", "alloc B_shared: f32[8,32] shared"):
        assert text in ir and text not in ir0, text
    assert "alloc acc: f32[4,4] local" in ir0
    func = next(f for f in L.parse_all(ir) if f.name == mm.name)
    assert [p.block for p in kernels_of(func, SM90)] == [(16, 16, 1)]
    with TuningDB(db) as d:   # a record measured on a device comes before the emulated ones
        d.add(mm.key, SM90.key, gpu_schedule(mm.kernel, SM90, {"tile_m": 64, "tile_n": 32}).trace, [1e-3])
        gpu = best_schedule(d, mm.kernel, SM90, emulated=True)
        assert gpu == gpu_schedule(mm.kernel, SM90, {"tile_m": 64, "tile_n": 32}).trace


def _has_device() -> bool:
    from mlc.runtime.cuda import CudaUnavailable, cupy_module
    try:
        cupy_module()
        return True
    except CudaUnavailable:
        return False


def test_without_a_device_tuning_for_cuda_fails_at_once(tmp_path, monkeypatch):
    if _has_device():
        pytest.skip("a CUDA device is present: tuning for cuda measures on it")
    monkeypatch.delenv("MLC_CUDA_EMULATE")
    model, db = str(tmp_path / "tiny.onnx"), tmp_path / "gpu.db"
    _onnx_model(model)
    for target in ("cuda-sm90", "cuda"):
        with pytest.raises(SystemExit) as e:
            main(["tune", model, "--target", target, "--trials", "4", "--db", str(db), "--no-live"])
        msg = str(e.value)
        assert msg.startswith(f"mlc tune: tuning for {target} times every candidate on a CUDA device, and none is "
                              "usable here: "), msg
        assert f"MLC_CUDA_EMULATE=1 runs every {target} candidate in the CPU emulation instead" in msg
        assert not db.exists()
    from mlc.tune.tuner import TuneError, tune
    with pytest.raises(TuneError, match="none is usable here"):
        tune(mlc.trace(CASES["matmul"][0], *CASES["matmul"][1]), "cuda-sm90", str(db), trials=2)
    assert not db.exists()


@pytest.mark.skipif(not _has_device(), reason="needs a CUDA device and CuPy (cupy_module)")
def test_tuning_on_the_device_stores_checked_gpu_measurements(tmp_path, monkeypatch):
    monkeypatch.delenv("MLC_CUDA_EMULATE")
    from mlc.tune.tuner import tune
    fn, args, ref = CASES["batch_matmul_bias_relu"]
    db = str(tmp_path / "dev.db")
    tuner = tune(mlc.trace(fn, *args), "cuda", db, trials=8)
    target = Target.get("cuda")
    with TuningDB(db) as d:
        assert d.count(target_key=record_key(target, True)) == 0
        recs = d.records(tuner.tasks[0].key, target.key)
        assert len(recs) == 8 and all(r.ok for r in recs), [r.error for r in recs]
    exe = mlc.compile(fn, *args, target="cuda", db=db)
    got = exe(*args)
    np.testing.assert_allclose(got.get() if hasattr(got, "get") else got, ref(*args), rtol=1e-4, atol=1e-4)
    assert workload_key(tuner.tasks[0].kernel, target) == tuner.tasks[0].key
    assert os.path.exists(db)


# ----------------------------------------------------------------------------- the device measurement, on a fake CuPy

class _Ptr:
    def __init__(self, base, offset=0):
        self.base, self.offset = base, offset

    def __add__(self, n):
        return _Ptr(self.base, self.offset + n)


class _FakeCupy:
    """Just enough of CuPy for ``CudaCode`` and ``run_gpu_build``: arrays are numpy
    arrays, each launch and event is logged, events read a clock that every launch
    advances by 1 ms, so the times the measurement reports are known."""

    uint8, float32 = np.uint8, np.float32

    def __init__(self):
        self.log, self.clock = [], 0.0
        fake = self

        class Arr(np.ndarray):
            @property
            def data(self):
                return _Ptr(self)

            def fill(self, v):
                fake.log.append(("fill", float(v)))
                np.ndarray.fill(self, v)

        class Kernel:
            def __init__(self, name):
                self.name = name

            def __call__(self, grid, block, args, shared_mem=0):
                fake.clock += 1.0
                fake.log.append(("launch", self.name, tuple(grid), tuple(block), args, shared_mem))

        class Module:
            def __init__(self, path):
                with open(path) as f:
                    self.ptx = f.read()

            def get_function(self, name):
                assert f".entry {name}(" in self.ptx
                return Kernel(name)

        class Event:
            def record(self):
                self.t = fake.clock
                fake.log.append(("event",))

            def synchronize(self):
                pass

        class Device:
            id = 0

            def synchronize(self):
                pass

        class runtime:
            getDeviceCount = staticmethod(lambda: 1)
            getDeviceProperties = staticmethod(lambda i: {"l2CacheSize": 1 << 20})

        class cuda:
            pass
        cuda.runtime, cuda.Event, cuda.Device = runtime, Event, Device
        cuda.get_elapsed_time = staticmethod(lambda a, b: b.t - a.t)
        self.cuda, self.RawModule, self.Arr = cuda, Module, Arr

    def asarray(self, x):
        return np.array(x).view(self.Arr)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype).view(self.Arr)

    def empty(self, shape, dtype):
        return self.zeros(shape, dtype)

    def ndarray(self, shape, dtype, memptr):
        return ("workspace", memptr.offset)

    def asnumpy(self, x):
        return np.array(x)


@pytest.mark.parametrize("flush", [True, False])
def test_device_measurement_launches_the_table_and_times_with_events(monkeypatch, flush):
    fake = _FakeCupy()
    monkeypatch.setitem(__import__("sys").modules, "cupy", fake)
    fn, args, _ = CASES["softmax_like"]
    space = _task("softmax_like").space
    build = build_gpu_kernel(_func(space, {"row_threads": 64, "threads": 128}), SM90)
    res = run_build(build, args, repeat=3, min_repeat_ms=5.0, flush=flush)
    assert res.error is None and [o.shape for o in res.outputs] == [a.shape for a in args]
    launches = [e for e in fake.log if e[0] == "launch"]
    n = len(build.launches)
    for got, want in zip(launches, build.launches * (len(launches) // n)):
        assert got[1:4] == (want["kernel"], tuple(want["grid"]), tuple(want["block"]))
        assert got[5] == want["dynamic_shared_bytes"]
        for a, (space_, i) in zip(got[4], want["args"]):
            if space_ == "input":
                np.testing.assert_array_equal(a, args[i])
    assert [e[3] for e in launches[:n]] == [(64, 1, 1), (128, 1, 1)]   # the knobs' blocks
    if flush:
        # the warm-up call, then per timing: the cache overwritten, an event, the call, an event
        assert [e[0] for e in fake.log[n:]] == ["fill", "event", *["launch"] * n, "event"] * 3
        assert res.times == [n * 1e-3] * 3     # one fake millisecond per launch, in seconds
    else:
        # back-to-back calls until one timing lasts 5 ms: 3 calls of 2 launches (6 ms), per call 2 ms
        assert res.times == [n * 1e-3] * 3 and len(launches) > 3 * n
