"""The NVPTX code generator (codegen/nvptx.py): hand-written GPU functions (parsed from
text) to PTX, checked in the PTX text, the launch table and by ptxas for sm_80 and sm_90;
whole models once the default schedules for cuda targets bind loops."""
import os
import re
import shutil

import numpy as np
import pytest

from mlc import codegen
from mlc.codegen import nvptx
from mlc.codegen.cross import ToolchainNotFound
from mlc.ir.loop import GPU_KINDS, For, parse, verify
from mlc.ir.plan import EntryCall, Slot
from mlc.target import Target

SM80, SM90 = Target.get("cuda-sm80"), Target.get("cuda-sm90")
HAS_PTXAS = shutil.which("ptxas") is not None or os.access("/usr/local/cuda/bin/ptxas", os.X_OK)
needs_ptxas = pytest.mark.skipif(not HAS_PTXAS, reason="ptxas (CUDA toolkit) is not installed")
needs_libdevice = pytest.mark.skipif(nvptx.find_libdevice() is None, reason="libdevice (CUDA toolkit) is not installed")

AXPY = """func @axpy(x: f32[1000], y: f32[1000], out: f32[1000]) {
  // outputs: out
  blockIdx.x b in [0, 4) {
    threadIdx.x t in [0, 256) {
      if b * 256 + t < 1000 {
        out[b * 256 + t] = x[b * 256 + t] * 2.0 + y[b * 256 + t]
      }
    }
  }
}"""

# 256 threads load a block's slice into shared memory; 16 of them add up 16 values each
# (a thread loop smaller than the block: guarded); one adds the 16 partial sums
BLOCK_SUM = """func @block_sum(x: f32[1024], out: f32[4]) {
  // outputs: out
  blockIdx.x b in [0, 4) {
    alloc tile: f32[256] shared
    alloc partial: f32[16] shared
    threadIdx.x t in [0, 256) {
      tile[t] = x[b * 256 + t]
    }
    barrier
    threadIdx.x t1 in [0, 16) {
      partial[t1] = 0.0
      for k in [0, 16) {
        partial[t1] = partial[t1] + tile[t1 * 16 + k]
      }
    }
    barrier
    threadIdx.x t2 in [0, 1) {
      out[b] = 0.0
      for k1 in [0, 16) {
        out[b] = out[b] + partial[k1]
      }
    }
  }
}"""


def program(text: str, target=SM90) -> codegen.Program:
    f = parse(text)
    verify(f, target)
    return codegen.Program.of_func(f)


def assembles(ptx: str, target) -> None:
    assert nvptx.assemble(ptx, target.arch)[:4] == b"\x7fELF"   # ptxas's cubin is an ELF file


def ptx_for(text: str, target=SM90) -> str:
    return codegen.build(program(text, target), target).decode()


def test_backend_for_cuda_targets():
    b = codegen.backend(SM90)
    assert isinstance(b, nvptx.NVPTXBackend) and b.kind == "cuda" and not b.runs_parallel(SM90)
    with pytest.raises(RuntimeError, match="runs on a CUDA device through a GPU runtime"):
        b.load(b"", SM90)


@needs_ptxas
def test_elementwise_kernel():
    p = program(AXPY)
    gm = nvptx.build_gpu(p, SM90)
    assert ".entry axpy_k0(" in gm.ptx and ".target sm_90" in gm.ptx
    assert "%tid.x" in gm.ptx and "%ctaid.x" in gm.ptx and ".maxntid 256, 1, 1" in gm.ptx
    assert gm.launches == [nvptx.Launch("axpy_k0", (4, 1, 1), (256, 1, 1), 0,
                                        (Slot("input", 0), Slot("input", 1), Slot("output", 0)), "axpy")]
    assert ".target sm_80" in nvptx.build_gpu(p, SM80).ptx
    assembles(gm.ptx, SM90)
    assembles(nvptx.build_gpu(p, SM80).ptx, SM80)


@needs_ptxas
def test_block_reduction_through_shared_memory():
    p = program(BLOCK_SUM)
    source = codegen.source(p, SM90)
    assert "addrspace(3) global [256 x float]" in source and "llvm.nvvm.barrier0" in source
    assert 'icmp ult i64 %"threadIdx.x", 16' in source      # the 16-thread loop in a 256-thread block
    assert 'icmp ult i64 %"threadIdx.x", 1' in source
    gm = nvptx.build_gpu(p, SM90)
    assert "st.shared" in gm.ptx and "ld.shared" in gm.ptx and gm.ptx.count("bar.sync") == 2
    (launch,) = gm.launches
    assert (launch.grid, launch.block, launch.shared_bytes) == ((4, 1, 1), (256, 1, 1), 256 * 4 + 16 * 4)
    assembles(nvptx.build_gpu(p, SM80).ptx, SM80)
    assembles(gm.ptx, SM90)


@needs_ptxas
def test_over_48_kib_of_shared_memory_is_dynamic():
    # 2 x 32 KiB of tiles: over the static limit, so both live in dynamic shared memory
    big = BLOCK_SUM.replace("tile: f32[256] shared", "tile: f32[8192] shared").replace(
        "partial: f32[16] shared", "partial: f32[8192] shared")
    p = program(big)
    gm = nvptx.build_gpu(p, SM90)
    (launch,) = gm.launches
    assert launch.shared_bytes == launch.dynamic_shared_bytes == 2 * 8192 * 4
    assert ".extern .shared .align 16 .b8 block_sum_k0_dynamic_shared[];" in gm.ptx
    assembles(gm.ptx, SM90)
    small = nvptx.build_gpu(program(BLOCK_SUM), SM90).launches[0]
    assert (small.shared_bytes, small.dynamic_shared_bytes) == (256 * 4 + 16 * 4, 0)
    huge = BLOCK_SUM.replace("tile: f32[256] shared", "tile: f32[50000] shared")   # 200 000 bytes
    assert nvptx.build_gpu(program(huge), SM90).launches[0].dynamic_shared_bytes == 200000 + 64
    with pytest.raises(nvptx.GpuCodegenError, match="block_sum_k0 allocates 200064 bytes of shared memory: a block "
                                                    "on sm_80 has at most 166912"):
        nvptx.build_gpu(program(huge, SM80), SM80)


@needs_ptxas
def test_two_dimensional_launch_and_statements_outside_thread_loops():
    # a store outside the thread loops happens once per block: thread (0, 0) makes it
    text = """func @tile2d(a: f32[64,128], out: f32[64,128], rows: f32[64]) {
  // outputs: out, rows
  blockIdx.y by in [0, 4) {
    blockIdx.x bx in [0, 8) {
      threadIdx.y ty in [0, 16) {
        threadIdx.x tx in [0, 16) {
          out[by * 16 + ty, bx * 16 + tx] = a[by * 16 + ty, bx * 16 + tx] + 1.0
        }
      }
      rows[by * 16] = a[by * 16, 0]
    }
  }
}"""
    p = program(text)
    source = codegen.source(p, SM90)
    assert 'icmp eq i64 %"threadIdx.x", 0' in source and 'icmp eq i64 %"threadIdx.y", 0' in source
    gm = nvptx.build_gpu(p, SM90)
    assert [(l.grid, l.block) for l in gm.launches] == [((8, 4, 1), (16, 16, 1))]
    assert "%ctaid.y" in gm.ptx and "%tid.y" in gm.ptx and ".maxntid 16, 16, 1" in gm.ptx
    assembles(gm.ptx, SM90)


def test_launch_table_follows_the_calls():
    # two launch nests: two kernels; the function called twice: its kernels launched twice, in call order
    text = """func @two(x: f32[256], y: f32[256], out: f32[256]) {
  // outputs: y, out
  blockIdx.x b in [0, 2) {
    threadIdx.x t in [0, 128) {
      y[b * 128 + t] = x[b * 128 + t] * 3.0
    }
  }
  blockIdx.x b1 in [0, 1) {
    threadIdx.x t1 in [0, 64) {
      for k in [0, 4) {
        out[t1 * 4 + k] = y[t1 * 4 + k] + 1.0
      }
    }
  }
}"""
    f = parse(text)
    first = [Slot("input", 0), Slot("workspace", 0), Slot("output", 0)]
    second = [Slot("output", 0), Slot("workspace", 1024), Slot("output", 1)]
    p = codegen.Program("m", [f], [EntryCall(f, first), EntryCall(f, second)], workspace_bytes=2048)
    gm = nvptx.build_gpu(p, SM90)
    assert gm.workspace_bytes == 2048
    assert [(l.kernel, l.grid, l.block, list(l.args)) for l in gm.launches] == [
        ("two_k0", (2, 1, 1), (128, 1, 1), first), ("two_k1", (1, 1, 1), (64, 1, 1), first),
        ("two_k0", (2, 1, 1), (128, 1, 1), second), ("two_k1", (1, 1, 1), (64, 1, 1), second)]
    assert gm.ptx.count(".entry ") == 2
    if HAS_PTXAS:
        assembles(gm.ptx, SM90)


MATH = """func @math(x: f32[256], d: f64[256], h: f16[256], out: f32[256], dout: f64[256], hout: f16[256]) {
  // outputs: out, dout, hout
  blockIdx.x b in [0, 1) {
    threadIdx.x t in [0, 256) {
      out[t] = exp(x[t]) + tanh(x[t]) + erf(x[t]) + log(x[t]) + pow(x[t], 2.5) + sqrt(x[t]) + max(x[t], 0.0)
      dout[t] = exp(d[t]) + tanh(d[t]) + sin(d[t]) + min(d[t], 1.0:f64)
      hout[t] = exp(h[t]) + tanh(h[t])
    }
  }
}"""


@needs_ptxas
@needs_libdevice
def test_math_functions_come_from_libdevice():
    p = program(MATH)
    source = codegen.source(p, SM90)
    for fn in ("__nv_expf", "__nv_tanhf", "__nv_erff", "__nv_logf", "__nv_powf", "__nv_exp", "__nv_tanh", "__nv_sin"):
        assert f'@"{fn}"' in source, fn
    ptx = codegen.build(p, SM90).decode()
    assert ".extern" not in ptx and "__nv_" not in ptx   # linked in and inlined: nothing left to resolve
    assembles(ptx, SM90)
    assembles(codegen.build(p, SM80).decode(), SM80)


@needs_ptxas
def test_without_libdevice_exp_and_tanh_are_inline(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))   # a toolkit without libdevice
    assert nvptx.find_libdevice() is None
    text = MATH.replace(" + erf(x[t]) + log(x[t]) + pow(x[t], 2.5)", "").replace(
        "      dout[t] = exp(d[t]) + tanh(d[t]) + sin(d[t]) + min(d[t], 1.0:f64)\n", "      dout[t] = d[t]\n")
    p = program(text)
    assert "__nv_" not in codegen.source(p, SM90)
    monkeypatch.setenv("PATH", os.path.dirname(shutil.which("ptxas") or "/usr/local/cuda/bin/ptxas"))
    assembles(codegen.build(p, SM90).decode(), SM90)
    with pytest.raises(nvptx.GpuCodegenError, match="kernel math_k0: erf on f32 needs libdevice, which was not found"):
        codegen.source(program(MATH), SM90)


def test_top_level_statement_outside_a_block_loop_is_refused():
    text = """func @loose(x: f32[8], out: f32[8]) {
  // outputs: out
  for i in [0, 8) {
    out[i] = x[i]
  }
}"""
    with pytest.raises(nvptx.GpuCodegenError, match=r"func @loose: 'for i in \[0, 8\) \{' is outside every blockIdx "
                                                    "loop"):
        codegen.source(program(text), SM90)


def test_a_collective_function_is_a_launch_table_entry_and_other_runtime_calls_are_refused():
    text = """func @gather(x: f32[8], y: f32[16]) {
  // outputs: y
  call mlc_collective({"op": "allgather"}, x, y)
}"""
    gm = nvptx.build_gpu(codegen.Program.of_func(parse(text)), SM90)
    (entry,) = gm.launches
    assert entry.collective == '{"op": "allgather"}' and [a.space for a in entry.args] == ["input", "output"]
    assert ".entry" not in gm.ptx   # no kernel: the runtime's communicator runs it
    mixed = """func @gather(x: f32[8], y: f32[16]) {
  // outputs: y
  call mlc_collective({"op": "allgather"}, x, y)
  blockIdx.x b in [0, 1) {
    threadIdx.x t in [0, 16) {
      y[t] = y[t] * 2.0
    }
  }
}"""
    with pytest.raises(nvptx.GpuCodegenError, match="func @gather: call mlc_collective: runtime calls"):
        nvptx.build_gpu(codegen.Program.of_func(parse(mixed)), SM90)


def test_bound_loops_need_constant_extents():
    text = """func @ragged(x: f32[4,4], out: f32[4,4]) {
  // outputs: out
  blockIdx.x b in [0, 4) {
    threadIdx.x t in [0, b + 1) {
      out[b, t] = x[b, t]
    }
  }
}"""
    with pytest.raises(nvptx.GpuCodegenError, match="func @ragged: loop t is bound to threadIdx.x with extent b "
                                                    r"\+ 1: bound loops need a constant extent"):
        nvptx.build_gpu(program(text), SM90)


def test_too_many_threads_per_block_is_refused():
    text = AXPY.replace("threadIdx.x t in [0, 256)", "threadIdx.x t in [0, 2048)")
    with pytest.raises(nvptx.GpuCodegenError, match="axpy_k0 has 2048x1x1 threads per block: at most 1024"):
        codegen.source(program(text), SM90)


@needs_ptxas
def test_assemble_reports_ptxas_errors_and_a_missing_ptxas(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match="ptxas -arch=sm_90 failed"):
        nvptx.assemble(".version 7.8\n.target sm_90\n.address_size 64\nnot ptx\n", "sm_90")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainNotFound, match="ptxas .* was not found"):
        nvptx.assemble("", "sm_90")


# ----------------------------------------------------------------------------- whole models

def _gpu_compiled(fn, *args, target=SM90):
    """Compiled for ``target``; skipped while the default schedules give cuda targets CPU loops."""
    import mlc
    from mlc.driver import Compiled

    c = Compiled(mlc.trace(fn, *args), target)
    if not any(_bound(f.body) for f in c.funcs):
        pytest.skip("the default schedules for cuda targets bind no loops yet")
    return c


def _bound(stmt) -> bool:
    if isinstance(stmt, For):
        return stmt.kind in GPU_KINDS or _bound(stmt.body)
    return any(_bound(s) for s in getattr(stmt, "stmts", ()))


def _op_cases():
    import mlc
    r = np.random.default_rng(0)
    f32 = lambda *s: r.standard_normal(s).astype(np.float32)
    return {
        "elementwise": (lambda x, y: mlc.tanh(x * y + 1.0) - mlc.exp(y), f32(33, 70), f32(33, 70)),
        "reduction": (lambda x: mlc.sum(x, axis=1), f32(37, 300)),
        "softmax": (lambda x: mlc.softmax(x, axis=-1), f32(8, 1000)),
        "matmul": (lambda a, b: mlc.relu(a @ b), f32(64, 96), f32(96, 80)),
        "conv": (lambda x, w: mlc.conv(x, w, pads=[1, 1, 1, 1]), f32(1, 8, 14, 14), f32(16, 8, 3, 3)),
        "pooling": (lambda x: mlc.max_pool(x, kernel_shape=[2, 2], strides=[2, 2]), f32(1, 8, 14, 14)),
        # unsigned <-> float conversions (uitofp/fptoui), 16-bit integers, uint64 sums
        "integers": (lambda u, h, x: (mlc.sum(u, axis=1), (h * 3).astype("float32") + u.astype("float32"),
                                      (x * 100.0).astype("uint32"), x.astype("uint64"), u.astype("int16")),
                     r.integers(0, 65535, (37, 300)).astype(np.uint16), r.integers(-99, 99, (37, 300)).astype(np.int16),
                     f32(37, 300)),
    }


@needs_ptxas
@pytest.mark.parametrize("case", ["elementwise", "reduction", "softmax", "matmul", "conv", "pooling", "integers"])
def test_op_families_assemble_for_sm80_and_sm90(case):
    fn, *args = _op_cases()[case]
    c = _gpu_compiled(fn, *args)
    assert c.text("ptx").count(".entry ") >= 1
    assembles(c.text("ptx"), SM90)
    c80 = _gpu_compiled(fn, *args, target=SM80)
    assembles(c80.text("ptx"), SM80)
    gm = nvptx.build_gpu(c.program, SM90)
    assert gm.launches and {l.kernel for l in gm.launches} <= _entries(gm.ptx)


def _entries(ptx: str) -> set[str]:
    return set(re.findall(r"\.entry (\w+)\(", ptx))


LIGHT = os.path.join(os.path.dirname(__import__("onnx").__file__), "backend", "test", "data", "light")


@pytest.mark.slow
@needs_ptxas
@pytest.mark.parametrize("model, target", [pytest.param("squeezenet", SM90, id="squeezenet-sm90"),
                                           pytest.param("resnet50", SM90, id="resnet50-sm90"),
                                           pytest.param("squeezenet", SM80, id="squeezenet-sm80"),
                                           pytest.param("resnet50", SM80, id="resnet50-sm80")])
def test_light_onnx_models_assemble(model, target):
    from mlc.driver import Compiled
    from mlc.frontend.onnx import from_onnx

    c = Compiled(from_onnx(os.path.join(LIGHT, f"light_{model}.onnx")), target)
    if not any(_bound(f.body) for f in c.funcs):
        pytest.skip("the default schedules for cuda targets bind no loops yet")
    gm = c.gpu_module
    assert len(gm.launches) >= len(c.plan.calls)
    assert max(l.shared_bytes for l in gm.launches) <= 48 << 10   # the tiles fit any block, static shared memory
    assert {l.kernel for l in gm.launches} <= _entries(gm.ptx)
    assembles(gm.ptx, target)


# ----------------------------------------------------------------------------- driver and command line

def test_ptx_level_of_a_compilation():
    import mlc
    x = np.ones((4, 300), np.float32)
    c = _gpu_compiled(lambda a: mlc.exp(a) * 2.0, x)
    assert c.text("ptx") == c.gpu_module.ptx and ".entry " in c.text("ptx")
    assert len(c.gpu_module.launches) == sum(len(nvptx.kernels_of(call.func, SM90)) for call in c.plan.calls)
    from mlc.driver import Compiled
    with pytest.raises(ValueError, match="IR level 'ptx' is for cuda targets; znver3 is a cpu target"):
        Compiled(mlc.trace(lambda a: a * 2.0, x), Target.get("znver3")).text("ptx")


@needs_ptxas
def test_cli_writes_ptx_and_cubins(tmp_path, capsys):
    from mlc.cli import main
    _gpu_compiled(lambda a: a * 2.0, np.ones(8, np.float32))   # skips until cuda targets get GPU schedules
    ptx, cubin = tmp_path / "mlp.ptx", tmp_path / "mlp.cubin"
    assert main(["compile", "mlp", "--target", "cuda-sm90", "-o", str(ptx)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {ptx}: PTX for sm_90" in out
    text = ptx.read_text()
    assert text.startswith("//") and ".target sm_90" in text and ".entry " in text
    assert main(["compile", "mlp", "--target", "cuda-sm80", "-o", str(cubin)]) == 0
    assert f"wrote {cubin}: cubin for sm_80" in capsys.readouterr().out
    assert cubin.read_bytes()[:4] == b"\x7fELF"


def test_cli_gpu_output_errors(tmp_path, monkeypatch):
    from mlc.cli import main
    with pytest.raises(SystemExit, match="target cuda-sm90 is a cuda target: write its code as PTX"):
        main(["compile", "mlp", "--target", "cuda-sm90", "-o", str(tmp_path / "m.o")])
    with pytest.raises(SystemExit, match="target cuda-sm90 is a cuda target: write its code as PTX"):
        main(["compile", "mlp", "--target", "cuda-sm90"])
    with pytest.raises(SystemExit, match="PTX and cubins are code for cuda targets .*znver3 is a cpu target"):
        main(["compile", "mlp", "--target", "znver3", "-o", str(tmp_path / "m.ptx")])
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match="-o .*m.cubin: ptxas .* was not found"):
        main(["compile", "mlp", "--target", "cuda-sm90", "-o", str(tmp_path / "m.cubin")])
