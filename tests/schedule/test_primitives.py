"""Schedule primitives (mlc.schedule.primitives) one by one on small kernels with
odd sizes: each transformed, finalized loop nest runs and matches numpy; the
printed IR has the structure the primitive promises; every illegal request is a
ScheduleError that says why and leaves the schedule as it was; traces survive
JSON and replay to the same code; random legal sequences stay correct.

Each refusal test also checks that the refused call left the schedule unchanged.
"""
import ctypes
import json
import random

import numpy as np
import pytest

import mlc
from mlc.passes.manager import PassManager
from mlc import codegen
from mlc.driver import Compiled
from mlc.ir import expr as E
from mlc.ir.tensor import Kernel, Placeholder, compute, reduce
from mlc.ir.types import float32
from mlc.passes.loops import lower_loops
from mlc.schedule.default import rule_schedule, schedule_kernel
from mlc.schedule.primitives import (
    MAX_UNROLL,
    MAX_VECTOR_LANES,
    PRIMITIVES,
    Schedule,
    ScheduleError,
    replay,
)
from mlc.target import Target

HOST = Target.get("host")
M, K, N = 37, 23, 29          # matmul sizes: all prime, so every split factor > 1 leaves a tail
R, C = 13, 19                 # elementwise sizes


# ============================================================================ running a Func

def run_func(func, *inputs, parallel=True):
    """Compile one finalized Func and run it; scratch buffers are passed as params
    (filled with NaN, so a read of a never-written element shows)."""
    program = codegen.Program.of_func(func, parallel=parallel and codegen.runs_parallel(HOST), scratch="param")
    code = codegen.load(codegen.build(program, HOST))
    inputs = [np.ascontiguousarray(x) for x in inputs]
    outs = [np.zeros(b.shape, b.dtype.np) for b in func.outputs]
    scratch = [np.full(b.shape, np.nan, b.dtype.np) for b in func.scratch]
    arr = lambda xs: (ctypes.c_void_p * max(1, len(xs)))(*[x.ctypes.data for x in xs])
    code.entry(arr(inputs), arr(outs), arr(scratch), None)
    return outs


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ============================================================================ kernels

def matmul_kernel():
    """T0 = A @ B (a reduction), out = relu(T0 + C) (its epilogue)."""
    A, B, Cb = Placeholder("A", (M, K), float32), Placeholder("B", (K, N), float32), Placeholder("C", (M, N), float32)
    T0 = compute((M, N), lambda i, j: reduce("sum", [K], lambda k: A[i, k] * B[k, j]), "T0")
    out = compute((M, N), lambda i, j: E.maximum(T0[i, j] + Cb[i, j], E.Const(0.0, float32)), "out")
    return Kernel("mm", [A, B, Cb], [T0, out], [out], "reduction")


MM_IN = (rand(M, K, seed=1), rand(K, N, seed=2), rand(M, N, seed=3))
MM_WANT = np.maximum(MM_IN[0] @ MM_IN[1] + MM_IN[2], 0)


def check_mm(s):
    f = lower_loops(s.finalize())
    (got,) = run_func(f, *MM_IN)
    np.testing.assert_allclose(got, MM_WANT, rtol=1e-4, atol=1e-4)
    return f


def elementwise_kernel():
    """T = X * 2 + Y (an injective intermediate), out = T * T - Y."""
    X, Y = Placeholder("X", (R, C), float32), Placeholder("Y", (R, C), float32)
    T = compute((R, C), lambda i, j: X[i, j] * 2.0 + Y[i, j], "T")
    out = compute((R, C), lambda i, j: T[i, j] * T[i, j] - Y[i, j], "out")
    return Kernel("ew", [X, Y], [T, out], [out])


EW_IN = (rand(R, C, seed=4), rand(R, C, seed=5))
EW_WANT = (EW_IN[0] * 2 + EW_IN[1]) ** 2 - EW_IN[1]


def check_ew(s):
    f = lower_loops(s.finalize())
    (got,) = run_func(f, *EW_IN)
    np.testing.assert_allclose(got, EW_WANT, rtol=1e-4, atol=1e-5)
    return f


SUM_R, SUM_C = 11, 45


def rowsum_kernel():
    X = Placeholder("X", (SUM_R, SUM_C), float32)
    out = compute((SUM_R,), lambda i: reduce("sum", [SUM_C], lambda k: X[i, k]), "out")
    return Kernel("rowsum", [X], [out], [out], "reduction")


def total_sum_kernel():
    X = Placeholder("X", (SUM_R, SUM_C), float32)
    out = compute((), lambda: reduce("sum", [SUM_R, SUM_C], lambda r0, r1: X[r0, r1]), "out")
    return Kernel("total", [X], [out], [out], "reduction")


SUM_IN = rand(SUM_R, SUM_C, seed=6)


def traced_kernel(fn, *args, pm=None):
    return Compiled(mlc.trace(fn, *args), HOST, pm).lowered.calls[0].kernel


SM_IN = rand(7, 13, seed=7)


def softmax_kernel():
    return traced_kernel(lambda x: mlc.softmax(x, axis=-1), SM_IN)     # T0 = row max, T1 = row sum, out


def softmax_ref(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


CONV_X, CONV_W = rand(1, 3, 9, 9, seed=8), rand(4, 3, 3, 3, seed=9)


def conv_kernel():
    """T0 = the zero-padded input (injective), out = the convolution over T0: the direct
    kernel (rows this narrow would otherwise take the matrix form, conv_layout)."""
    return traced_kernel(lambda x, w: mlc.conv(x, w, pads=[1, 1, 1, 1]), CONV_X, CONV_W,
                         pm=PassManager(disabled=("conv_layout",)))


def conv_ref(x, w):
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((1, w.shape[0], 9, 9), np.float32)
    for p in range(9):
        for q in range(9):
            out[0, :, p, q] = np.einsum("crs,mcrs->m", xp[0, :, p:p + 3, q:q + 3], w)
    return out


def producer_matmul_kernel():
    """P = exp(A) (an elementwise producer), out = P @ B."""
    A, B = Placeholder("A", (M, K), float32), Placeholder("B", (K, N), float32)
    P = compute((M, K), lambda i, j: E.call("exp", A[i, j]), "P")
    out = compute((M, N), lambda i, j: reduce("sum", [K], lambda k: P[i, k] * B[k, j]), "out")
    return Kernel("pmm", [A, B], [P, out], [out], "reduction")


def top_loops(s) -> list[str]:
    """The printed loops at the top level of the function body."""
    return [line.split()[1] for line in str(s).splitlines()
            if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith("{")]


# ============================================================================ 1. each primitive runs correctly

def test_default_nests_match_numpy():
    check_mm(Schedule(matmul_kernel(), HOST))
    check_ew(Schedule(elementwise_kernel(), HOST))
    (got,) = run_func(lower_loops(Schedule(rowsum_kernel(), HOST).finalize()), SUM_IN)
    np.testing.assert_allclose(got, SUM_IN.sum(1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loop,factor", [("i", 4), ("j", 5), ("k", 6), ("i", 1), ("j", 29), ("k", 40)])
def test_split_with_and_without_tail(loop, factor):
    s = Schedule(matmul_kernel(), HOST)
    assert s.split(loop, factor) == (loop + "o", loop + "i")
    check_mm(s)


def test_split_names_and_nested_split():
    s = Schedule(matmul_kernel(), HOST)
    s.split("i", 8, ["rows", "r8"])
    s.split("r8", 3)                 # a split of a split: 3 does not divide 8, and 8 does not divide 37
    assert "for rows in [0, 5)" in str(s) and "for r8o in [0, 3)" in str(s) and "for r8i in [0, 3)" in str(s)
    check_mm(s)


def test_tile_reorder_vectorize_unroll_parallel_micro_kernel():
    s = Schedule(matmul_kernel(), HOST)
    assert s.tile("i", "j", 4, 8) == ("io", "jo", "ii", "ji")
    s.reorder("io", "jo", "k", "ii", "ji")
    s.cache_write("T0", "jo")
    s.reverse_compute_at("out", "jo")
    s.vectorize("ji")
    s.unroll("ii")
    s.parallel("io")
    s.vectorize("j1")
    s.unroll("i1")
    text = str(s)
    assert "parallel io in [0, 10)" in text and "unroll ii in [0, 4)" in text and "vector ji in [0, 8)" in text
    f = check_mm(s)
    ftext = str(f)
    assert "vector ji in [0, 5)" in ftext           # the column tail: 29 = 3 * 8 + 5 lanes
    assert "unroll ii in [0, 1)" in ftext           # the row tail: 37 = 9 * 4 + 1
    assert "likely" not in ftext


def test_reorder_reduction_outermost():
    s = Schedule(matmul_kernel(), HOST)
    s.reorder("k", "j", "i")
    text = str(s)
    assert text.index("for k in") < text.index("for j in") < text.index("for i in")
    check_mm(s)


def test_reorder_across_tail_guards():
    s = Schedule(matmul_kernel(), HOST)
    s.split("i", 5)
    s.split("k", 4)
    s.reorder("ko", "ii", "j", "io", "ki")
    check_mm(s)


def test_fuse_then_split_and_vectorize_elementwise():
    s = Schedule(elementwise_kernel(), HOST)
    assert s.fuse("i1", "j1") == "i1_j1"
    assert f"for i1_j1 in [0, {R * C})" in str(s)
    s.split("i1_j1", 8)
    s.vectorize("i1_j1i")
    f = check_ew(s)
    assert f"vector i1_j1i in [0, {R * C % 8})" in str(f)


def test_fuse_tiled_matmul_loops():
    s = Schedule(matmul_kernel(), HOST)
    s.tile("i", "j", 4, 8)
    s.fuse("io", "jo", "tile")
    s.parallel("tile")
    assert "parallel tile in [0, 40)" in str(s)
    check_mm(s)


def test_unroll_loops():
    s = Schedule(matmul_kernel(), HOST)
    s.split("k", 8)
    s.unroll("ki")
    s.unroll("j1")
    assert "unroll ki in [0, 8)" in str(s) and "unroll j1 in [0, 29)" in str(s)
    check_mm(s)


def test_vectorize_elementwise_with_tail_and_parallel():
    s = Schedule(elementwise_kernel(), HOST)
    s.compute_inline("T")
    s.split("j1", 4)
    s.vectorize("j1i")
    s.parallel("i1")
    f = check_ew(s)
    assert "vector j1i in [0, 3)" in str(f) and "parallel i1 in [0, 13)" in str(f)


def test_vectorize_reduction_loop_gets_lane_partial_accumulators():
    s = Schedule(rowsum_kernel(), HOST)
    s.cache_write("out", "i")
    s.split("k", 8)
    s.vectorize("ki")
    text = str(s)
    assert "alloc vacc: f32[1,8] local" in text and "vector ki_lane in [0, 8)" in text
    assert "out[i] = vacc[0, 0] + vacc[0, 1]" in text       # the lanes are folded at the write-back
    (got,) = run_func(lower_loops(s.finalize()), SUM_IN)
    np.testing.assert_allclose(got, SUM_IN.sum(1), rtol=1e-4, atol=1e-5)


def test_vectorize_whole_reduction_loop_of_2d_sum():
    s = Schedule(total_sum_kernel(), HOST)
    s.cache_write("out", "r0")          # one scalar accumulator per row, resumed from out after the first
    s.split("r1", 8)
    s.vectorize("r1i")
    s.unroll("r1o")
    assert "alloc vacc: f32[8] local" in str(s)
    (got,) = run_func(lower_loops(s.finalize()), SUM_IN)
    np.testing.assert_allclose(got, SUM_IN.sum(), rtol=1e-4, atol=1e-4)


def test_max_reductions_of_softmax_with_lane_partials():
    s = Schedule(softmax_kernel(), HOST)
    assert s.loops() == {"T0": ["i_init", "j_init", "i", "j", "k"], "T1": ["i1_init", "j1_init", "i1", "j1", "k1"],
                         "out": ["i2", "j2"]}
    for stage, row, red in (("T0", "i", "k"), ("T1", "i1", "k1")):
        s.cache_write(stage, row)
        s.split(red, 4)
        s.vectorize(red + "i")
    s.split("j2", 8)
    s.vectorize("j2i")
    s.parallel("i2")
    assert "vacc[0, j, ki] max= A[i, ko * 4 + ki]" in str(s)
    (got,) = run_func(lower_loops(s.finalize()), SM_IN)
    np.testing.assert_allclose(got, softmax_ref(SM_IN), rtol=1e-4, atol=1e-6)


def test_compute_inline_injective_intermediate():
    s = Schedule(elementwise_kernel(), HOST)
    s.compute_inline("T")
    assert s.loops() == {"out": ["i1", "j1"]}
    assert "T[" not in str(s) and "(X[i1, j1] * 2.0 + Y[i1, j1])" in str(s)
    f = check_ew(s)
    assert f.scratch == []


def test_compute_inline_conv_padding():
    s = Schedule(conv_kernel(), HOST)
    s.compute_inline("T0")
    (got,) = run_func(lower_loops(s.finalize()), CONV_X, CONV_W)
    np.testing.assert_allclose(got, conv_ref(CONV_X, CONV_W), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("loop,rows", [("k1", 3), ("j1", 11)])
def test_compute_at_conv_padding_inside_output_rows(loop, rows):
    s = Schedule(conv_kernel(), HOST)
    s.compute_at("T0", loop)
    # only the padded rows one iteration reads: 3 for one output row, all 11 for one channel
    assert s.loops()["T0"] == ["i", "j", "k", "l"]
    f = lower_loops(s.finalize())
    assert [b.type.shape for b in f.scratch if b.name == "T0"] == [(1, 3, rows, 11)]
    (got,) = run_func(f, CONV_X, CONV_W)
    np.testing.assert_allclose(got, conv_ref(CONV_X, CONV_W), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("split", [None, 5])
def test_compute_at_elementwise_producer_of_matmul(split):
    a, b = MM_IN[0], MM_IN[1]
    s = Schedule(producer_matmul_kernel(), HOST)
    loop = "i1"
    if split:
        s.split("i1", split)
        loop = "i1o"                        # a block of rows, the last one partial
    s.compute_at("P", loop)
    f = lower_loops(s.finalize())
    assert [b.type.shape for b in f.scratch] == [(split or 1, K)]
    (got,) = run_func(f, a, b)
    np.testing.assert_allclose(got, np.exp(a) @ b, rtol=1e-4, atol=1e-4)


def test_compute_at_inside_parallel_loop_is_thread_local():
    a, b = MM_IN[0], MM_IN[1]
    s = Schedule(producer_matmul_kernel(), HOST)
    s.split("i1", 4)
    s.parallel("i1o")
    s.compute_at("P", "i1i")
    assert "alloc P: f32[1,23] local" in str(s)
    f = lower_loops(s.finalize())
    assert f.scratch == []
    (got,) = run_func(f, a, b)
    np.testing.assert_allclose(got, np.exp(a) @ b, rtol=1e-4, atol=1e-4)


def test_parallel_after_compute_at_into_shared_buffer_is_refused():
    s = Schedule(producer_matmul_kernel(), HOST)
    s.compute_at("P", "i1")
    with pytest.raises(ScheduleError, match="every iteration writes the same elements of P"):
        s.parallel("i1")


def test_compute_at_a_parallel_loop_is_thread_local():
    s = Schedule(producer_matmul_kernel(), HOST)
    s.parallel("i1")
    s.compute_at("P", "i1")
    f = lower_loops(s.finalize())
    assert "alloc P: f32[1,23] local" in str(f) and f.scratch == []


def test_compute_at_reduction_producer_into_epilogue_rows():
    s = Schedule(matmul_kernel(), HOST)
    s.compute_at("T0", "i1")
    assert top_loops(s) == ["i1"]
    f = check_mm(s)
    assert [b.type.shape for b in f.scratch] == [(1, N)]


def test_reverse_compute_at_epilogue_under_cache_write():
    s = Schedule(matmul_kernel(), HOST)
    s.tile("i", "j", 4, 8)
    s.cache_write("T0", "jo")
    s.reverse_compute_at("out", "jo")
    loops = s.loops()
    assert loops["out"] == ["i1", "j1"]
    assert top_loops(s) == ["io"]                   # no separate nest for the epilogue
    text = str(s)
    body_of_jo = text[text.index("for jo in"):]
    assert "for i1 in [0, 4)" in body_of_jo and "for j1 in [0, 8)" in body_of_jo
    assert "max(acc[i1, j1] + C[io * 4 + i1, jo * 8 + j1], 0.0)" in text     # reads the accumulator
    assert "T0[" not in text                        # the reduction never goes through memory
    f = check_mm(s)
    assert f.scratch == []


def test_reverse_compute_at_inside_blocked_reduction():
    # k blocks outside the tile: the partial sums live in out between blocks, and the
    # epilogue overwrites them in the last block only (23 = 3 * 7 + 2: ko = 3, partial)
    s = Schedule(matmul_kernel(), HOST)
    s.split("k", 7)
    s.tile("i", "j", 4, 8)
    s.reorder("ko", "io", "jo", "ki", "ii", "ji")
    s.cache_write("T0", "jo")
    s.reverse_compute_at("out", "jo")
    text = str(s)
    assert "if ko * 7 + 6 >= 22 {" in text and "T0[" not in text
    check_mm(s)


def test_reverse_compute_at_without_cache_write():
    s = Schedule(matmul_kernel(), HOST)
    s.reverse_compute_at("out", "j")
    assert top_loops(s) == ["i_init", "i"]
    check_mm(s)


@pytest.mark.parametrize("at", ["jo", "io"])
def test_cache_read_packed_layout_with_compute_at(at):
    s = Schedule(matmul_kernel(), HOST)
    s.tile("i", "j", 4, 8)
    s.reorder("io", "jo", "k", "ii", "ji")
    name = s.cache_read("B", "T0", [["o", 1, 8], 0, ["i", 1, 8]])
    assert name == "B_T0_packed"
    assert "B_T0_packed[jo, k, ji]" in str(s)             # the consumer reads the panels
    assert "if likely B_T0_packed_0 * 8 + B_T0_packed_2 < 29" in str(s)     # the last panel is partial
    s.compute_at(name, at)
    s.cache_write("T0", "jo")
    s.vectorize("ji")
    f = check_mm(s)
    shape = {"jo": (1, K, 8), "io": (4, K, 8)}[at]
    assert [b.type.shape for b in f.scratch if b.name == name] == [shape]


def test_cache_read_whole_dimensions_transposes():
    s = Schedule(matmul_kernel(), HOST)
    s.cache_read("A", "T0", [1, 0])
    assert "A_T0_packed[k, i]" in str(s)
    check_mm(s)


def test_cache_write_register_tile():
    s = Schedule(matmul_kernel(), HOST)
    s.tile("i", "j", 6, 8)
    s.reorder("io", "jo", "k", "ii", "ji")
    s.cache_write("T0", "jo")
    text = str(s)
    assert "alloc acc: f32[6,8] local" in text
    assert "acc[ii, ji] += A[io * 6 + ii, k] * B[k, jo * 8 + ji]" in text
    assert "i_init" not in text                    # the accumulator replaces the init nest
    check_mm(s)


def test_cache_write_inside_reduction_resumes_partial_sums():
    s = Schedule(matmul_kernel(), HOST)
    s.split("k", 6)
    s.reorder("ko", "i", "j", "ki")
    s.cache_write("T0", "j")
    text = str(s)
    assert "if ko * 6 <= 0 {" in text and "acc[0, 0] = T0[i, j]" in text
    check_mm(s)


def test_bind_on_gpu_target_prints_gpu_loops():
    s = Schedule(matmul_kernel(), "cuda-sm80")
    s.tile("i", "j", 4, 8)
    s.bind("io", "blockIdx.x")
    s.bind("jo", "blockIdx.y")
    s.bind("ii", "threadIdx.y")
    s.bind("ji", "threadIdx.x")
    text = str(s)
    assert "blockIdx.x io in [0, 10)" in text and "threadIdx.x ji in [0, 8)" in text
    lowered = str(lower_loops(s.finalize()))
    # bound loops stay whole (one grid, one block shape): the tail guard stays inside them
    assert "blockIdx.x io in [0, 10)" in lowered and "if likely io * 4 + ii < 37 {" in lowered


# ============================================================================ 2. printed structure

def test_split_prints_outer_inner_and_likely_guard_until_finalize():
    s = Schedule(matmul_kernel(), HOST)
    s.split("i", 4)
    text = str(s)
    assert "for io in [0, 10) {" in text and "for ii in [0, 4) {" in text
    assert "if likely io * 4 + ii < 37 {" in text
    assert "T0[io * 4 + ii, j] += A[io * 4 + ii, k] * B[k, j]" in text
    assert s.loops()["T0"] == ["i_init", "j_init", "io", "ii", "j", "k"]
    f = str(lower_loops(s.finalize()))
    assert "likely" not in f and "if " not in f
    assert "for io in [0, 9) {" in f                       # the whole blocks
    assert "T0[36, j]" in f                                # the peeled last block, one row


def test_dividing_split_has_no_guard():
    s = Schedule(rowsum_kernel(), HOST)
    s.split("k", 9)
    text = str(s)
    assert "for ko in [0, 5) {" in text and "for ki in [0, 9) {" in text and "likely" not in text
    assert "out[i] += X[i, ko * 9 + ki]" in text


def test_default_nest_prints_init_then_reduction():
    text = str(Schedule(matmul_kernel(), HOST))
    assert text.index("T0[i_init, j_init] = 0.0") < text.index("T0[i, j] += A[i, k] * B[k, j]") \
        < text.index("out[i1, j1] = max(T0[i1, j1] + C[i1, j1], 0.0)")


def test_finalize_lowers_accumulate_and_lists_scratch():
    f = lower_loops(Schedule(matmul_kernel(), HOST).finalize())
    text = str(f)
    assert "+=" not in text and "T0[i, j] = T0[i, j] + A[i, k] * B[k, j]" in text
    assert "// outputs: out; scratch: T0" in text


def test_primitives_apply_to_every_copy_of_a_loop():
    # after cache_write the tile loops exist in the init, update and write-back nests
    s = Schedule(matmul_kernel(), HOST)
    s.tile("i", "j", 4, 8)
    s.reorder("io", "jo", "k", "ii", "ji")
    s.cache_write("T0", "jo")
    s.vectorize("ji")
    assert str(s).count("vector ji in [0, 8)") == 3
    check_mm(s)


# ============================================================================ 3. refusals

def refused(s, prim, *args, match):
    """The call raises a ScheduleError matching ``match`` and changes nothing."""
    before, trace = str(s), json.dumps(s.trace)
    with pytest.raises(ScheduleError, match=match):
        getattr(s, prim)(*args)
    assert str(s) == before, f"refused {prim}{args} changed the schedule"
    assert json.dumps(s.trace) == trace


def test_refuses_parallel_and_vectorize_of_reduction_loop():
    s = Schedule(matmul_kernel(), HOST)
    refused(s, "parallel", "k", match="k: it is a reduction loop of T0")
    refused(s, "vectorize", "k", match="reduction loop")
    s.cache_write("T0", "i")            # a register accumulator, but no lane partials for parallel
    s.split("k", 4)
    refused(s, "parallel", "ki", match="reduction loop")


def test_refuses_vectorize_of_outer_or_wide_loop():
    s = Schedule(matmul_kernel(), HOST)
    refused(s, "vectorize", "i1", match="not an innermost loop")
    refused(s, "vectorize", "i", match="not an innermost loop")
    s.fuse("i1", "j1")
    s.split("i1_j1", MAX_VECTOR_LANES + 1)
    refused(s, "vectorize", "i1_j1i", match=f"65 lanes is too wide \\(at most {MAX_VECTOR_LANES}\\)")
    s2 = Schedule(matmul_kernel(), HOST)
    s2.vectorize("j1")
    refused(s2, "vectorize", "j1", match="already vector")
    refused(s2, "split", "j1", 4, match="split before annotating it")


def test_refuses_vectorize_inside_vector_and_nested_parallel():
    s = Schedule(matmul_kernel(), HOST)
    s.parallel("i1")
    refused(s, "parallel", "j1", match="parallel loops do not nest")
    s.vectorize("j1")
    refused(s, "unroll", "j1", match="already vector")


@pytest.mark.parametrize("case", ["too_wide", "not_innermost"])
def test_refused_vectorize_of_accumulated_reduction_changes_nothing(case):
    if case == "too_wide":
        X = Placeholder("X", (5, 100), float32)
        out = compute((5,), lambda i: reduce("sum", [100], lambda k: X[i, k]), "out")
        s = Schedule(Kernel("wide", [X], [out], [out], "reduction"), HOST)
        s.cache_write("out", "i")
        refused(s, "vectorize", "k", match="too wide")
    else:
        s = Schedule(matmul_kernel(), HOST)
        s.split("k", 2)
        s.reorder("j", "ko", "i", "ki")
        s.cache_write("T0", "j")
        refused(s, "vectorize", "ko", match="not an innermost loop")


def test_refuses_reorder_of_loops_not_perfectly_nested():
    s = Schedule(rowsum_kernel(), HOST)
    s.cache_write("out", "i")
    refused(s, "reorder", "k", "i", match="not perfectly nested")
    s2 = Schedule(matmul_kernel(), HOST)
    refused(s2, "reorder", "i", "i1", match="belong to different stages")
    refused(s2, "reorder", "i", match="two or more distinct loops")
    refused(s2, "reorder", "i", "i", match="two or more distinct loops")


def test_refuses_fuse_of_non_adjacent_loops():
    s = Schedule(matmul_kernel(), HOST)
    refused(s, "fuse", "i", "k", match="k is not directly inside i")
    refused(s, "fuse", "j", "i", match="i is not directly inside j")
    s.parallel("i1")
    refused(s, "fuse", "i1", "j1", match="must be a serial loop")


def test_refuses_unroll_of_huge_loop():
    s = Schedule(matmul_kernel(), HOST)
    s.fuse("i", "j")
    refused(s, "unroll", "i_j", match=f"{M * N} iterations \\(at most {MAX_UNROLL}\\); split it first")


def test_refuses_bind_on_cpu_and_bad_axes():
    s = Schedule(matmul_kernel(), HOST)
    refused(s, "bind", "i1", "blockIdx.x", match="is not a GPU")
    g = Schedule(matmul_kernel(), "cuda-sm80")
    refused(g, "bind", "i1", "warp", match="choose one of blockIdx.x")
    refused(g, "bind", "k", "threadIdx.x", match="reduction loop")
    g.bind("i1", "threadIdx.x")
    refused(g, "bind", "j1", "threadIdx.x", match="bound to threadIdx.x already")


def test_refuses_compute_inline_of_reduction_output_or_transformed_stage():
    s = Schedule(matmul_kernel(), HOST)
    refused(s, "compute_inline", "T0", match="it is a reduction")
    refused(s, "compute_inline", "out", match="output of the kernel")
    e = Schedule(elementwise_kernel(), HOST)
    e.split("j", 4)
    refused(e, "compute_inline", "T", match="its loops were transformed")
    e2 = Schedule(elementwise_kernel(), HOST)
    e2.compute_inline("T")
    refused(e2, "compute_inline", "T", match="inlined already")


def test_refuses_compute_at_of_output_or_wrong_loop():
    s = Schedule(matmul_kernel(), HOST)
    refused(s, "compute_at", "out", "i", match="output of the kernel")
    refused(s, "compute_at", "T0", "j", match="its own loop")
    refused(s, "compute_at", "T0", "i_init", match="its own loop")
    sm = Schedule(softmax_kernel(), HOST)
    refused(sm, "compute_at", "T0", "i2", match="also read outside that loop")     # T1 reads it too
    p = Schedule(producer_matmul_kernel(), HOST)
    refused(p, "compute_at", "P", "i1_init", match="also read outside that loop")
    X = Placeholder("X", (R, C), float32)
    dead = compute((R, C), lambda i, j: X[i, j] + 1.0, "D")
    out = compute((R, C), lambda i, j: X[i, j] * 2.0, "out")
    d = Schedule(Kernel("dead", [X], [dead, out], [out]), HOST)
    refused(d, "compute_at", "D", "i1", match="nothing under it reads it")


def test_refuses_reverse_compute_at_of_reduction_or_non_elementwise_reader():
    s = Schedule(matmul_kernel(), HOST)
    refused(s, "reverse_compute_at", "T0", "i1", match="it is a reduction")
    refused(s, "reverse_compute_at", "out", "i1", match="not a loop of a producer")
    sm = Schedule(softmax_kernel(), HOST)
    # out reads T1[i, 0]: not element for element
    refused(sm, "reverse_compute_at", "out", "i1", match="must read T1 element for element")
    refused(sm, "reverse_compute_at", "T1", "i", match="it is a reduction")


def test_refuses_cache_write_of_injective_stage_and_twice():
    s = Schedule(matmul_kernel(), HOST)
    refused(s, "cache_write", "out", "i1", match="it is not a reduction")
    refused(s, "cache_write", "T0", "i1", match="i1 is not one of its loops")
    s.cache_write("T0", "i")
    refused(s, "cache_write", "T0", "i", match="accumulates in registers already")


def test_unknown_loop_lists_known_loops_and_unknown_stage_lists_stages():
    s = Schedule(matmul_kernel(), HOST)
    refused(s, "split", "x", 4, match="no loop named 'x'; the loops are: i, i1, i_init, j, j1, j_init, k$")
    refused(s, "vectorize", "x", match="the loops are: i, i1")
    refused(s, "reorder", "i", "nope", match="no loop named 'nope'")
    refused(s, "compute_inline", "S", match="no stage named 'S'; the stages are: T0, out")
    refused(s, "cache_write", "S", "i", match="no stage named 'S'")
    refused(s, "cache_read", "Z", "T0", [0, 1], match="no buffer named 'Z'")


@pytest.mark.parametrize("factor", [0, -1, 2.5, True, "4", None])
def test_refuses_bad_split_factors(factor):
    s = Schedule(matmul_kernel(), HOST)
    refused(s, "split", "i", factor, match="split factor must be a positive integer")


def test_refuses_bad_loop_names():
    s = Schedule(matmul_kernel(), HOST)
    refused(s, "split", "i", 4, ["j", "x"], match="a loop named 'j' exists already")
    refused(s, "split", "i", 4, ["a b", "x"], match="must be letters, digits and underscores")
    refused(s, "fuse", "i", "j", "k", match="a loop named 'k' exists already")


@pytest.mark.parametrize("layout,match", [
    ([0], "must cover each dimension of B once"),
    ([["o", 1, 8], 0], "must cover each dimension of B once"),
    ([0, 1, 2], "B has no dimension 2"),
    ([["o", 1, 0], 0, ["i", 1, 0]], "dimension or factor out of range"),
    ([["q", 1, 8], 0, ["i", 1, 8]], "use a dimension number or \\['o'\\|'i', dim, factor\\]"),
    ([["o", 5, 8], 0, ["i", 5, 8]], "dimension or factor out of range"),
])
def test_refuses_bad_cache_read_layouts(layout, match):
    s = Schedule(matmul_kernel(), HOST)
    refused(s, "cache_read", "B", "T0", layout, match=match)


def test_refuses_cache_read_twice_and_into_attached_stage():
    s = Schedule(matmul_kernel(), HOST)
    s.cache_read("B", "T0", [1, 0])
    refused(s, "cache_read", "B", "T0", [0, 1], match="cached for T0 already")
    p = Schedule(producer_matmul_kernel(), HOST)
    p.compute_at("P", "i1")
    refused(p, "cache_read", "A", "P", [0, 1], match="it is attached")


def test_replay_refuses_unknown_primitive_and_malformed_calls():
    k = matmul_kernel()
    for trace, match in [
        ([{"prim": "explode", "args": []}], "unknown schedule primitive 'explode'; known: split, reorder"),
        ([{"args": ["i", 4]}], "unknown schedule primitive None"),
        (["split"], "unknown schedule primitive None"),
        ([{"prim": "split", "args": "i"}], "args must be a list"),
        ([{"prim": "split", "args": ["i"]}], "split\\('i',\\)"),
        ([{"prim": "split", "args": ["i", 4, 5]}], "split"),
        ([{"prim": "reorder", "args": [["i", "j"]]}], "reorder"),
        ('[{"prim": "tile", "args": ["i", "j", 4, 0]}]', "split factor must be a positive integer"),
    ]:
        with pytest.raises(ScheduleError, match=match):
            replay(k, HOST, trace)


# ============================================================================ former bugs, now refused or correct

def test_reverse_compute_at_at_init_loop_is_refused_or_correct():
    s = Schedule(matmul_kernel(), HOST)
    try:
        s.reverse_compute_at("out", "i_init")
    except ScheduleError:
        return
    check_mm(s)


def test_refused_reverse_compute_at_changes_nothing():
    s = Schedule(matmul_kernel(), HOST)
    s.cache_write("T0", "i")
    try:
        refused(s, "reverse_compute_at", "out", "j", match="T0 is not written there")
    finally:
        check_mm(s)


def test_refused_tile_changes_nothing():
    s = Schedule(matmul_kernel(), HOST)
    refused(s, "tile", "i", "j", 4, 0, match="split factor must be a positive integer")


def test_reorder_of_loops_from_two_nests_is_refused():
    s = Schedule(matmul_kernel(), HOST)
    refused(s, "reorder", "j", "j1", "i", "i1", match="belong to different stages")


def two_matmuls_kernel():
    A = Placeholder("A", (M, K), float32)
    B, B2 = Placeholder("B", (K, N), float32), Placeholder("B2", (K, N), float32)
    T0 = compute((M, N), lambda i, j: reduce("sum", [K], lambda k: A[i, k] * B[k, j]), "T0")
    T1 = compute((M, N), lambda i, j: reduce("sum", [K], lambda k: A[i, k] * B2[k, j]), "T1")
    out = compute((M, N), lambda i, j: T0[i, j] + T1[i, j], "out")
    return Kernel("two", [A, B, B2], [T0, T1, out], [out], "reduction")


def test_reverse_compute_at_epilogue_reading_a_later_stage_is_refused_or_correct():
    a, b = MM_IN[0], MM_IN[1]
    b2 = rand(K, N, seed=10)
    s = Schedule(two_matmuls_kernel(), HOST)
    try:
        s.reverse_compute_at("out", "j")
    except ScheduleError:
        return
    (got,) = run_func(lower_loops(s.finalize()), a, b, b2)
    np.testing.assert_allclose(got, a @ b + a @ b2, rtol=1e-4, atol=1e-4)


def test_cache_write_over_strided_inner_loop_is_refused_or_correct():
    s = Schedule(matmul_kernel(), HOST)
    s.split("i", 8)
    s.reorder("ii", "io")
    try:
        s.cache_write("T0", "ii")
    except ScheduleError:
        return
    check_mm(s)


def test_epilogue_at_tail_split_reduction_loop_runs_once():
    s = Schedule(matmul_kernel(), HOST)
    s.split("k", 4)
    s.cache_write("T0", "ki")
    s.reverse_compute_at("out", "ki")
    check_mm(s)


def test_cache_read_mismatched_split_factors_is_refused():
    s = Schedule(matmul_kernel(), HOST)
    try:
        s.cache_read("B", "T0", [["o", 1, 8], 0, ["i", 1, 4]])
    except ScheduleError:
        return
    check_mm(s)


@pytest.mark.parametrize("layout", [[0, 1, 0], [["o", 1, 8], 0, ["i", 1, 8], ["i", 1, 8]]])
def test_cache_read_repeated_dimension_is_refused(layout):
    s = Schedule(matmul_kernel(), HOST)
    with pytest.raises(ScheduleError, match="once"):
        s.cache_read("B", "T0", layout)


@pytest.mark.parametrize("layout", [[["o", 1], 0], ["x", 1], [["o", 1, "8"], 0, ["i", 1, "8"]], 5, None,
                                    [1.5, 0]])
def test_malformed_cache_read_layout_is_a_schedule_error(layout):
    s = Schedule(matmul_kernel(), HOST)
    with pytest.raises(ScheduleError):
        s.cache_read("B", "T0", layout)


# ============================================================================ 4. JSON traces and replay

def rule_cases():
    return [
        ("mm", matmul_kernel, lambda: MM_IN, lambda: MM_WANT),
        ("ew", elementwise_kernel, lambda: EW_IN, lambda: EW_WANT),
        ("softmax", softmax_kernel, lambda: (SM_IN,), lambda: softmax_ref(SM_IN)),
        ("rowsum", rowsum_kernel, lambda: (SUM_IN,), lambda: SUM_IN.sum(1)),
        ("conv", conv_kernel, lambda: (CONV_X, CONV_W), lambda: conv_ref(CONV_X, CONV_W)),
    ]


@pytest.mark.parametrize("name,make,inputs,want", rule_cases(), ids=[c[0] for c in rule_cases()])
def test_rule_schedule_trace_survives_json_and_replays_identically(name, make, inputs, want):
    kernel = make()
    s = rule_schedule(kernel, HOST)
    text = json.dumps(s.trace)
    trace = json.loads(text)
    assert trace == s.trace
    assert all(set(c) == {"prim", "args"} and c["prim"] in PRIMITIVES for c in trace)
    f = lower_loops(s.finalize())
    again = replay(kernel, HOST, trace)
    assert str(lower_loops(again.finalize())) == str(f)
    assert str(lower_loops(replay(kernel, HOST, text).finalize())) == str(f)      # the JSON string itself
    assert again.trace == trace                                       # replay records the same calls
    assert str(lower_loops(schedule_kernel(kernel, HOST, trace))) == str(f)
    (got,) = run_func(f, *inputs())
    np.testing.assert_allclose(got, want(), rtol=1e-4, atol=1e-4)


def test_tile_records_one_call_not_its_parts():
    s = Schedule(matmul_kernel(), HOST)
    s.tile("i", "j", 4, 8)
    assert s.trace == [{"prim": "tile", "args": ["i", "j", 4, 8]}]


def test_hand_schedule_trace_replays_identically():
    k = matmul_kernel()
    s = Schedule(k, HOST)
    s.tile("i", "j", 4, 8)
    s.reorder("io", "jo", "k", "ii", "ji")
    s.parallel("io")
    name = s.cache_read("B", "T0", [["o", 1, 8], 0, ["i", 1, 8]])
    s.compute_at(name, "jo")                 # inside the parallel loop: one panel per thread
    s.cache_write("T0", "jo")
    s.reverse_compute_at("out", "jo")
    s.vectorize("ji")
    s.unroll("ii")
    s.vectorize(s.stages[name].loop_names[2])
    assert "alloc B_T0_packed: f32[1,23,8] local" in str(s)
    trace = json.loads(json.dumps(s.trace))
    assert [c["prim"] for c in trace] == ["tile", "reorder", "parallel", "cache_read", "compute_at", "cache_write",
                                          "reverse_compute_at", "vectorize", "unroll", "vectorize"]
    f = check_mm(s)
    assert f.scratch == []
    assert str(lower_loops(replay(k, HOST, trace).finalize())) == str(f)


def test_parallel_over_shared_packed_panel_is_refused():
    s = Schedule(matmul_kernel(), HOST)
    s.tile("i", "j", 4, 8)
    name = s.cache_read("B", "T0", [["o", 1, 8], 0, ["i", 1, 8]])
    s.compute_at(name, "jo")
    refused(s, "parallel", "io", match="every iteration writes the same elements of B_T0_packed")


@pytest.mark.parametrize("src,dst", [("mm", "ew"), ("ew", "mm"), ("softmax", "mm"), ("mm", "softmax"),
                                     ("conv", "mm"), ("mm", "rowsum"), ("rowsum", "softmax")])
def test_replay_on_a_different_kernel_is_a_schedule_error(src, dst):
    makers = {c[0]: c[1] for c in rule_cases()}
    trace = json.loads(json.dumps(rule_schedule(makers[src](), HOST).trace))
    assert trace
    with pytest.raises(ScheduleError):
        replay(makers[dst](), HOST, trace)


def test_replay_on_same_structure_other_sizes_either_refuses_or_is_correct():
    trace = rule_schedule(matmul_kernel(), HOST).trace
    A, B = Placeholder("A", (9, 20), float32), Placeholder("B", (20, 6), float32)
    Cb = Placeholder("C", (9, 6), float32)
    T0 = compute((9, 6), lambda i, j: reduce("sum", [20], lambda k: A[i, k] * B[k, j]), "T0")
    out = compute((9, 6), lambda i, j: E.maximum(T0[i, j] + Cb[i, j], E.Const(0.0, float32)), "out")
    small = Kernel("mm", [A, B, Cb], [T0, out], [out], "reduction")
    a, b, c = rand(9, 20), rand(20, 6, seed=1), rand(9, 6, seed=2)
    try:
        s = replay(small, HOST, trace)
    except ScheduleError:
        return
    (got,) = run_func(lower_loops(s.finalize()), a, b, c)
    np.testing.assert_allclose(got, np.maximum(a @ b + c, 0), rtol=1e-4, atol=1e-4)


# ============================================================================ 5. random legal sequences

def random_sequence(rnd: random.Random):
    """A random schedule of the matmul + epilogue kernel: splits by 1..9, a tile-style
    reorder, maybe cache_write and reverse_compute_at, some annotations. A refused
    call must change nothing; the schedule continues from a replay of the accepted
    calls. Returns the schedule and the log of requests.

    Kept clear of the recorded bugs: outer split loops stay outside their inner ones
    (test_cache_write_over_strided_inner_loop_is_refused_or_correct) and no epilogue
    goes at or inside a tail-split inner reduction loop together with the accumulator
    (test_epilogue_at_tail_split_reduction_loop_runs_once)."""
    k = matmul_kernel()
    s = Schedule(k, HOST)
    log = []

    def step(prim, *args):
        nonlocal s
        log.append((prim, args))
        before = str(s)
        try:
            getattr(s, prim)(*args)
            return True
        except ScheduleError as e:
            log.append(("refused", str(e)))
            if prim not in ("vectorize", "reverse_compute_at"):     # recorded bugs: test_refused_*_changes_nothing
                assert str(s) == before, f"refused {prim}{args} changed the schedule"
            s = replay(k, HOST, s.trace)
            return False

    factors = {}
    for axis in "ijk":
        if rnd.random() < 0.75 and step("split", axis, rnd.randint(1, 9)):
            factors[axis] = int(log[-1][1][1])
    outer = [a + "o" if a in factors else a for a in "ijk"]
    inner = [a + "i" for a in "ijk" if a in factors]
    rnd.shuffle(outer)
    rnd.shuffle(inner)
    if rnd.random() < 0.85:
        step("reorder", *(outer + inner))
    nest = [n for n in s.loops()["T0"] if not n.endswith("_init")]
    cw = None
    if rnd.random() < 0.6:
        cw = rnd.choice(nest)
        if not step("cache_write", "T0", cw):
            cw = None
    if rnd.random() < 0.5:
        at = cw if cw and rnd.random() < 0.7 else rnd.choice(nest)
        tail_k = "k" in factors and K % factors["k"] and nest.index(at) >= nest.index("ki")
        if not (tail_k and at == cw):
            step("reverse_compute_at", "out", at)
    for prim in ("vectorize", "unroll", "vectorize", "parallel"):
        if rnd.random() < 0.5:
            loops = s.loops()
            if prim == "parallel":       # outermost loops only: GOMP teams inside loops are slow on small CPUs
                choices = [v[0] for v in loops.values()]
            else:
                choices = [n for v in loops.values() for n in v]
            step(prim, rnd.choice(choices))
    return k, s, log


@pytest.mark.parametrize("seed", range(24))
def test_random_legal_sequences_match_numpy(seed):
    k, s, log = random_sequence(random.Random(seed))
    f = lower_loops(s.finalize())
    assert "likely" not in str(f)
    (got,) = run_func(f, *MM_IN)
    np.testing.assert_allclose(got, MM_WANT, rtol=1e-4, atol=1e-4, err_msg=f"trace {s.trace}\nlog {log}")
    again = replay(k, HOST, json.loads(json.dumps(s.trace)))
    assert str(lower_loops(again.finalize())) == str(f)
