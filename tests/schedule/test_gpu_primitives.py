"""The GPU schedule primitives (add_loop, register_tile, cache_shared, block_reduce)
and the GPU rules' loop text: each result runs right under emulation, is recorded in
the trace and replays from JSON to the same loops, and refuses what it cannot do,
leaving the schedule as it was."""
import ctypes
import json

import numpy as np
import pytest

from mlc import codegen
from mlc.ir import expr as E
from mlc.ir import loop as L
from mlc.ir.tensor import Kernel, Placeholder, compute, reduce
from mlc.ir.types import float32, float64, int32, int64
from mlc.passes.emulate import emulate_gpu
from mlc.passes.loops import lower_loops
from mlc.schedule.default import rule_schedule
from mlc.schedule.primitives import Schedule, ScheduleError, replay
from mlc.target import Target

GPU = Target.get("cuda-sm90")
HOST = Target.get("host")
M, K, N = 37, 23, 29


def run_gpu(func, *inputs):
    """A finalized GPU function, lowered, verified for the GPU, emulated and run here."""
    func = lower_loops(func)
    L.verify(func, GPU)
    func = emulate_gpu(func)
    code = codegen.load(codegen.build(codegen.Program.of_func(func, scratch="param"), HOST))
    outs = [np.zeros(b.shape, b.dtype.np) for b in func.outputs]
    scratch = [np.full(b.shape, np.nan, b.dtype.np) for b in func.scratch]
    arr = lambda xs: (ctypes.c_void_p * max(1, len(xs)))(*[x.ctypes.data for x in xs])
    code.entry(arr([np.ascontiguousarray(x) for x in inputs]), arr(outs), arr(scratch), None)
    return outs


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def matmul_kernel(m=M, k=K, n=N):
    A, B = Placeholder("A", (m, k), float32), Placeholder("B", (k, n), float32)
    out = compute((m, n), lambda i, j: reduce("sum", [k], lambda r: A[i, r] * B[r, j]), "out")
    return Kernel("mm", [A, B], [out], [out], "reduction")


def rowsum_kernel(rows=5, k=300, combiner="sum"):
    A = Placeholder("A", (rows, k), float32)
    out = compute((rows,), lambda i: reduce(combiner, [k], lambda r: A[i, r] * A[i, r]), "out")
    return Kernel("rowsum", [A], [out], [out], "reduction")


def tiled(s: Schedule) -> Schedule:
    """A 16 x 16 block tile, 4 x 4 threads of 4 x 4 registers, k-tiles of 8."""
    s.split("i", 16, ["bi", "im"])
    s.split("im", 4, ["ty", "ri"])
    s.split("j", 16, ["bj", "jm"])
    s.split("jm", 4, ["tx", "rj"])
    s.split("k", 8, ["ko", "ki"])
    s.reorder("bi", "bj", "ko", "ty", "tx", "ki", "ri", "rj")
    for loop, axis in (("bi", "blockIdx.y"), ("bj", "blockIdx.x"), ("ty", "threadIdx.y"), ("tx", "threadIdx.x")):
        s.bind(loop, axis)
    return s


A_MM, B_MM = rand(M, K, seed=1), rand(K, N, seed=2)


def test_register_tile_and_cache_shared_compute_a_matmul():
    s = tiled(Schedule(matmul_kernel(), GPU))
    assert s.register_tile("out", "ko") == "acc"
    s.cache_shared("A", "ko")
    s.cache_shared("B", "ko")
    text = str(s)
    assert "alloc acc: f32[4,4] local" in text
    assert "alloc A_shared: f32[16,8] shared" in text and "alloc B_shared: f32[8,16] shared" in text
    assert "i_init" not in text                     # the registers start the reduction
    assert text.count("barrier") == 2               # one copy phase for both tiles, one after the work
    (out,) = run_gpu(s.finalize(), A_MM, B_MM)
    np.testing.assert_allclose(out, A_MM @ B_MM, rtol=1e-5, atol=1e-5)


def test_cache_shared_alone_stages_reads_of_a_global_accumulation():
    s = tiled(Schedule(matmul_kernel(), GPU))
    s.cache_shared("B", "ko")
    (out,) = run_gpu(s.finalize(), A_MM, B_MM)
    np.testing.assert_allclose(out, A_MM @ B_MM, rtol=1e-5, atol=1e-5)


def rowsum_kernel_of(dtype, rows, k, combiner):
    A = Placeholder("A", (rows, k), dtype)
    out = compute((rows,), lambda i: reduce(combiner, [k], lambda r: A[i, r] * A[i, r]), "out")
    return Kernel("rowsum", [A], [out], [out], "reduction")


@pytest.mark.parametrize("combiner,threads", [("sum", 64), ("max", 256), ("sum", 32), ("prod", 1024)])
def test_block_reduce_combines_a_block_by_warp_shuffles(combiner, threads):
    s = Schedule(rowsum_kernel(combiner=combiner), GPU)
    s.block_reduce("out", threads)
    text = str(s)
    assert "blockIdx.x out_row in [0, 5)" in text
    warps = threads // 32
    # one shuffle reduction per warp, a second over the warps' results when there are several
    assert text.count("warp_reduce") == (1 if warps == 1 else 2)
    assert text.count("barrier") == (0 if warps == 1 else 1)
    assert (f"alloc out_red: f32[{warps}] shared" in text) == (warps > 1)
    a = rand(5, 300) * (0.1 if combiner == "prod" else 1) + (1 if combiner == "prod" else 0)
    (out,) = run_gpu(s.finalize(), a)
    np.testing.assert_allclose(out, getattr(np, combiner)(a * a, axis=1), rtol=1e-5)


@pytest.mark.parametrize("combiner,threads", [("min", 2), ("max", 16)])
def test_block_reduce_below_a_warp_combines_through_a_shared_tree(combiner, threads):
    s = Schedule(rowsum_kernel(combiner=combiner), GPU)
    s.block_reduce("out", threads)
    text = str(s)
    assert "shared" in text and "warp_reduce" not in text
    assert text.count("barrier") == threads.bit_length() - 1
    a = rand(5, 300)
    (out,) = run_gpu(s.finalize(), a)
    np.testing.assert_allclose(out, getattr(np, combiner)(a * a, axis=1), rtol=1e-5)


@pytest.mark.parametrize("dtype,combiner", [(int32, "max"), (int64, "sum"), (float64, "min")])
def test_block_reduce_shuffles_integers_and_64_bit_values(dtype, combiner):
    s = Schedule(rowsum_kernel_of(dtype, 3, 200, combiner), GPU)
    s.block_reduce("out", 64)
    a = np.random.default_rng(1).integers(-1000, 1000, (3, 200)).astype(dtype.np)
    (out,) = run_gpu(s.finalize(), a)
    np.testing.assert_array_equal(out, getattr(np, combiner)(a * a, axis=1))
    ptx = codegen.build(codegen.Program.of_func(lower_loops(s.finalize())), GPU).decode()
    assert "shfl.sync.bfly.b32" in ptx


@pytest.mark.parametrize("rows,k,threads,blocks", [(1, 5000, 64, 7), (3, 1000, 32, 4), (2, 4096, 128, 8)])
def test_block_reduce_in_two_phases_sums_each_rows_partials(rows, k, threads, blocks):
    s = Schedule(rowsum_kernel(rows, k), GPU)
    s.block_reduce("out", threads, blocks)
    func = s.finalize()
    top = func.body.stmts if isinstance(func.body, L.Seq) else [func.body]
    assert [str(x.extent) for x in top if isinstance(x, L.For)] == [str(rows * blocks), str(rows)]   # two launches
    assert [b.shape for b in func.scratch] == [(rows * blocks,)]   # the partials
    a = rand(rows, k)
    (out,) = run_gpu(func, a)
    np.testing.assert_allclose(out, (a * a).sum(axis=1), rtol=1e-5)
    assert json.loads(json.dumps(s.trace))[-1] == {"prim": "block_reduce", "args": ["out", threads, blocks]}


def test_add_loop_gives_a_scalar_stage_loops_to_bind():
    A = Placeholder("A", (40,), float32)
    out = compute((), lambda: reduce("sum", [40], lambda r: A[r]), "out")
    s = Schedule(Kernel("total", [A], [out], [out], "reduction"), GPU)
    s.add_loop("out", "t")
    s.add_loop("out", "b")
    s.bind("b", "blockIdx.x")
    s.bind("t", "threadIdx.x")          # one iteration: no race, although it reduces
    assert str(s).splitlines()[2].strip() == "blockIdx.x b in [0, 1) {"
    a = rand(40)
    (out,) = run_gpu(s.finalize(), a)
    np.testing.assert_allclose(out, a.sum(), rtol=1e-5)


def test_gpu_traces_replay_from_json():
    for kernel in (matmul_kernel(), matmul_kernel(64, 32, 128), rowsum_kernel()):
        s = rule_schedule(kernel, GPU)
        again = replay(kernel, GPU, json.dumps(s.trace))
        assert str(again.finalize()) == str(s.finalize())
        assert {c["prim"] for c in s.trace} & {"bind", "block_reduce", "register_tile", "cache_shared"}


def refuses(s: Schedule, call, match: str):
    before, trace = str(s), list(s.trace)
    with pytest.raises(ScheduleError, match=match):
        call()
    assert str(s) == before and s.trace == trace


def test_gpu_primitives_refuse_what_they_cannot_do():
    s = tiled(Schedule(matmul_kernel(), GPU))
    refuses(s, lambda: s.cache_shared("A", "tx"), "outside its thread loops")
    refuses(s, lambda: s.cache_shared("C", "ko"), "no global buffer named 'C'")
    refuses(s, lambda: s.register_tile("out", "ki"), "serial loop of a block")
    refuses(s, lambda: s.block_reduce("out", 48), "power of two")
    refuses(s, lambda: s.block_reduce("out", 64), "loops were transformed")
    refuses(s, lambda: s.add_loop("out", "ko"), "exists already")
    cpu = Schedule(rowsum_kernel(), HOST)
    refuses(cpu, lambda: cpu.block_reduce("out", 64), "not a GPU")
    plain = Schedule(matmul_kernel(), GPU)
    refuses(plain, lambda: plain.register_tile("out", "k"), "serial loop of a block")


def test_rules_loop_text_names_blocks_threads_shared_memory_and_barriers():
    mm = str(lower_loops(rule_schedule(matmul_kernel(128, 64, 128), GPU).finalize()))
    for word in ("blockIdx.y", "blockIdx.x", "threadIdx.y", "threadIdx.x", "shared", "barrier"):
        assert word in mm, word
    assert "if " not in mm          # tiles that divide the shapes need no guards
    red = str(lower_loops(rule_schedule(rowsum_kernel(8, 1000), GPU).finalize()))
    for word in ("blockIdx.x", "threadIdx.x", "shared", "barrier"):
        assert word in red, word


def matmul_relu_kernel():
    A, B, C = Placeholder("A", (M, K), float32), Placeholder("B", (K, N), float32), Placeholder("C", (N,), float32)
    T0 = compute((M, N), lambda i, j: reduce("sum", [K], lambda r: A[i, r] * B[r, j]), "T0")
    out = compute((M, N), lambda i, j: E.maximum(T0[i, j] + C[j], E.Const(0.0, float32)), "out")
    return Kernel("mm_relu", [A, B, C], [T0, out], [out], "reduction")


def test_register_tile_computes_the_epilogue_from_the_registers():
    s = tiled(Schedule(matmul_relu_kernel(), GPU))
    refuses(s, lambda: s.register_tile("T0", "ko", "T0"), "loops were transformed")
    refuses(s, lambda: s.register_tile("T0", "ko", "Z"), "no stage named 'Z'")
    s.register_tile("T0", "ko", "out")
    s.cache_shared("A", "ko")
    func = s.finalize()
    assert "T0" not in [b.name for b in func.params]     # the product never reaches memory
    c = rand(N, seed=3)
    (out,) = run_gpu(func, A_MM, B_MM, c)
    np.testing.assert_allclose(out, np.maximum(A_MM @ B_MM + c, 0), rtol=1e-5, atol=1e-5)
    again = replay(matmul_relu_kernel(), GPU, json.dumps(s.trace))
    assert str(again.finalize()) == str(func)


def test_rules_fuse_a_matmul_epilogue_into_one_launch():
    func = lower_loops(rule_schedule(matmul_relu_kernel(), GPU).finalize())
    tops = func.body.stmts if isinstance(func.body, L.Seq) else [func.body]
    assert len(tops) == 1 and "max(acc[" in str(func)


# ----------------------------------------------------------------------------- tensor cores

def half_matmul_kernel(m, k, n, batch=(), transposed_b=False, relu=False):
    from mlc.ir.expr import Cast
    from mlc.ir.types import float16
    A = Placeholder("A", (*batch, m, k), float16)
    B = Placeholder("B", (*batch, n, k) if transposed_b else (*batch, k, n), float16)

    def prod(*ix):
        *b, i, j = ix
        return reduce("sum", [k], lambda r: Cast(float32, A[(*b, i, r)]) *
                      Cast(float32, B[(*b, j, r)] if transposed_b else B[(*b, r, j)]))
    t = compute((*batch, m, n), prod, "T0")
    if not relu:
        return Kernel("mm", [A, B], [t], [t], "contraction")
    out = compute((*batch, m, n), lambda *ix: E.maximum(Cast(float16, t[ix]), E.Const(0.0, float16)), "out")
    return Kernel("mm", [A, B], [t, out], [out], "contraction")


def _half(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float16)


@pytest.mark.parametrize("m,k,n,batch,transposed,relu", [(70, 40, 50, (), False, False), (16, 16, 8, (), True, False),
                                                          (33, 64, 100, (3,), False, True)])
def test_mma_tiles_computes_float16_products_on_tensor_cores(m, k, n, batch, transposed, relu):
    s = Schedule(half_matmul_kernel(m, k, n, batch, transposed, relu), GPU)
    s.mma_tiles("T0", "out" if relu else None)
    func = s.finalize()
    assert "mma_m16n8k16" in str(func) and ("blockIdx.z" in str(func)) == bool(batch)
    a, b = _half(*batch, m, k), _half(*batch, n, k, seed=1) if transposed else _half(*batch, k, n, seed=1)
    (out,) = run_gpu(func, a, b)
    want = a.astype(np.float32) @ (np.swapaxes(b, -1, -2) if transposed else b).astype(np.float32)
    if relu:
        want = np.maximum(want.astype(np.float16), 0)
    np.testing.assert_allclose(out, want, rtol=2e-3 if relu else 1e-5, atol=1e-3 if relu else 1e-4)
    assert json.loads(json.dumps(s.trace))[-1]["prim"] == "mma_tiles"
    again = replay(half_matmul_kernel(m, k, n, batch, transposed, relu), GPU, json.dumps(s.trace))
    assert str(again.finalize()) == str(func)
    for arch in ("cuda-sm80", "cuda-sm90"):
        ptx = codegen.build(codegen.Program.of_func(lower_loops(rule_schedule(
            half_matmul_kernel(m, k, n, batch, transposed, relu), Target.get(arch)).finalize())), arch).decode()
        assert "mma.sync.aligned.m16n8k16" in ptx   # the GPU rules pick tensor cores for float16 products
        try:
            codegen.nvptx.assemble(ptx, Target.get(arch).arch)
        except codegen.cross.ToolchainNotFound:
            pass


def test_mma_tiles_refuses_what_tensor_cores_do_not_compute():
    f32 = Schedule(matmul_kernel(), GPU)
    refuses(f32, lambda: f32.mma_tiles("out"), "each factor must be a float16 value")
    s = Schedule(half_matmul_kernel(32, 32, 32), GPU)
    refuses(s, lambda: s.mma_tiles("T0", k_tile=24), "k_tile must be a multiple of 16, got 24")
    refuses(s, lambda: s.mma_tiles("T0", warps_m=8, warps_n=8), "8 x 8 warps are more than 1024 threads")
    cpu = Schedule(half_matmul_kernel(32, 32, 32), HOST)
    refuses(cpu, lambda: cpu.mma_tiles("T0"), "tensor cores .* need sm_80 or newer")
