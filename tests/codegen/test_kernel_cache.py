"""Kernels compiled apart (codegen.llvm.build_split): each distinct kernel's object code is
cached on disk by itself, so a graph sharing kernels with one compiled before reuses them;
a damaged kernel entry is rebuilt; worker processes give the same code as one process."""
import ctypes
import re

import numpy as np
import pytest

import mlc
from mlc import codegen
from mlc.codegen import llvm
from mlc.ir.expr import Load, Var
from mlc.ir.loop import Buffer, For, Func, Store
from mlc.ir.plan import EntryCall, Slot
from mlc.ir.types import float32
from mlc.runtime import cache
from mlc.runtime.executable import BoundsError

rng = np.random.default_rng(0)
X = rng.standard_normal((4, 16)).astype(np.float32)
W1 = rng.standard_normal((16, 16)).astype(np.float32)
W2 = rng.standard_normal((16, 8)).astype(np.float32)


def layer(x, w1):
    return mlc.relu(x @ w1)


def two_layers(x, w1, w2):
    return mlc.relu(mlc.relu(x @ w1) @ w2)


def kernel_keys(exe) -> set[str]:
    c = exe._compiled
    program = c.program
    return {llvm.kernel_key(f, program, c.code_target) for f in program.funcs}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("MLC_GRAPH_CACHE", "off")   # kernel entries only: a graph compiled again runs codegen
    return tmp_path


def test_a_graph_sharing_a_kernel_hits_its_cache_entry(cache_dir):
    before = dict(llvm.KERNEL_COUNTS)
    first = mlc.compile(layer, X, W1)
    assert llvm.KERNEL_COUNTS["misses"] - before["misses"] == len(kernel_keys(first)) == 1
    np.testing.assert_allclose(first(X, W1), np.maximum(X @ W1, 0), rtol=1e-5, atol=1e-5)

    before = dict(llvm.KERNEL_COUNTS)
    second = mlc.compile(two_layers, X, W1, W2)
    shared, new = kernel_keys(second) & kernel_keys(first), kernel_keys(second) - kernel_keys(first)
    assert len(shared) == 1 and len(new) == 1   # the first layer's kernel, and the second's
    assert llvm.KERNEL_COUNTS["hits"] - before["hits"] == len(shared)
    assert llvm.KERNEL_COUNTS["misses"] - before["misses"] == len(new)
    want = np.maximum(np.maximum(X @ W1, 0) @ W2, 0)
    np.testing.assert_allclose(second(X, W1, W2), want, rtol=1e-5, atol=1e-5)
    # each kernel has its entry, and nothing else is written for the program
    entries = sorted(p.stem for p in cache_dir.glob("*/*.o"))
    assert entries == sorted(kernel_keys(first) | kernel_keys(second))


def test_a_corrupted_kernel_entry_is_detected_and_rebuilt(cache_dir):
    mlc.compile(two_layers, X, W1, W2)
    key = sorted(kernel_keys(mlc.compile(layer, X, W1)))[0]
    path = cache_dir / key[:2] / f"{key}.o"
    good = path.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0x40
    path.write_bytes(bytes(damaged))
    before = dict(llvm.KERNEL_COUNTS)
    with pytest.warns(RuntimeWarning, match=re.escape(f"mlc cache entry {path} is corrupted")):
        exe = mlc.compile(two_layers, X, W1, W2)
    assert llvm.KERNEL_COUNTS["misses"] - before["misses"] == 1   # only the damaged one compiled again
    assert llvm.KERNEL_COUNTS["hits"] - before["hits"] == 1
    np.testing.assert_allclose(exe(X, W1, W2), np.maximum(np.maximum(X @ W1, 0) @ W2, 0), rtol=1e-5, atol=1e-5)
    assert path.read_bytes() == good   # rewritten whole, as it was first built
    assert cache.load(key) == good[len(cache.MAGIC) + 32:]


def test_worker_processes_give_the_same_code_as_one_process(monkeypatch):
    monkeypatch.setenv("MLC_CACHE_DIR", "off")
    x = rng.standard_normal((8, 16)).astype(np.float32)
    args = [x] + [rng.standard_normal(s).astype(np.float32) * 0.3 for s in [(16, 32), (32, 24), (24, 12)]]

    def deep(x, w1, w2, w3):
        return mlc.softmax(mlc.relu(mlc.tanh(x @ w1) @ w2) @ w3, axis=-1)
    objs, outs = {}, {}
    for jobs in ("1", "2"):
        monkeypatch.setenv("MLC_COMPILE_JOBS", jobs)
        llvm.start_workers(2 * llvm.MIN_PARALLEL_JOBS)
        assert all(w.wait_ready() for w in llvm._WORKERS)   # so that the worker takes a job
        before = llvm.KERNEL_COUNTS["workers"]
        exe = mlc.compile(deep, *args)
        assert len(kernel_keys(exe)) >= llvm.MIN_PARALLEL_JOBS   # enough to use the workers
        objs[jobs] = exe._compiled.object_code()
        outs[jobs] = exe(*args)
        assert (llvm.KERNEL_COUNTS["workers"] > before) == (jobs == "2")
    assert objs["1"] == objs["2"]
    np.testing.assert_array_equal(outs["1"], outs["2"])
    x, w1, w2, w3 = args
    logits = np.maximum(np.tanh(x @ w1) @ w2, 0) @ w3
    want = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(outs["2"], want / want.sum(-1, keepdims=True), rtol=1e-4, atol=1e-6)


a = Buffer("a", [8], float32)
out = Buffer("out", [8], float32)
i = Var("i")


def program(*funcs: Func, bounds_check: bool = False) -> codegen.Program:
    """Each function called once, on the caller's input 0 and output 0."""
    calls = [EntryCall(f, [Slot("input", 0), Slot("output", 0)]) for f in funcs]
    return codegen.Program("p", list(funcs), calls, codegen.runs_parallel("host"), bounds_check)


def run(code, x):
    y = np.full(8, 7, np.float32)
    arr = lambda xs: (ctypes.c_void_p * 1)(*[v.ctypes.data for v in xs])
    code.entry(arr([x]), arr([y]), arr([]), None)
    return y


def test_kernels_linked_together_keep_their_own_constants(monkeypatch):
    # each kernel's vector constants sit in its constant pool under a local name (.LCPI0_0) that
    # the other kernel's pool has too: the loaded code must use each kernel's own
    monkeypatch.setenv("MLC_CACHE_DIR", "off")
    v = Var("v")
    out1 = Buffer("out1", [8], float32)
    scale = Func("scale", [a], [out], For(v, 8, Store(out, [v], Load(a, [v]) * 3.0 + 0.5), "vector"))
    shift = Func("shift", [a], [out1], For(v, 8, Store(out1, [v], Load(a, [v]) * -7.0 - 2.25), "vector"))
    calls = [EntryCall(scale, [Slot("input", 0), Slot("output", 0)]),
             EntryCall(shift, [Slot("input", 0), Slot("output", 1)])]
    code = codegen.load(codegen.build_split(codegen.Program("p", [scale, shift], calls), "host"))
    x = np.arange(8, dtype=np.float32) - 3
    y, y1 = np.zeros(8, np.float32), np.zeros(8, np.float32)
    arr = lambda xs: (ctypes.c_void_p * len(xs))(*[v.ctypes.data for v in xs])
    code.entry(arr([x]), arr([y, y1]), arr([]), None)
    np.testing.assert_array_equal(y, x * 3 + 0.5)
    np.testing.assert_array_equal(y1, x * -7 - 2.25)


def test_an_error_in_a_worker_is_raised_as_in_this_process(monkeypatch):
    monkeypatch.setenv("MLC_CACHE_DIR", "off")
    monkeypatch.setenv("MLC_COMPILE_JOBS", "2")
    funcs = [Func(f"ok{n}", [a], [out], For(i, 8, Store(out, [i], Load(a, [i]) * float(n + 2)))) for n in range(3)]
    bad = Func("bad", [a], [out], For(i, 8, Store(out, [i], Load(a, [i])), "blockIdx.x"))
    with pytest.raises(ValueError, match="loop i is bound to blockIdx.x: GPU bindings need a GPU target"):
        codegen.build_split(program(*funcs, bad), "host")


def test_a_dying_worker_leaves_its_kernels_to_this_process(monkeypatch):
    monkeypatch.setenv("MLC_CACHE_DIR", "off")
    monkeypatch.setenv("MLC_COMPILE_JOBS", "2")
    monkeypatch.setattr(llvm, "_WORKER_BOOT", "import sys; sys.exit(3)")
    monkeypatch.setattr(llvm, "_WORKERS", [])
    monkeypatch.setattr(llvm, "_WORKERS_PID", 0)
    monkeypatch.setattr(llvm, "_WORKERS_FAILED", "")
    funcs = [Func(f"k{n}", [a], [out], For(i, 8, Store(out, [i], Load(a, [i]) * float(n + 2)))) for n in range(8)]
    llvm.start_workers(len(funcs))
    assert [w.proc.wait() for w in llvm._WORKERS] == [3]
    with pytest.warns(RuntimeWarning, match=re.escape("an mlc compile worker process died starting (exit status 3); "
                                                      "mlc compiles kernels in this process from now on")):
        code = codegen.load(codegen.build_split(program(*funcs), "host"))
    x = np.arange(8, dtype=np.float32)
    np.testing.assert_array_equal(run(code, x), x * 9)   # the last call's (k7) output
    assert llvm._workers(1) == []


def test_bounds_check_reports_a_kernel_compiled_apart(monkeypatch):
    monkeypatch.setenv("MLC_CACHE_DIR", "off")
    good = Func("good", [a], [out], For(i, 8, Store(out, [i], Load(a, [i]) + 1.0), "parallel"))
    bad = Func("past_end", [a], [out], For(i, 8, Store(out, [i], Load(a, [i + 1]))))
    x = np.arange(8, dtype=np.float32)
    np.testing.assert_array_equal(run(codegen.load(codegen.build_split(program(good, bounds_check=True), "host")), x),
                                  x + 1)
    code = codegen.load(codegen.build_split(program(good, bad, bounds_check=True), "host"))
    with pytest.raises(BoundsError, match=re.escape("kernel past_end read a: f32[8] at element 8, out of its 8")):
        run(code, x)


def test_without_ld_the_whole_program_is_one_module(cache_dir, monkeypatch):
    monkeypatch.setattr(llvm, "linker", lambda: None)
    assert codegen.build_split(program(Func("f", [a], [out], For(i, 8, Store(out, [i], Load(a, [i]))))),
                               "host") is None
    before = dict(llvm.KERNEL_COUNTS)
    exe = mlc.compile(two_layers, X, W1, W2)
    assert llvm.KERNEL_COUNTS == before
    np.testing.assert_allclose(exe(X, W1, W2), np.maximum(np.maximum(X @ W1, 0) @ W2, 0), rtol=1e-5, atol=1e-5)
    assert len(list(cache_dir.glob("*/*.o"))) == 1   # the whole program's entry


def test_compile_jobs_must_be_a_positive_integer(monkeypatch):
    monkeypatch.setenv("MLC_COMPILE_JOBS", "zero")
    with pytest.raises(ValueError, match=re.escape("MLC_COMPILE_JOBS must be a positive integer (processes "
                                                   "compiling kernels), got 'zero'")):
        llvm.compile_jobs()
