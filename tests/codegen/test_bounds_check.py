"""MLC_BOUNDS_CHECK=1: every load and store of generated code checked against its
buffer's extent; an out-of-bounds access raises BoundsError naming the kernel and
the buffer, and correct code runs unchanged."""
import ctypes
import re

import numpy as np
import pytest

import mlc
from mlc import driver
from mlc import codegen
from mlc.codegen.export import ExportError
from mlc.ir.expr import Load, Var
from mlc.ir.loop import Alloc, Buffer, For, Func, Seq, Store
from mlc.ir.types import float32, int32
from mlc.runtime.executable import BoundsError


def build(func: Func, bounds_check: bool = True, parallel: bool = False):
    program = codegen.Program.of_func(func, parallel=parallel, bounds_check=bounds_check)
    return codegen.load(codegen.build(program, "host"))


def call(code, func, *inputs):
    outs = [np.full(b.shape, 7, b.dtype.np) for b in func.outputs]
    arr = lambda xs: (ctypes.c_void_p * max(1, len(xs)))(*[x.ctypes.data for x in xs])
    code.entry(arr(inputs), arr(outs), arr([]), None)
    return outs


a = Buffer("a", [8], float32)
out = Buffer("out", [8], float32)
i, v = Var("i"), Var("v")
x = np.arange(8, dtype=np.float32)


@pytest.mark.parametrize("name, body, message", [
    ("read_past_end", For(i, 8, Store(out, [i], Load(a, [i + 1]))),
     "kernel read_past_end read a: f32[8] at element 8, out of its 8 elements"),
    ("read_before_start", For(i, 8, Store(out, [i], Load(a, [i - 2]))),
     "kernel read_before_start read a: f32[8] at element -2, out of its 8 elements"),
    ("write_past_end", For(i, 8, Store(out, [i * 2], Load(a, [i]))),
     "kernel write_past_end wrote out: f32[8] at element 8, out of its 8 elements"),
    # a contiguous vector access is checked whole: its last lane is past the end
    ("vector_read", For(v, 8, Store(out, [v], Load(a, [v + 1])), "vector"),
     "kernel vector_read read a: f32[8] at elements [1, 9), out of its 8 elements"),
    # a scatter: lane by lane, the first bad lane is named
    ("vector_scatter", For(v, 8, Store(out, [v * 2], Load(a, [v])), "vector"),
     "kernel vector_scatter wrote out: f32[8] at element 8, out of its 8 elements"),
    ("parallel_read", For(i, 8, Store(out, [i], Load(a, [i + 8])), "parallel"),
     "kernel parallel_read read a: f32[8] at element "),   # which thread is first varies
])
def test_out_of_bounds_access_raises(name, body, message):
    f = Func(name, [a], [out], body)
    code = build(f, parallel=codegen.runs_parallel("host"))
    with pytest.raises(BoundsError, match=re.escape(message)):
        call(code, f, x)
    # the status is reset: the next call reports again (not stale, not silent)
    with pytest.raises(BoundsError):
        call(code, f, x)


def test_local_buffer_and_multidimensional_offsets():
    b2 = Buffer("b2", [2, 4], int32)
    o2 = Buffer("o2", [2, 4], int32)
    tmp = Buffer("tmp", [4], int32, "local")
    j = Var("j")
    # rows are fine, but the local row buffer is read one past its end
    body = For(i, 2, Alloc(tmp, Seq([For(j, 4, Store(tmp, [j], Load(b2, [i, j]))),
                                     For(j, 4, Store(o2, [i, j], Load(tmp, [j + 1])))])))
    f = Func("rows", [b2], [o2], body)
    with pytest.raises(BoundsError, match=r"kernel rows read tmp: i32\[4\] at element 4, out of its 4 elements"):
        call(build(f), f, np.arange(8, dtype=np.int32).reshape(2, 4))


def test_skipped_access_does_not_touch_memory():
    """The failing store is not performed: the elements around the buffer are intact."""
    guard = np.full(24, 99, np.float32)
    src = np.arange(8, dtype=np.float32)
    f = Func("store_shift", [a], [out], For(i, 8, Store(out, [i + 4], Load(a, [i]))))
    code = build(f)
    arr = lambda xs: (ctypes.c_void_p * len(xs))(*xs)
    with pytest.raises(BoundsError, match="wrote out: f32\\[8\\] at element 8"):
        code.entry(arr([src.ctypes.data]), arr([guard.ctypes.data + 8 * 4]), arr([0]), None)
    np.testing.assert_array_equal(guard[8:12], 99)           # out[0:4] never written
    np.testing.assert_array_equal(guard[12:16], src[:4])     # out[4:8] = a[0:4]
    np.testing.assert_array_equal(guard[16:], 99)            # past the end: untouched


def test_in_bounds_code_runs_unchanged_and_unchecked_code_has_no_status():
    f = Func("ok", [a], [out], For(v, 8, Store(out, [v], Load(a, [v]) * 2.0), "vector"))
    checked, plain = build(f), build(f, bounds_check=False)
    np.testing.assert_array_equal(call(checked, f, x)[0], x * 2)
    assert hasattr(checked, "_status") and not hasattr(plain, "_status")


def _mlp_and_conv():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 12)).astype(np.float32)
    w1, b1 = rng.standard_normal((12, 33)).astype(np.float32), rng.standard_normal(33).astype(np.float32)
    w2 = rng.standard_normal((33, 10)).astype(np.float32)
    img = rng.standard_normal((2, 3, 11, 9)).astype(np.float32)
    k = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)

    def mlp(x, w1, b1, w2):
        return mlc.softmax(mlc.relu(x @ w1 + b1) @ w2, axis=-1)

    def conv(img, k):
        y = mlc.relu(mlc.conv(img, k, pads=(1, 1, 1, 1), strides=(2, 1)))
        return mlc.max_pool(y, kernel_shape=(2, 2), strides=(2, 2)), y.mean(axis=(2, 3))
    return [(mlp, (x, w1, b1, w2)), (conv, (img, k))]


@pytest.mark.parametrize("opt_level", [0, 2])
def test_models_run_identically_with_the_flag(monkeypatch, opt_level):
    for fn, args in _mlp_and_conv():
        plain = mlc.compile(fn, *args, opt_level=opt_level)
        monkeypatch.setenv("MLC_BOUNDS_CHECK", "1")
        checked = mlc.compile(fn, *args, opt_level=opt_level)   # same graph: the cache must not serve `plain`
        monkeypatch.delenv("MLC_BOUNDS_CHECK")
        assert checked._code._status is not None and not hasattr(plain._code, "_status")
        want, got = plain(*args), checked(*args)
        for w, g in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)):
            np.testing.assert_array_equal(g, w)


def test_a_wrong_schedule_through_the_driver_names_kernel_and_buffer(monkeypatch):
    """The driver compiles with checks under the flag: a kernel whose loop reads one
    element too far is stopped with the kernel's and the buffer's names."""
    real = driver.schedule_kernel

    def off_by_one(kernel, target, *rest):
        f = real(kernel, target, *rest)
        (src,), (dst,) = f.inputs, f.outputs
        n = Var("n")
        return Func(f.name, f.inputs, f.outputs, For(n, 8, Store(dst, [n], Load(src, [n + 1]) + 1.0)))

    monkeypatch.setattr(driver, "schedule_kernel", off_by_one)
    monkeypatch.setenv("MLC_BOUNDS_CHECK", "1")
    exe = mlc.compile(lambda x: x + 1.0, x)
    kernel = exe._compiled.funcs[0]
    with pytest.raises(BoundsError, match=f"kernel {kernel.name} read {kernel.inputs[0].name}: f32\\[8\\] at "
                                          "element 8, out of its 8 elements"):
        exe(x)


def test_checked_code_is_not_exported(monkeypatch, tmp_path):
    monkeypatch.setenv("MLC_BOUNDS_CHECK", "1")
    exe = mlc.compile(lambda x: x * 2.0, x)
    with pytest.raises(ExportError, match="MLC_BOUNDS_CHECK=1.*unset MLC_BOUNDS_CHECK"):
        exe.export(tmp_path / "m.so")
    assert not (tmp_path / "m.so").exists()
