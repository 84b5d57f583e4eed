"""The loop level's GPU vocabulary: shared buffers and barriers, printed, parsed back
and verified against the target."""
import pytest

from mlc.ir.loop import Barrier, parse, verify
from mlc.ir.text import VerifyError
from mlc.target import Target

BLOCK_SUM = """func @block_sum(x: f32[1024], out: f32[4]) {
  // outputs: out
  blockIdx.x b in [0, 4) {
    alloc tile: f32[256] shared
    threadIdx.x t in [0, 256) {
      tile[t] = x[b * 256 + t]
    }
    barrier
    threadIdx.x t1 in [0, 1) {
      out[b] = tile[0] + tile[255]
    }
  }
}"""


def test_shared_buffers_and_barriers_round_trip():
    f = parse(BLOCK_SUM)
    assert str(f) == BLOCK_SUM
    alloc = f.body.body
    assert alloc.buffer.scope == "shared" and any(isinstance(s, Barrier) for s in alloc.body.stmts)
    verify(f, Target.get("cuda-sm90"))
    verify(f)   # no target: every kind allowed


def test_gpu_vocabulary_is_refused_on_a_cpu_target():
    with pytest.raises(VerifyError, match="bound to blockIdx.x, but target znver3 is not a GPU"):
        verify(parse(BLOCK_SUM), Target.get("znver3"))
    cpu_shared = BLOCK_SUM.replace("blockIdx.x b", "for b").replace("threadIdx.x t ", "for t ").replace(
        "threadIdx.x t1", "for t1").replace("    barrier\n", "")
    with pytest.raises(VerifyError, match="shared buffer tile, but target znver3 is not a GPU"):
        verify(parse(cpu_shared), Target.get("znver3"))


def test_a_barrier_inside_a_thread_loop_is_refused():
    inside = BLOCK_SUM.replace("      tile[t] = x[b * 256 + t]\n", "      tile[t] = x[b * 256 + t]\n      barrier\n")
    with pytest.raises(VerifyError, match="a barrier inside a threadIdx loop"):
        verify(parse(inside), Target.get("cuda-sm90"))


WARP_SUM = """func @warp_sum(x: f32[256], out: f32[4]) {
  // outputs: out
  blockIdx.x b in [0, 4) {
    alloc acc: f32[1] local
    threadIdx.x t in [0, 64) {
      acc[0] = x[b * 64 + t]
    }
    warp_reduce sum acc[0]
    threadIdx.x t1 in [0, 1) {
      out[b] = acc[0]
    }
  }
}"""


def test_warp_reduce_round_trips_and_verifies():
    f = parse(WARP_SUM)
    assert str(f) == WARP_SUM
    verify(f, Target.get("cuda-sm90"))
    on_cpu = WARP_SUM.replace("blockIdx.x b", "for b").replace("threadIdx.x t ", "for t ").replace(
        "threadIdx.x t1", "for t1")
    with pytest.raises(VerifyError, match="warp_reduce of acc, but target znver3 is not a GPU"):
        verify(parse(on_cpu), Target.get("znver3"))


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.replace("      acc[0] = x[b * 64 + t]\n", "      acc[0] = x[b * 64 + t]\n      warp_reduce sum acc[0]\n"),
     "warp_reduce of acc inside a threadIdx loop"),
    (lambda t: t.replace("acc: f32[1] local", "acc: f32[1] shared"), "a per-thread register .* acc is shared f32"),
])
def test_warp_reduce_is_refused_where_every_thread_cannot_take_part(edit, match):
    with pytest.raises(VerifyError, match=match):
        verify(parse(edit(WARP_SUM)), Target.get("cuda-sm90"))


def test_warp_reduce_parse_errors_name_the_problem():
    from mlc.ir.text import ParseError
    with pytest.raises(ParseError, match="warp_reduce combines with sum, prod, max or min, not 'avg'"):
        parse(WARP_SUM.replace("warp_reduce sum", "warp_reduce avg"))
    with pytest.raises(ParseError, match="warp_reduce of acd, which is not an enclosing alloc"):
        parse(WARP_SUM.replace("warp_reduce sum acc", "warp_reduce sum acd"))


def test_warp_reduce_needs_whole_warps_on_the_device_and_in_emulation():
    from mlc.codegen import Program, build
    from mlc.codegen.nvptx import GpuCodegenError
    from mlc.passes.emulate import emulate_gpu
    partial = parse(WARP_SUM.replace("[0, 64)", "[0, 48)").replace("b * 64", "b * 48"))
    with pytest.raises(GpuCodegenError, match="warp_reduce in a block of 48 threads"):
        build(Program.of_func(partial), Target.get("cuda-sm90"))
    with pytest.raises(ValueError, match="warp_reduce in a block of 48 threads"):
        emulate_gpu(partial)


MMA = """func @mma(A: f16[32,32], B: f16[32,16], out: f32[32,16]) {
  // outputs: out
  blockIdx.x bm in [0, 2) {
    alloc acc: f32[4] local
    threadIdx.x t in [0, 64) {
      for q in [0, 4) {
        acc[q] = 0.0
      }
    }
    threadIdx.x t1 in [0, 64) {
      for ko in [0, 2) {
        mma_m16n8k16 acc[0] += A[bm * 16, ko * 16] * B[ko * 16, t1 // 32 * 8]
      }
    }
    threadIdx.x t2 in [0, 64) {
      for q in [0, 4) {
        out[bm * 16 + t2 % 32 // 4 + q // 2 * 8, t2 // 32 * 8 + t2 % 4 * 2 + q % 2] = acc[q]
      }
    }
  }
}"""


def _run_emulated(func, *inputs):
    import ctypes

    import numpy as np

    from mlc import codegen
    from mlc.passes.emulate import emulate_gpu
    from mlc.passes.loops import lower_loops
    code = codegen.load(codegen.build(codegen.Program.of_func(emulate_gpu(lower_loops(func)), scratch="param"),
                                      Target.get("host")))
    outs = [np.zeros(b.shape, b.dtype.np) for b in func.outputs]
    arr = lambda xs: (ctypes.c_void_p * max(1, len(xs)))(*[x.ctypes.data for x in xs])   # noqa: E731
    code.entry(arr(list(inputs)), arr(outs), arr([]), None)
    return outs


def test_mma_round_trips_verifies_emulates_and_assembles():
    import numpy as np

    from mlc import codegen
    from mlc.codegen import nvptx
    f = parse(MMA)
    assert str(f) == MMA
    verify(f, Target.get("cuda-sm90"))
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((32, 32)).astype(np.float16), rng.standard_normal((32, 16)).astype(np.float16)
    (out,) = _run_emulated(f, a, b)
    np.testing.assert_allclose(out, a.astype(np.float32) @ b.astype(np.float32), rtol=1e-5, atol=1e-5)
    gm = nvptx.build_gpu(codegen.Program.of_func(f), Target.get("cuda-sm90"))
    assert "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in gm.ptx
    try:
        nvptx.find_ptxas()
    except nvptx.ToolchainNotFound:
        return
    nvptx.assemble(gm.ptx, "sm_90")


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.replace("A: f16[32,32]", "A: f32[32,32]"), "A is f32, the instruction takes f16"),
    (lambda t: t.replace("acc: f32[4] local", "acc: f16[4] local").replace("acc[q] = 0.0", "acc[q] = 0.0:f16")
     .replace("= acc[q]", "= f32(acc[q])"), "acc is f16, the instruction takes f32"),
    (lambda t: t.replace("    threadIdx.x t1 in [0, 64) {\n      for ko", "    for t1 in [0, 64) {\n      for ko"),
     "runs inside threadIdx.x loops only"),
])
def test_mma_is_refused_where_it_cannot_run(edit, match):
    with pytest.raises(VerifyError, match=match):
        verify(parse(edit(MMA)), Target.get("cuda-sm90"))


def test_mma_needs_a_block_of_whole_warps_along_x():
    from mlc.codegen import Program, build
    from mlc.codegen.nvptx import GpuCodegenError
    two_d = MMA.replace("threadIdx.x t in [0, 64)", "threadIdx.y t in [0, 2)").replace(
        "      for q in [0, 4) {\n        acc[q] = 0.0", "      for q in [0, 4) {\n        acc[q] = 0.0")
    with pytest.raises(GpuCodegenError, match=r"mma_m16n8k16 needs a threadIdx.x loop in a block of whole warps "
                                              r"along x, the block is \(64, 2, 1\)"):
        build(Program.of_func(parse(two_d)), Target.get("cuda-sm90"))
