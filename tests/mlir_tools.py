"""Running exported MLIR through upstream's tools: mlir-opt (verify, lower) and
mlir-cpu-runner (run a ``main`` that calls the exported function on constant inputs and
prints its results with the runner library's printMemref*)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

_BIN_DIRS = ("/usr/lib/llvm-19/bin",)


def tool(name: str) -> str | None:
    for cand in (f"{name}-19", name):
        p = shutil.which(cand)
        if p:
            return p
    for d in _BIN_DIRS:
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    return None


def runner_libs() -> list[str]:
    out = []
    for base in ("libmlir_runner_utils", "libmlir_c_runner_utils"):
        for d in ("/usr/lib/llvm-19/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"):
            hits = sorted(f for f in os.listdir(d) if f.startswith(base + ".so")) if os.path.isdir(d) else []
            if hits:
                out.append(os.path.join(d, hits[0]))
                break
    return out


def need_mlir_opt() -> str:
    p = tool("mlir-opt")
    if p is None:
        pytest.skip("upstream mlir-opt is not installed (Debian: apt-get install mlir-19-tools)")
    return p


def need_runner() -> tuple[str, list[str]]:
    need_mlir_opt()
    p = tool("mlir-cpu-runner")
    libs = runner_libs()
    if p is None or len(libs) < 2:
        pytest.skip("mlir-cpu-runner or its runner-utils libraries are missing "
                    "(Debian: apt-get install mlir-19-tools libmlir-19)")
    return p, libs


LOWER = ["--one-shot-bufferize=bufferize-function-boundaries allow-return-allocs-from-loops", "--convert-linalg-to-loops",
         "--convert-scf-to-cf", "--expand-strided-metadata", "--lower-affine", "--finalize-memref-to-llvm",
         "--convert-math-to-llvm", "--convert-math-to-libm", "--convert-vector-to-llvm", "--convert-arith-to-llvm",
         "--convert-func-to-llvm", "--convert-cf-to-llvm", "--reconcile-unrealized-casts"]


def mlir_opt(text: str, *args: str) -> str:
    r = subprocess.run([need_mlir_opt(), *args], input=text, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise AssertionError(f"mlir-opt {' '.join(args)} failed:\n{r.stderr[:4000]}")
    return r.stdout


def verify(text: str) -> None:
    """Upstream's verifier accepts ``text`` (mlir-opt parses, verifies and prints it)."""
    mlir_opt(text, "--verify-each")


_PRINT = {np.dtype(np.float32): "printMemrefF32", np.dtype(np.float64): "printMemrefF64",
          np.dtype(np.int32): "printMemrefI32", np.dtype(np.int64): "printMemrefI64"}


def with_main(mod, fn_name: str, inputs: list[np.ndarray], out_types: list, tensors: bool = True):
    """``mod`` (an xDSL module holding ``fn_name``) with a ``main`` calling it on ``inputs``
    (as constants) and printing each result. ``tensors``: the function takes and returns
    tensors (graph level); otherwise it takes memrefs, the outputs last (loop level)."""
    from mlc.interop import _xdsl as x
    from mlc.ir import types as T
    from xdsl.dialects.builtin import UnrankedMemRefType, UnitAttr
    decls = {}
    block = x.Block()
    with x.ImplicitBuilder(block):
        args = []
        for a in inputs:
            dt = T.dtype(a.dtype)
            ty = x.tensor_type(dt, a.shape)
            c = x.arith.ConstantOp(x.dense(a, ty), ty).result
            if not tensors:   # a buffer holding the constant
                buf = x.memref.AllocOp([], [], x.memref_type(dt, a.shape)).memref
                x.bufferization.MaterializeInDestinationOp(
                    operands=[c, buf], properties={"restrict": UnitAttr(), "writable": UnitAttr()},
                    result_types=[[]])
                c = buf
            args.append(c)
        if tensors:
            results = x.func.CallOp(fn_name, args, [x.tensor_type(T.dtype(d), s) for s, d in out_types]).res
        else:
            outs = [x.memref.AllocOp([], [], x.memref_type(T.dtype(d), s)).memref for s, d in out_types]
            x.func.CallOp(fn_name, args + outs, [])
            results = outs
        for r, (shape, dt) in zip(results, out_types):
            dt = np.dtype(dt)
            if tensors:
                buf = x.memref.AllocOp([], [], x.memref_type(T.dtype(dt), shape)).memref
                x.bufferization.MaterializeInDestinationOp(
                    operands=[r, buf], properties={"restrict": UnitAttr(), "writable": UnitAttr()},
                    result_types=[[]])
            else:
                buf = r
            name = _PRINT[dt]
            ety = x.elem_type(T.dtype(dt))
            decls[name] = ety
            u = x.memref.CastOp.get(buf, UnrankedMemRefType.from_type(ety))
            x.func.CallOp(name, [u.dest], [])
        x.func.ReturnOp()
    main = x.func.FuncOp("main", ([], []), x.Region(block))
    externs = [x.func.FuncOp.external(n, [UnrankedMemRefType.from_type(e)], []) for n, e in decls.items()]
    mod.body.block.add_ops([*externs, main])
    return mod


_DATA = re.compile(r"data =\s*\n(.*?)(?=Unranked Memref|\Z)", re.S)


def run(mod, fn_name: str, inputs: list[np.ndarray], out_types: list, tensors: bool = True) -> list[np.ndarray]:
    """Lower ``mod`` plus a ``main`` with upstream passes and run it in mlir-cpu-runner:
    the printed results, as arrays of the given shapes."""
    from mlc.interop.mlir import print_module
    runner, libs = need_runner()
    text = print_module(with_main(mod, fn_name, inputs, out_types, tensors))
    low = mlir_opt(text, *LOWER)
    r = subprocess.run([runner, "-e", "main", "-entry-point-result=void", "-O0",
                        "-shared-libs=" + ",".join(libs)], input=low, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise AssertionError(f"mlir-cpu-runner failed:\n{r.stderr[:4000]}")
    outs = []
    for m, (shape, dt) in zip(_DATA.finditer(r.stdout), out_types):
        nums = re.findall(r"[-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|inf|nan)", m.group(1))
        outs.append(np.array([float(v) for v in nums], np.float64).reshape(shape))
    assert len(outs) == len(out_types), r.stdout[:2000]
    return outs
