"""The JIT and the runtime: caching (in memory and on disk), argument checking,
zero-copy and copying inputs, threads, and the MLP end to end."""
import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

import mlc
from mlc.examples import mlp, mlp_inputs, mlp_numpy
from mlc.runtime import cache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repository


def f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_mlp_jit_matches_numpy():
    inputs = mlp_inputs()
    y = mlc.jit(mlp)(*inputs)
    ref = mlp_numpy(*inputs)
    assert y.dtype == np.float32 and y.shape == (32, 10)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-7)


def _parallel_host():
    """This machine as a target with 4 cores: parallel loops even on a one-core host."""
    import dataclasses
    return dataclasses.replace(mlc.Target.get("host"), cores=4)


def test_mlp_ir_prints_at_every_level():
    exe = mlc.compile(mlp, *mlp_inputs(), target=_parallel_host())
    graph, tensor, loop, llvm = (exe.ir(level) for level in ("graph", "tensor", "loop", "llvm"))
    assert graph.startswith("graph @mlp(%x: f32[32,784]") and "softmax(%3) {axis=1}" in graph
    assert "kernel @matmul_add_relu_0(A: f32[32,784], B: f32[784,128], C: f32[128]) -> f32[32,128]" in tensor
    assert "T0[i, j] = sum[k < 784] A[i, k] * B[k, j]" in tensor and "out[i, j] = max(T0[i, j] + C[j], 0.0)" in tensor
    assert "func @matmul_add_relu_0(" in loop and "vector jiv in [0," in loop and "parallel io in" in loop
    # the bias and relu are applied to the accumulators as they are stored
    assert "= max(acc[i1, j1o * 8 + j1v] + C[" in loop or "= max(acc[i1, j1o * 16 + j1v] + C[" in loop
    assert "define void @\"mlc_entry\"" in llvm and "fmul contract <" in llvm
    assert "GOMP_parallel" in llvm
    with pytest.raises(ValueError, match="unknown IR level"):
        exe.ir("bogus")


def test_jit_caches_per_signature():
    calls = []

    @mlc.jit
    def f(x, scale):
        calls.append(1)
        return x * scale

    x = f32(3)
    np.testing.assert_allclose(f(x, 2.0), x * 2)
    np.testing.assert_allclose(f(x, 2.0), x * 2)
    assert len(calls) == 1                       # traced once
    np.testing.assert_allclose(f(x, 3.0), x * 3)  # a new static scalar retraces
    np.testing.assert_allclose(f(f32(4), 3.0), f32(4) * 3)  # a new shape retraces
    np.testing.assert_allclose(f(x.astype(np.float64), 3.0), x.astype(np.float64) * 3)
    assert len(calls) == 4


def test_jit_calls_of_plain_arrays_take_the_cached_executable():
    calls = []

    @mlc.jit
    def f(x, y):
        calls.append(1)
        return x + y

    a, b = f32(2, 3), f32(3)
    for _ in range(3):
        np.testing.assert_allclose(f(a, b), a + b)
    assert len(calls) == 1 and len(f._fast) == 1
    big = a.astype(">f4")   # the same shape and kind, another byte order: its own entry, converted
    np.testing.assert_allclose(f(big, b), a + b)
    np.testing.assert_allclose(f(a[:, ::-1], b), a[:, ::-1] + b)   # not contiguous: converted by the executable
    with pytest.raises(TypeError, match="expects f32"):
        f.lower(a, b).call_flat((a.astype(np.float64), b))


def test_wrong_shape_or_dtype_at_call_time():
    exe = mlc.compile(lambda x, w: x @ w, f32(2, 3), f32(3, 4))
    with pytest.raises(TypeError, match=r"argument 'w' expects f32\[3,4\].*got float32 array of shape \(3, 5\)"):
        exe(f32(2, 3), f32(3, 5))
    with pytest.raises(TypeError, match=r"argument 'x' expects f32\[2,3\] \(numpy float32.*got float64 array"):
        exe(f32(2, 3).astype(np.float64), f32(3, 4))
    with pytest.raises(TypeError, match=r"takes 2 array argument\(s\) \(x, w\), got 1"):
        exe(f32(2, 3))
    with pytest.raises(TypeError, match="argument 'x' must be an array, got object"):
        exe(object(), f32(3, 4))


def test_non_contiguous_input_is_copied_not_misread():
    base = f32(6, 8)
    exe = mlc.compile(lambda x: x * 2.0, base[:, :4])
    views = [base[:, :4], base[::-1, 2:6], np.asfortranarray(base[:, :4]), base.T.T[:, 3:7]]
    for view in views:
        assert view.shape == (6, 4)
        np.testing.assert_array_equal(exe(view), view * 2)
    assert not views[0].flags.c_contiguous and not views[1].flags.c_contiguous


def test_big_endian_input_is_converted_not_refused():
    # the message used to contradict itself ("expects f32[4] ... got float32 array of shape (4,)")
    exe = mlc.compile(lambda x: x * 2.0 + 1.0, np.zeros(4, np.float32))
    be = np.arange(4, dtype=">f4")
    np.testing.assert_array_equal(exe(be), be * 2 + 1)
    np.testing.assert_array_equal(mlc.jit(lambda x: x - 1.0)(be[::-1]), be[::-1] - 1)
    with pytest.raises(TypeError, match=r"argument 'x' expects f32\[4\] .*got float64 \(big-endian\) array"):
        exe(np.arange(4, dtype=">f8"))


def test_sizes_past_int64_are_refused_by_name():
    x = np.ones(1, np.float32)
    # the element count used to overflow: "cannot broadcast f32[1] to [2147483648, 2147483648, 4]"
    with pytest.raises(mlc.TraceError, match=r"broadcast_to: the result f32\[2147483648, 2147483648, 4\] would hold "
                                             r"18446744073709551616 elements \(73786976294838206464 bytes\), "
                                             r"more than fits in memory"):
        mlc.trace(lambda x: mlc.broadcast_to(x, (2 ** 31, 2 ** 31, 4)), x)
    with pytest.raises(mlc.TraceError, match=r"broadcast_to: the result f32\[4611686018427387904\] would hold .* "
                                             r"more than"):
        mlc.trace(lambda x: mlc.broadcast_to(x, (2 ** 62,)), x)   # 2**62 elements fit int64, their bytes do not
    # every op's result is checked in one place (the element count used to wrap and give
    # misleading messages: "cannot be broadcast", "-9223372036854775808 elements")
    for op, fn in [("tile", lambda x: mlc.tile(x, (2 ** 62,)) * 2.0), ("tile", lambda x: mlc.reshape(
            mlc.tile(x, (2 ** 61,)), (-1, 2))), ("pad", lambda x: mlc.pad(x, pads=(0, 2 ** 62)))]:
        with pytest.raises(mlc.TraceError, match=op + r": the result f32\[\d+\] would hold \d+ elements .* more than "
                                                  r"fits in memory"):
            mlc.trace(fn, np.ones(4, np.float32))

    def two_live(x):   # 2**62 bytes each; two of them live at once
        y = mlc.broadcast_to(x, (2 ** 60,))
        z = mlc.exp(y)
        return mlc.sum(z) + mlc.sum(mlc.exp(z) * y)
    with pytest.raises(ValueError, match=r"the workspace would need \d+ bytes for the intermediate values of "
                                         r"two_live, more than fits in memory"):
        mlc.compile(two_live, x)


def test_dlpack_input_zero_copy():
    class DLPackOnly:
        """An array from another library: only __dlpack__ / __dlpack_device__."""

        def __init__(self, a):
            self.a = a

        def __dlpack__(self, **kw):
            return self.a.__dlpack__(**kw)

        def __dlpack_device__(self):
            return self.a.__dlpack_device__()

    x = f32(5, 3)
    exe = mlc.compile(lambda x: mlc.exp(x), x)
    np.testing.assert_allclose(exe(DLPackOnly(x)), np.exp(x), rtol=1e-6)


def test_outputs_are_fresh_arrays_and_tuples_round_trip():
    x = f32(4)
    exe = mlc.compile(lambda x: (x + 1.0, x, x), x)
    a, b, c = exe(x)
    np.testing.assert_array_equal(a, x + 1)
    np.testing.assert_array_equal(b, x)
    assert b is not x and not np.shares_memory(b, c)


def test_constant_output_and_scalar_output():
    exe = mlc.compile(lambda x: (np.arange(4, dtype=np.int32), x.sum()), f32(3))
    a, s = exe(f32(3))
    np.testing.assert_array_equal(a, np.arange(4, dtype=np.int32))
    assert s.shape == () and np.isclose(s, f32(3).sum())


def test_concurrent_calls_from_threads():
    x = f32(256, 300)
    w = f32(300, 64, seed=1)
    exe = mlc.compile(lambda x, w: mlc.softmax(x @ w, axis=-1), x, w)
    want = exe(x, w)
    errors = []

    def worker(seed):
        xi = f32(256, 300, seed=seed)
        ref = exe(xi, w)
        for _ in range(5):
            if not np.array_equal(exe(xi, w), ref):
                errors.append(seed)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    np.testing.assert_array_equal(exe(x, w), want)


_SCRIPT = """
import numpy as np, mlc, time
from mlc.runtime import cache
x = np.linspace(-1, 1, 1000, dtype=np.float32)
exe = mlc.compile(lambda x: mlc.tanh(x) * 3.0 + x, x)
np.testing.assert_allclose(exe(x), np.tanh(x) * 3 + x, rtol=1e-5)
print(sum(len(f) for _, _, f in __import__("os").walk(cache.cache_dir())))
"""


def test_disk_cache_is_shared_between_processes(tmp_path):
    env = dict(os.environ, MLC_CACHE_DIR=str(tmp_path), PYTHONPATH=ROOT)
    first = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True)
    entries = {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _, fs in os.walk(tmp_path)
               for f in fs}
    # the kernel's object, the compiled graph and the sources' stamp (runtime.graph_cache)
    assert entries and all(e.endswith(".o") for e in entries)
    second = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True)
    assert first.stdout.strip() == second.stdout.strip() == str(len(entries))
    assert {e: os.stat(e).st_mtime_ns for e in entries} == entries   # reused, not rewritten


def test_corrupted_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("MLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("MLC_GRAPH_CACHE", "off")   # the kernel's entry only (test_graph_cache.py: whole graphs)
    x = np.linspace(0, 1, 50, dtype=np.float32)

    def f(x):
        return mlc.sqrt(x) + 1.0

    np.testing.assert_allclose(mlc.compile(f, x)(x), np.sqrt(x) + 1, rtol=1e-6)
    (entry,) = [os.path.join(d, n) for d, _, ns in os.walk(tmp_path) for n in ns]
    blob = bytearray(open(entry, "rb").read())
    blob[len(blob) // 2] ^= 0xFF                               # flip one byte of code
    open(entry, "wb").write(bytes(blob))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        exe = mlc.compile(f, x)
    assert any("corrupted" in str(m.message) for m in w)
    np.testing.assert_allclose(exe(x), np.sqrt(x) + 1, rtol=1e-6)
    assert cache.load(os.path.basename(entry)[:-2]) is not None   # rewritten whole

    open(entry, "wb").write(b"MLCOBJ01short")                    # truncated
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        np.testing.assert_allclose(mlc.compile(f, x)(x), np.sqrt(x) + 1, rtol=1e-6)
    assert any("corrupted" in str(m.message) for m in w)


def test_cache_entry_copied_under_another_key_is_not_served(tmp_path, monkeypatch):
    x = np.linspace(0, 1, 50, dtype=np.float32)

    def entry_of(fn, folder):   # the one entry compiling fn writes into an empty cache
        monkeypatch.setenv("MLC_CACHE_DIR", str(folder))
        monkeypatch.setenv("MLC_GRAPH_CACHE", "off")
        mlc.compile(fn, x)
        (entry,) = [os.path.join(d, n) for d, _, ns in os.walk(folder) for n in ns]
        return entry

    def plus(x):
        return x + 1.0

    def times(x):
        return x * 10.0

    plus_entry, times_entry = entry_of(plus, tmp_path / "a"), entry_of(times, tmp_path / "b")
    with open(plus_entry, "rb") as f:
        swapped = f.read()
    with open(times_entry, "wb") as f:   # a valid entry, but of another key
        f.write(swapped)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        exe = mlc.compile(times, x)
    assert any("corrupted (damaged, or written for another key)" in str(m.message) for m in w)
    np.testing.assert_allclose(exe(x), x * 10, rtol=1e-6)
    with open(times_entry, "rb") as f:
        assert f.read() != swapped                               # rebuilt with its own code
    key = os.path.basename(times_entry)[:-2]
    assert cache.load(key) is not None and cache.load(os.path.basename(plus_entry)[:-2]) is None


def test_cache_can_be_disabled(tmp_path, monkeypatch):
    monkeypatch.setenv("MLC_CACHE_DIR", "off")
    assert cache.cache_dir() is None
    x = f32(3)
    np.testing.assert_allclose(mlc.compile(lambda x: x * x, x)(x), x * x)


def test_parallel_kernels_use_threads_and_agree_with_serial(monkeypatch):
    x = f32(512, 512)
    w = f32(512, 256, seed=1)
    exe = mlc.compile(lambda x, w: mlc.relu(x @ w), x, w, target=_parallel_host())
    assert "GOMP_parallel" in exe.ir("llvm")
    np.testing.assert_allclose(exe(x, w), np.maximum(x @ w, 0), rtol=2e-4, atol=2e-4)


def test_first_calls_from_many_threads_compile_safely():
    @mlc.jit
    def f(x):
        return mlc.tanh(x) @ x.T

    xs = [f32(16, 8 + n, seed=n) for n in range(4)]     # four signatures, compiled concurrently
    results, errors = {}, []

    def worker(n):
        try:
            results[n] = f(xs[n])
        except Exception as e:   # collected and reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for n, x in enumerate(xs):
        np.testing.assert_allclose(results[n], np.tanh(x) @ x.T, rtol=1e-5, atol=1e-6)


def test_median_seconds_counts_calls_and_refuses_no_repeats():
    from mlc.runtime.timing import median_seconds
    calls = []
    t = median_seconds(lambda: calls.append(1), 5, warmup=3)
    assert len(calls) == 8 and t >= 0.0
    with pytest.raises(ValueError, match="repeat must be >= 1"):
        median_seconds(lambda: None, 0)
