"""The fast call of Executables, jitted functions and loaded model libraries: the same
results and the same errors as the full path for every kind of argument, the fast call
taken only where it checks everything (plain arrays, no in-place updates, no bounds
checks), and never a result for an argument it did not check."""
import os

import numpy as np
import pytest

import mlc
from mlc.runtime import fastcall
from mlc.runtime.executable import MISS


def f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _error(fn, *args) -> str:
    with pytest.raises(TypeError) as e:
        fn(*args)
    return str(e.value)


def test_the_layouts_the_fast_call_reads_are_verified_here():
    assert fastcall.helper() is not None   # CPython and NumPy as this environment has them


def test_jit_fast_call_matches_numpy_and_follows_new_shapes_and_dtypes():
    f = mlc.jit(lambda a, b: a * b + a)
    a, b = f32(4), f32(4, seed=1)
    for _ in range(3):   # the first call compiles, the next ones take the hot path
        np.testing.assert_allclose(f(a, b), a * b + a, rtol=1e-6)
    assert f._hot is not None
    out1, out2 = f(a, b), f(a, b)
    assert out1 is not out2 and not np.shares_memory(out1, out2)   # a fresh output each call
    c, d = f32(2, 3, seed=2), f32(2, 3, seed=3)                     # another shape: another Executable
    np.testing.assert_allclose(f(c, d), c * d + c, rtol=1e-6)
    e, g = a.astype(np.float64), b.astype(np.float64)               # another dtype: compiled for it
    r = f(e, g)
    assert r.dtype == np.float64
    np.testing.assert_allclose(r, e * g + e, rtol=1e-12)
    np.testing.assert_allclose(f(a, b), a * b + a, rtol=1e-6)      # and back
    # same element count, other shape: never read as the (4,) one
    np.testing.assert_allclose(f(a.reshape(2, 2), b.reshape(2, 2)), (a * b + a).reshape(2, 2), rtol=1e-6)


def test_jit_fast_call_handles_every_kind_of_array_argument():
    f = mlc.jit(lambda a, b: a - b)
    a, b = f32(6, 4), f32(6, 4, seed=1)
    f(a, b)
    big = f32(12, 8, seed=2)
    cases = {
        "strided": (big[::2, ::2], b),
        "fortran": (np.asfortranarray(a), b),
        "big-endian": (a.astype(">f4"), b),
        "subclass": (a.view(type("Sub", (np.ndarray,), {})), b),
        "read-only": (np.frombuffer(a.tobytes(), np.float32).reshape(6, 4), b),
    }
    raw = np.zeros(a.nbytes + 1, np.uint8)
    unaligned = raw[1:].view(np.float32).reshape(6, 4)
    unaligned[...] = a
    assert not unaligned.flags.aligned
    cases["unaligned"] = (unaligned, b)
    for name, (x, y) in cases.items():
        np.testing.assert_array_equal(f(x, y), np.asarray(x, np.float32) - y, err_msg=name)


def test_executable_fast_call_gives_the_full_paths_errors():
    a, b = f32(4), f32(4, seed=1)
    exe = mlc.compile(lambda a, b: a + b, a, b)
    assert exe.fast_call() is not None
    np.testing.assert_array_equal(exe(a, b), a + b)
    for args in [(a.astype(np.float64), b), (a, b.reshape(2, 2)), (a[:3], b), (a,), (a, b, b),
                 (a.astype(np.int32), b), ("x", b)]:
        assert _error(exe, *args) == _error(exe.call_flat, list(args))
    assert _error(exe, a.astype(np.float64), b) == (
        "_lambda_(): argument 'a' expects f32[4] (numpy float32, shape (4,)), got float64 array of shape (4,)")
    assert _error(exe, a, b.reshape(2, 2)).endswith("got float32 array of shape (2, 2)")
    assert _error(exe, a) == "_lambda_() takes 2 array argument(s) (a, b), got 1"


def test_fast_call_misses_on_anything_it_does_not_check_exactly():
    a, b = f32(2, 3), f32(2, 3, seed=1)
    run = mlc.compile(lambda a, b: a + b, a, b).fast_call()
    np.testing.assert_array_equal(run((a, b)), a + b)
    for args in [(a.T.copy(), b), (a[:, ::1][::1], b[:1]), (np.asfortranarray(a), b), (a[:, ::-1], b),
                 (a.astype(">f4"), b), (a.view(np.int32), b), (a, b, b), (a,), (a.view(np.matrix), b),
                 (a.reshape(6), b), (a.reshape(1, 2, 3), b), ([[0.0] * 3] * 2, b)]:
        assert run(args) is MISS


def test_multiple_outputs_and_scalars_in_the_graph():
    x = f32(8)
    exe = mlc.compile(lambda x: (x * 2.0, x.sum(axis=0)), x)
    assert exe.fast_call() is not None
    y, s = exe(x)
    np.testing.assert_allclose(y, x * 2, rtol=1e-6)
    np.testing.assert_allclose(s, x.sum(), rtol=1e-5)


def test_no_fast_call_where_python_runs_around_the_code(monkeypatch):
    x = f32(4)
    assert mlc.compile(lambda x: {"y": x + 1.0}, x).fast_call() is None          # a pytree result
    step = mlc.compile(lambda w, g: (g.sum(), w - g), x, x, in_place=(0,))
    assert step.fast_call() is None                                               # updated in place
    w = x.copy()
    step(w, x)
    np.testing.assert_array_equal(w, x - x)
    monkeypatch.setenv("MLC_BOUNDS_CHECK", "1")
    assert mlc.compile(lambda x: x * 3.0, x).fast_call() is None                  # checked after each call


def test_profile_runs_its_profiling_build_not_the_fast_call_of_the_normal_one():
    x = f32(64)
    exe = mlc.compile(lambda x: mlc.tanh(x) * 2.0, x)
    exe(x)   # the fast call is built for the normal code
    report = exe.profile(x, runs=3, warmup=1)
    assert len(report.kernels) == 1 and report.kernels[0].median > 0


def test_loaded_library_fast_call_matches_and_errs_like_the_full_path(tmp_path):
    a, b = f32(3, 5), f32(3, 5, seed=1)
    path = os.path.join(tmp_path, "m.so")
    mlc.compile(lambda a, b: mlc.relu(a - b), a, b).export(path)
    lib = mlc.load(path)
    assert lib.fast_call() is not None
    for _ in range(2):
        np.testing.assert_array_equal(lib(a, b), np.maximum(a - b, 0))
    np.testing.assert_array_equal(lib(a[:, ::-1], b), np.maximum(a[:, ::-1] - b, 0))   # copied, not misread
    for args in [(a.astype(np.float64), b), (a, b.T), (a,)]:
        assert _error(lib, *args) == _error(lib.call_flat, list(args))
    assert _error(lib, a, b.T).startswith("_lambda_(): argument 'b' expects f32[3,5]")


def test_fast_call_takes_a_tuple_only_and_keeps_single_output():
    a = f32(4)
    exe = mlc.compile(lambda a: (a + 1.0, a * 2.0), a)
    run = exe.fast_call()
    assert run([a]) is MISS                  # a list: the full path (exe.call_flat takes lists)
    y, z = run((a,))
    np.testing.assert_allclose(y, a + 1, rtol=1e-6)
    np.testing.assert_allclose(z, a * 2, rtol=1e-6)
    graph = mlc.trace(lambda a: (a + 1.0, a * 2.0), a)
    first_only = mlc.driver.compile_graph(graph, single_output=True)   # two outputs, the first returned
    np.testing.assert_allclose(first_only(a), a + 1, rtol=1e-6)
    np.testing.assert_allclose(first_only.call_flat([a]), a + 1, rtol=1e-6)


def test_pytree_calls_reuse_the_last_structure_and_follow_changes():
    """Parameters in dicts and lists: a call of the last call's structure, shapes and dtypes
    takes the structure's generated extractor; anything else takes the full path."""
    f = mlc.jit(lambda p, x: p["w"][0] * x + p["w"][1] - p["b"])
    p, x = {"w": [f32(3), f32(3, seed=1)], "b": f32(3, seed=2)}, f32(3, seed=3)
    want = p["w"][0] * x + p["w"][1] - p["b"]
    for _ in range(3):
        np.testing.assert_allclose(f(p, x), want, rtol=1e-6)
    assert f._last_tree is not None
    p2 = {"w": [f32(3, seed=4), f32(3, seed=5)], "b": f32(3, seed=6)}   # new arrays, same structure
    np.testing.assert_allclose(f(p2, x), p2["w"][0] * x + p2["w"][1] - p2["b"], rtol=1e-6)
    swapped = {"b": p["b"], "w": p["w"]}                               # other key order: other structure
    np.testing.assert_allclose(f(swapped, x), want, rtol=1e-6)
    wide = {"w": [f32(2, 3), f32(2, 3, seed=1)], "b": f32(2, 3, seed=2)}   # other shapes: compiled for them
    np.testing.assert_allclose(f(wide, f32(2, 3, seed=3)), wide["w"][0] * f32(2, 3, seed=3) + wide["w"][1]
                               - wide["b"], rtol=1e-6)
    np.testing.assert_allclose(f(p, x.astype(np.float64)), want.astype(np.float64), rtol=1e-6)   # another dtype
    with pytest.raises(IndexError):   # a list of another length: traced again, where the function fails
        f({"w": [p["w"][0]], "b": p["b"]}, x)


def test_leaves_of_agrees_with_flatten():
    import collections
    from mlc.tree import flatten
    point = collections.namedtuple("Point", "x y")
    trees = [{"a": 1, "b": [2, (3, None)]}, (1, 2), [1], None, {"x": {"y": 1}}, ((),), point(1, 2),
             {"b": 1, "a": 2}, np.zeros(2), [np.zeros(1), {"q": np.ones(1)}], [[1], [2, 3]], [(1,), [2]]]
    for t in trees:
        leaves, structure = flatten(t)
        got = structure.leaves_of(t)
        assert got is not None and len(got) == len(leaves) and all(a is b for a, b in zip(got, leaves)), t
        for other in trees:
            assert (structure.leaves_of(other) is not None) == (flatten(other)[1] == structure), (t, other)
