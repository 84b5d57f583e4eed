"""The loop level and its code generation, on hand-written loop nests: every
statement kind and loop kind, printed and run."""
import ctypes
import warnings

import numpy as np
import pytest

from mlc import codegen
from mlc.codegen import llvm as cg
from mlc.ir import expr as E
from mlc.ir.expr import Const, Load, Var
from mlc.ir.loop import Alloc, Buffer, For, Func, If, Seq, Store
from mlc.ir.types import bool_, float32, int32
from mlc.target import Target


def run_func(func: Func, *inputs, parallel=True):
    """Compile one Func as a whole module and run it on numpy inputs."""
    program = codegen.Program.of_func(func, parallel=parallel and codegen.runs_parallel("host"))
    source = codegen.source(program, "host")
    code = codegen.load(codegen.build(program, "host"))
    outs = [np.zeros(b.shape, b.dtype.np) for b in func.outputs]
    arr = lambda xs: (ctypes.c_void_p * max(1, len(xs)))(*[x.ctypes.data for x in xs])
    code.entry(arr(inputs), arr(outs), arr([]), None)
    return outs, source


def test_every_statement_kind_prints():
    a = Buffer("a", [4, 8], float32)
    out = Buffer("out", [4, 8], float32)
    i, j, v = Var("i"), Var("j"), Var("v")
    tmp = Buffer("tmp", [8], float32, "local")
    body = For(i, 4, Alloc(tmp, Seq([
        For(v, 8, Store(tmp, [v], Load(a, [i, v]) * 2.0), "vector"),
        For(j, 8, If(E.binop("lt", j, Const(4)), Store(out, [i, j], Load(tmp, [j])),
                     Store(out, [i, j], Const(0.0, float32))), "unroll"),
    ])), "parallel")
    f = Func("k", [a], [out], body)
    assert str(f) == """func @k(a: f32[4,8], out: f32[4,8]) {
  // outputs: out
  parallel i in [0, 4) {
    alloc tmp: f32[8] local
    vector v in [0, 8) {
      tmp[v] = a[i, v] * 2.0
    }
    unroll j in [0, 8) {
      if j < 4 {
        out[i, j] = tmp[j]
      } else {
        out[i, j] = 0.0
      }
    }
  }
}"""
    x = np.arange(32, dtype=np.float32).reshape(4, 8)
    (got,), llvm_ir = run_func(f, x)
    want = np.where(np.arange(8) < 4, x * 2, 0)
    np.testing.assert_array_equal(got, want)
    assert "<8 x float>" in llvm_ir and "GOMP_parallel" in llvm_ir


def test_vector_loop_gathers_and_scatters_strided_accesses():
    # a transpose written with the vector lane running along a strided axis
    a = Buffer("a", [8, 8], int32)
    out = Buffer("out", [8, 8], int32)
    i, v = Var("i"), Var("v")
    f = Func("t", [a], [out], For(i, 8, For(v, 8, Store(out, [v, i], Load(a, [i, v])), "vector")))
    x = np.arange(64, dtype=np.int32).reshape(8, 8)
    (got,), _ = run_func(f, x)
    np.testing.assert_array_equal(got, x.T)


def test_vector_store_to_one_element_is_refused():
    a = Buffer("a", [8], float32)
    out = Buffer("out", [1], float32)
    v = Var("v")
    f = Func("bad", [a], [out], For(v, 8, Store(out, [Const(0)], Load(a, [v])), "vector"))
    with pytest.raises(ValueError, match="every vector lane writes the same element"):
        run_func(f, np.zeros(8, np.float32))


def test_bool_buffers_are_bytes():
    a = Buffer("a", [10], float32)
    out = Buffer("out", [10], bool_)
    v, k = Var("v"), Var("k")
    cond = lambda idx: E.binop("gt", Load(a, [idx]), Const(0.5, float32))
    body = Seq([For(v, 8, Store(out, [v], cond(v)), "vector"), For(k, 2, Store(out, [k], cond(k)), start=8)])
    x = np.linspace(0, 1, 10, dtype=np.float32)
    (got,), _ = run_func(Func("b", [a], [out], body), x)
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, x > 0.5)


def test_parallel_loop_without_libgomp_runs_serially_with_one_warning(monkeypatch):
    monkeypatch.setattr(cg, "_GOMP", None)

    def refuse(name):
        raise RuntimeError(f"could not load {name}")

    monkeypatch.setattr(cg.llvm, "load_library_permanently", refuse)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert cg.gomp_available() is False
        assert cg.gomp_available() is False
    assert len(w) == 1 and "libgomp could not be loaded" in str(w[0].message)
    a = Buffer("a", [1000], float32)
    out = Buffer("out", [1000], float32)
    i = Var("i")
    f = Func("p", [a], [out], For(i, 1000, Store(out, [i], Load(a, [i]) + 1.0), "parallel"))
    x = np.arange(1000, dtype=np.float32)
    (got,), llvm_ir = run_func(f, x)
    assert "GOMP_parallel" not in llvm_ir
    np.testing.assert_array_equal(got, x + 1)
    # the whole pipeline falls back the same way
    import mlc
    big = np.arange(1 << 16, dtype=np.float32)
    import dataclasses
    four_cores = dataclasses.replace(Target.get("host"), cores=4)   # parallel loops even on a one-core host
    exe = mlc.compile(lambda x: x * 2.0, big, target=four_cores)
    assert "GOMP_parallel" not in exe.ir("llvm") and "parallel" in exe.ir("loop")
    np.testing.assert_array_equal(exe(big), big * 2)


def test_kernels_with_equal_loops_share_one_function():
    import mlc
    x = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    w1, w2 = (np.random.default_rng(s).standard_normal((16, 16)).astype(np.float32) for s in (1, 2))

    def f(x):   # two matmul+relu kernels with the same shapes: the same loops under two names
        return mlc.relu(mlc.relu(x @ w1) @ w2)
    exe = mlc.compile(f, x)
    names = [fn.name for fn in exe._compiled.funcs]
    assert len(names) == 2 and len(set(names)) == 2
    llvm_ir = exe.ir("llvm")
    assert llvm_ir.count("define internal void @\"mlc_") == 1
    np.testing.assert_allclose(exe(x), np.maximum(np.maximum(x @ w1, 0) @ w2, 0), rtol=1e-4, atol=1e-4)
    c = exe._compiled
    import dataclasses
    checked = codegen.source(dataclasses.replace(c.program, bounds_check=True), c.target)
    assert checked.count("define internal void @\"mlc_") == 2   # bounds errors name their own kernel


def _body_instructions(llvm_ir: str, op: str) -> int:
    return sum(1 for line in llvm_ir.splitlines() if f"= {op} i64" in line)


def test_unrolled_copies_share_their_address_arithmetic():
    """A register tile unrolled 8 x 4: every copy's address is the same sum of the loop
    variables plus its own constant, so the i64 multiplies do not grow with the copies."""
    def tile(rows, cols):
        a = Buffer("a", [16, 64], float32)
        out = Buffer("out", [16, 64], float32)
        i, j, r, c, v = Var("i"), Var("j"), Var("r"), Var("c"), Var("v")
        idx_i, idx_j = i * rows + r, j * (4 * cols) + c * 4 + v
        body = For(r, rows, For(c, cols, For(v, 4, Store(out, [idx_i, idx_j], Load(a, [idx_i, idx_j]) * 3.0),
                                              "vector"), "unroll"), "unroll")
        return Func(f"tile{rows}x{cols}", [a], [out], For(i, 16 // rows, For(j, 64 // (4 * cols), body)))
    x = np.arange(16 * 64, dtype=np.float32).reshape(16, 64)
    counts = []
    for rows, cols in ((1, 1), (8, 4)):
        (got,), llvm_ir = run_func(tile(rows, cols), x, parallel=False)
        np.testing.assert_array_equal(got, x * 3)
        counts.append(_body_instructions(llvm_ir, "mul"))
    assert counts[1] == counts[0], counts   # 32 copies, no more multiplies than one


def test_unrolled_copies_keep_their_own_non_linear_indices():
    # out[i, j] = a[i, j // 3] with j unrolled: j // 3 is an atom of each copy, not shared
    a = Buffer("a", [4, 3], int32)
    out = Buffer("out", [4, 9], int32)
    i, j = Var("i"), Var("j")
    f = Func("widen", [a], [out], For(i, 4, For(j, 9, Store(out, [i, j], Load(a, [i, E.binop("floordiv", j, Const(3))])),
                                               "unroll")))
    x = np.arange(12, dtype=np.int32).reshape(4, 3)
    (got,), _ = run_func(f, x, parallel=False)
    np.testing.assert_array_equal(got, np.repeat(x, 3, axis=1))
