"""mlc on a CUDA GPU against the peers, in one run.

    python benchmarks/bench_gpu.py [--sections matmul,memory,resnet50,transformer,training]
                                   [--repeat 20] [--json results.json]
    python benchmarks/bench_gpu.py --smoke          # every code path at tiny sizes, in seconds

* matmul: float32 N x N x N for N in 1024..8192, mlc (jit, target "cuda") vs CuPy's
  matmul (cuBLAS SGEMM; TF32 off), GFLOP/s and the ratio mlc / cuBLAS throughput.
* matmul16: float16 N x N x N (float32 accumulation) on tensor cores vs cuBLAS's
  float16 GEMM, GFLOP/s and the ratio.
* memory: an elementwise x * 2 + 1 and a row sum over 64M floats, as a fraction of
  the bandwidth a device-to-device copy reaches (bytes read plus written).
* resnet50: torchvision's ResNet-50 (random weights, eval), exported to ONNX and
  compiled by mlc, at batch 1 and 32, vs PyTorch eager CUDA: latency ratio mlc / torch.
* transformer: mlc.examples' transformer block vs the same block written in PyTorch.
* training: one SGD step of an MLP 784-512-512-10 at batch 128 vs PyTorch eager.

Times are medians of --repeat runs measured with CUDA events after warm-up; every mlc
result is checked against the peer's before it is timed. Needs CuPy (pip install
'mlc[gpu]') and, for the PyTorch rows, torch with CUDA (and torchvision for resnet50).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

import numpy as np

import mlc


def cuda_time(fn, repeat: int, cp) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs, each bracketed by CUDA events."""
    for _ in range(3):
        fn()
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(repeat):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) * 1e-3)
    return statistics.median(times)


def torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _square_matmuls(args, cp, rows, section: str, dtype, tolerance: float) -> None:
    """mlc's N x N x N matmul of ``dtype`` against CuPy's (cuBLAS), checked against the
    float32 product, then timed: GFLOP/s of each and the ratio."""
    sizes = [64, 128] if args.smoke else [1024, 2048, 4096, 8192]
    f = mlc.jit(lambda a, b: a @ b, target="cuda")
    print(f"{'N':>6s} {'mlc GFLOP/s':>12s} {'cuBLAS':>9s} {'ratio':>6s}   ({np.dtype(dtype).name})")
    for n in sizes:
        rng = np.random.default_rng(n)
        a, b = (cp.asarray(rng.standard_normal((n, n)).astype(dtype)) for _ in range(2))
        want = a.astype(cp.float32) @ b.astype(cp.float32)
        err = float(cp.abs(cp.asarray(f(a, b)).astype(cp.float32) - want).max() / (cp.abs(want).max() + 1e-30))
        if err > tolerance:
            raise SystemExit(f"{section} {n}: mlc differs from the float32 product by {err:.2e} (relative)")
        t_mlc, t_blas = cuda_time(lambda: f(a, b), args.repeat, cp), cuda_time(lambda: a @ b, args.repeat, cp)
        g_mlc, g_blas = 2 * n ** 3 / t_mlc / 1e9, 2 * n ** 3 / t_blas / 1e9
        print(f"{n:6d} {g_mlc:12.0f} {g_blas:9.0f} {g_mlc / g_blas:6.2f}")
        rows.append({"section": section, "n": n, "mlc_gflops": g_mlc, "cublas_gflops": g_blas,
                     "ratio": g_mlc / g_blas})


def bench_matmul(args, cp, rows):
    _square_matmuls(args, cp, rows, "matmul", np.float32, 1e-4)


def bench_matmul16(args, cp, rows):
    """float16 with float32 accumulation: mlc's tensor-core schedule (mma.sync) against
    cuBLAS's float16 GEMM (CuPy's matmul of float16 arrays)."""
    _square_matmuls(args, cp, rows, "matmul16", np.float16, 1e-2)


def bench_memory(args, cp, rows):
    n = 1 << 16 if args.smoke else 64 << 20
    x = cp.asarray(np.random.default_rng(0).standard_normal(n).astype(np.float32))
    y = cp.empty_like(x)
    t_copy = cuda_time(lambda: cp.copyto(y, x), args.repeat, cp)
    copy_bw = 2 * x.nbytes / t_copy / 1e9
    scale = mlc.jit(lambda a: a * 2.0 + 1.0, target="cuda")
    rows2d = x.reshape(-1, 1024)
    rowsum = mlc.jit(lambda a: a.sum(axis=1), target="cuda")
    cp.testing.assert_allclose(scale(x), x * 2 + 1, rtol=1e-6)
    cp.testing.assert_allclose(rowsum(rows2d), rows2d.sum(axis=1), rtol=1e-4, atol=1e-3)
    t_scale = cuda_time(lambda: scale(x), args.repeat, cp)
    t_sum = cuda_time(lambda: rowsum(rows2d), args.repeat, cp)
    for name, t, moved in (("x*2+1", t_scale, 2 * x.nbytes), ("row sum", t_sum, x.nbytes + 4 * rows2d.shape[0])):
        bw = moved / t / 1e9
        print(f"{name:10s} {bw:8.0f} GB/s = {bw / copy_bw:5.2f} of the copy's {copy_bw:.0f} GB/s")
        rows.append({"section": "memory", "kernel": name, "gbs": bw, "copy_gbs": copy_bw, "fraction": bw / copy_bw})


def bench_resnet50(args, cp, rows):
    torch = torch_cuda()
    if torch is None:
        print("resnet50: skipped (needs torch with CUDA)")
        return
    try:
        import torchvision
    except ImportError:
        print("resnet50: skipped (needs torchvision)")
        return
    from mlc.frontend.onnx import from_onnx
    model = torchvision.models.resnet50().eval().cuda()
    for batch in ([1] if args.smoke else [1, 32]):
        x = torch.randn(batch, 3, 224, 224, device="cuda")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "resnet50.onnx")
            torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False)
            exe = mlc.compile(from_onnx(path), target="cuda")
        xc = cp.asarray(x)
        with torch.no_grad():
            want = model(x)
        got = cp.asarray(exe(xc))
        err = float(cp.abs(got - cp.asarray(want)).max())
        t_mlc = cuda_time(lambda: exe(xc), args.repeat, cp)
        with torch.no_grad():
            t_torch = cuda_time(lambda: model(x), args.repeat, cp)
        print(f"resnet50 batch {batch:3d}: mlc {t_mlc * 1e3:8.2f} ms, torch {t_torch * 1e3:8.2f} ms, "
              f"mlc/torch {t_mlc / t_torch:5.2f} (max |diff| {err:.1e})")
        rows.append({"section": "resnet50", "batch": batch, "mlc_ms": t_mlc * 1e3, "torch_ms": t_torch * 1e3,
                     "ratio": t_mlc / t_torch, "max_abs_diff": err})


def bench_transformer(args, cp, rows):
    from mlc.examples import transformer_block, transformer_inputs
    torch = torch_cuda()
    ins = transformer_inputs(seq=32, hidden=64, heads=4, ffn=128) if args.smoke else transformer_inputs()
    heads = 4 if args.smoke else 12
    exe = mlc.compile(lambda *a: transformer_block(*a, heads=heads), *ins, target="cuda")
    dev = [cp.asarray(a) for a in ins]
    got = cp.asnumpy(cp.asarray(exe(*dev)))
    if torch is None:
        print("transformer: mlc ran; the PyTorch row needs torch with CUDA")
        return
    tins = [torch.as_tensor(a, device="cuda") for a in ins]

    def block(x, wq, bq, wk, bk, wv, bv, wo, bo, s1, b1, w1, c1, w2, c2, s2, b2):
        batch, seq, hidden = x.shape
        def split(t):
            return t.reshape(batch, seq, heads, hidden // heads).transpose(1, 2)
        q, k, v = split(x @ wq + bq), split(x @ wk + bk), split(x @ wv + bv)
        att = torch.softmax(q @ k.transpose(-1, -2) / (hidden // heads) ** 0.5, dim=-1) @ v
        h = torch.nn.functional.layer_norm(x + att.transpose(1, 2).reshape(batch, seq, hidden) @ wo + bo,
                                           (hidden,), s1, b1, 1e-5)
        u = h @ w1 + c1
        g = torch.nn.functional.gelu(u)
        return torch.nn.functional.layer_norm(h + g @ w2 + c2, (hidden,), s2, b2, 1e-5)
    want = block(*tins).cpu().numpy()
    err = float(np.abs(got - want).max())
    t_mlc = cuda_time(lambda: exe(*dev), args.repeat, cp)
    t_torch = cuda_time(lambda: block(*tins), args.repeat, cp)
    print(f"transformer block: mlc {t_mlc * 1e3:.3f} ms, torch {t_torch * 1e3:.3f} ms, mlc/torch "
          f"{t_mlc / t_torch:.2f} (max |diff| {err:.1e})")
    rows.append({"section": "transformer", "mlc_ms": t_mlc * 1e3, "torch_ms": t_torch * 1e3,
                 "ratio": t_mlc / t_torch, "max_abs_diff": err})


def bench_training(args, cp, rows):
    torch = torch_cuda()
    batch, sizes = (16, (32, 16, 16, 4)) if args.smoke else (128, (784, 512, 512, 10))
    rng = np.random.default_rng(0)
    ws = [(rng.standard_normal((a, b)) * np.sqrt(2 / a)).astype(np.float32) for a, b in zip(sizes, sizes[1:])]
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = np.eye(sizes[-1], dtype=np.float32)[rng.integers(0, sizes[-1], batch)]

    def step(ws, x, y):
        def loss(ws):
            h = x
            for w in ws[:-1]:
                h = mlc.relu(h @ w)
            z = h @ ws[-1]
            z = z - z.max(axis=1, keepdims=True)
            return -(y * (z - mlc.log(mlc.exp(z).sum(axis=1, keepdims=True)))).sum() / batch
        value, g = mlc.value_and_grad(loss)(ws)
        return value, [w - 0.01 * gw for w, gw in zip(ws, g)]
    exe = mlc.compile(step, ws, x, y, target="cuda", in_place=(0,))
    dws, dx, dy = [cp.asarray(w) for w in ws], cp.asarray(x), cp.asarray(y)
    first = float(exe(dws, dx, dy))
    if torch is None:
        print(f"training: mlc ran (first loss {first:.4f}); the PyTorch row needs torch with CUDA")
        return
    tws = [torch.tensor(w, device="cuda", requires_grad=True) for w in ws]
    tx, ty = torch.as_tensor(x, device="cuda"), torch.as_tensor(y, device="cuda")
    opt = torch.optim.SGD(tws, lr=0.01)

    def torch_step():
        opt.zero_grad()
        h = tx
        for w in tws[:-1]:
            h = torch.relu(h @ w)
        loss = -(ty * torch.log_softmax(h @ tws[-1], dim=1)).sum() / batch
        loss.backward()
        opt.step()
        return loss
    t_mlc = cuda_time(lambda: exe(dws, dx, dy), args.repeat, cp)
    t_torch = cuda_time(torch_step, args.repeat, cp)
    print(f"training step (MLP {'-'.join(map(str, sizes))}, batch {batch}): mlc {t_mlc * 1e3:.3f} ms, torch "
          f"{t_torch * 1e3:.3f} ms, mlc/torch {t_mlc / t_torch:.2f}")
    rows.append({"section": "training", "mlc_ms": t_mlc * 1e3, "torch_ms": t_torch * 1e3, "ratio": t_mlc / t_torch})


SECTIONS = {"matmul": bench_matmul, "matmul16": bench_matmul16, "memory": bench_memory, "resnet50": bench_resnet50,
            "transformer": bench_transformer, "training": bench_training}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check every code path quickly")
    args = p.parse_args(argv)
    from mlc.runtime.cuda import CudaUnavailable, cupy_module
    try:
        cp = cupy_module()
    except CudaUnavailable as e:
        raise SystemExit(f"bench_gpu: {e}")
    target = mlc.Target.get("cuda")
    print(f"mlc {mlc.__version__} on {target}; CuPy {cp.__version__}")
    rows = []
    for name in args.sections.split(","):
        if name not in SECTIONS:
            raise SystemExit(f"bench_gpu: unknown section {name!r}: choose among {', '.join(SECTIONS)}")
        print(f"== {name} ==")
        SECTIONS[name](args, cp, rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"target": str(target), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
