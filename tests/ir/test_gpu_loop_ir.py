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
