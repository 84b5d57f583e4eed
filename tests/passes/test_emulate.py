"""GPU emulation (mlc.passes.emulate, MLC_CUDA_EMULATE=1): GPU loop nests run as CPU
loops with the device's semantics -- a phase between barriers runs for every thread
before the next starts, shared buffers are one per block, a block-level local is one
per thread -- and the driver compiles cuda targets to host code under it."""
import ctypes

import numpy as np
import pytest

import mlc
from mlc import codegen
from mlc.ir import loop as L
from mlc.ir.loop import GPU_KINDS, Barrier, For
from mlc.ir.stmt import walk_stmts
from mlc.passes.emulate import emulate_gpu
from mlc.passes.loops import lower_loops
from mlc.target import Target

HOST = Target.get("host")
GPU = Target.get("cuda-sm90")


def run(func, *inputs):
    func = emulate_gpu(lower_loops(func))
    L.verify(func, HOST)
    code = codegen.load(codegen.build(codegen.Program.of_func(func, scratch="param"), HOST))
    outs = [np.zeros(b.shape, b.dtype.np) for b in func.outputs]
    arr = lambda xs: (ctypes.c_void_p * max(1, len(xs)))(*[x.ctypes.data for x in xs])
    code.entry(arr([np.ascontiguousarray(x) for x in inputs]), arr(outs), arr([]), None)
    return outs


# each block reverses its 64 elements through shared memory: right only if every thread
# has stored its element before any thread reads another's
REVERSE = """func @rev(a: f32[256], out: f32[256]) {
  // outputs: out
  blockIdx.x b in [0, 4) {
    alloc s: f32[64] shared
    threadIdx.x t in [0, 64) {
      s[t] = a[b * 64 + t]
    }
    barrier
    threadIdx.x t2 in [0, 64) {
      out[b * 64 + t2] = s[63 - t2]
    }
  }
}"""


def test_phases_between_barriers_run_for_every_thread():
    func = L.parse(REVERSE)
    L.verify(func, GPU)
    a = np.arange(256, dtype=np.float32)
    (out,) = run(func, a)
    np.testing.assert_array_equal(out, a.reshape(4, 64)[:, ::-1].ravel())


def test_emulated_function_is_plain_cpu_code():
    func = emulate_gpu(L.parse(REVERSE))
    L.verify(func, HOST)      # a CPU target refuses GPU loops, shared buffers and barriers
    kinds = {s.kind for s, _ in walk_stmts(func.body) if isinstance(s, For)}
    assert kinds == {"serial"}
    assert not any(isinstance(s, Barrier) for s, _ in walk_stmts(func.body))
    assert "alloc s: f32[64] local" in str(func)


# a per-thread register kept across phases: each thread sums its column of a block of 8
# rows, 2 rows per phase, exchanging nothing -- but every thread has its own acc
REGISTERS = """func @colsum(a: f32[3,8,16], out: f32[3,16]) {
  // outputs: out
  blockIdx.x b in [0, 3) {
    alloc acc: f32[1] local
    acc[0] = 0.0
    alloc s: f32[2,16] shared
    for r in [0, 4) {
      threadIdx.y ty in [0, 2) {
        threadIdx.x tx in [0, 16) {
          s[ty, tx] = a[b, r * 2 + ty, tx]
        }
      }
      barrier
      threadIdx.x tx2 in [0, 16) {
        acc[0] = acc[0] + s[0, tx2] + s[1, tx2]
      }
      barrier
    }
    threadIdx.x tx3 in [0, 16) {
      out[b, tx3] = acc[0]
    }
  }
}"""


def test_block_level_locals_are_per_thread():
    func = L.parse(REGISTERS)
    L.verify(func, GPU)
    a = np.random.default_rng(0).standard_normal((3, 8, 16)).astype(np.float32)
    (out,) = run(func, a)
    np.testing.assert_allclose(out, a.sum(axis=1), rtol=1e-5)
    text = str(emulate_gpu(func))
    assert "alloc acc: f32[2,16,1] local" in text    # one copy per thread (y, x) of the block


def test_function_without_gpu_loops_is_unchanged():
    func = L.parse("""func @f(a: f32[4], out: f32[4]) {
  // outputs: out
  for i in [0, 4) {
    out[i] = a[i] + 1.0
  }
}""")
    assert emulate_gpu(func) is func


def test_partition_keeps_gpu_loops_whole():
    # the tail guard stays (the device's bounds check); the grid keeps one shape
    func = lower_loops(L.parse("""func @f(a: f32[300], out: f32[300]) {
  // outputs: out
  blockIdx.x b in [0, 2) {
    threadIdx.x t in [0, 256) {
      if likely b * 256 + t < 300 {
        out[b * 256 + t] = a[b * 256 + t]
      }
    }
  }
}"""))
    tops = func.body.stmts if isinstance(func.body, L.Seq) else [func.body]
    assert len(tops) == 1 and tops[0].kind == "blockIdx.x" and tops[0].extent.value == 2
    assert "if likely b * 256 + t < 300" in str(func)


# ----------------------------------------------------------------------------- the driver

def test_cuda_targets_without_emulation_need_a_device(monkeypatch):
    from mlc.runtime.cuda import CudaUnavailable, cupy_module
    try:
        cupy_module()
        pytest.skip("a CUDA device is present: cuda targets run on it (tests/runtime/test_cuda.py)")
    except CudaUnavailable:
        pass
    monkeypatch.delenv("MLC_CUDA_EMULATE", raising=False)
    x = np.ones(4, np.float32)
    with pytest.raises(CudaUnavailable, match="MLC_CUDA_EMULATE=1"):
        mlc.compile(lambda a: a + 1.0, x, target="cuda-sm90")
    with pytest.raises(ValueError, match="MLC_CUDA_EMULATE"):
        Target.get("cuda")


def test_compile_and_jit_run_gpu_schedules_emulated(monkeypatch):
    monkeypatch.setenv("MLC_CUDA_EMULATE", "1")
    assert Target.get("cuda").name == "cuda-sm90"
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((33, 70)).astype(np.float32), rng.standard_normal((70, 5)).astype(np.float32)

    def f(x, w):
        return mlc.softmax(mlc.relu(x @ w), axis=-1)
    exe = mlc.compile(f, x, w, target="cuda-sm90")
    assert "blockIdx.x" in exe.ir("loop") and "threadIdx.x" in exe.ir("loop")
    want = mlc.compile(f, x, w)(x, w)
    np.testing.assert_allclose(exe(x, w), want, rtol=1e-5, atol=1e-6)
    jf = mlc.jit(f, target="cuda")
    np.testing.assert_allclose(jf(x, w), want, rtol=1e-5, atol=1e-6)
    assert isinstance(jf(x, w), np.ndarray)


def test_emulated_loop_nests_keep_gpu_kinds_in_the_program_text(monkeypatch):
    monkeypatch.setenv("MLC_CUDA_EMULATE", "1")
    x = np.ones((3, 5), np.float32)
    exe = mlc.compile(lambda a: a.sum(), x, target="cuda-sm90")
    np.testing.assert_allclose(exe(x), 15.0)
    kinds = {s.kind for f in L.parse_all(exe.ir("loop")) for s, _ in walk_stmts(f.body) if isinstance(s, For)}
    assert {"blockIdx.x", "threadIdx.x"} <= kinds and kinds <= {"serial", *GPU_KINDS}


def test_partition_peels_a_serial_loop_inside_threads_only_where_it_frees_iterations():
    func = lower_loops(L.parse("""func @f(a: f32[2,1000], out: f32[2,1000]) {
  // outputs: out
  blockIdx.x b in [0, 2) {
    threadIdx.x t in [0, 256) {
      for r in [0, 4) {
        if likely r * 256 + t < 1000 {
          for c in [0, 3) {
            if likely c * 90 + t < 250 {
              out[b, r * 256 + t] = a[b, r * 256 + t] + 1.0
            }
          }
        }
      }
    }
  }
}"""))
    text = str(func)
    assert "for r in [0, 3) {" in text and "if likely 768 + t < 1000 {" in text   # the free iterations split off
    assert text.count("for c in [0, 3) {") == 2   # no iteration of c is free for every thread: not peeled


def test_block_code_reading_registers_is_thread_zeros():
    # every thread counts its own index into its register; block code outside the thread
    # loops runs on thread 0 only, so it reads thread 0's register
    func = L.parse("""func @f(a: f32[2], out: f32[2,8]) {
  // outputs: out
  blockIdx.x b in [0, 2) {
    alloc r: f32[1] local
    r[0] = a[b]
    threadIdx.x t in [0, 8) {
      r[0] = r[0] + f32(t)
    }
    out[b, 0] = r[0] * 10.0
    threadIdx.x t2 in [1, 8) {
      out[b, t2] = r[0]
    }
  }
}""")
    L.verify(func, GPU)
    a = np.array([100, 200], np.float32)
    (out,) = run(func, a)
    want = a[:, None] + np.arange(8, dtype=np.float32)
    want[:, 0] = a * 10
    np.testing.assert_array_equal(out, want)
