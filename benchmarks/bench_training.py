"""One training step (forward + backward + update), mlc against PyTorch eager, in one run.

    python benchmarks/bench_training.py [--repeat N] [--models mlp,cnn,rescnn] [--profile]

Models (float32, SGD with momentum 0.9, cross-entropy on integer labels):
  mlp     784-512-512-10, ReLU, batch 128
  cnn     conv 3x3 (1->32) ReLU, conv 3x3 (32->64) ReLU, maxpool 2, linear -> 10; batch 64 of 1x28x28
  rescnn  conv 3x3 pad 1 (1->32) ReLU, a residual block x + conv(relu(conv(x))) (32->32, 3x3 pad 1),
          ReLU, maxpool 2, linear -> 10; batch 64 of 1x28x28
mlc: ``mlc.optim.train_step`` -- one compiled executable updating parameters and
momentum in place. PyTorch 2.13 eager: ``zero_grad``, forward, ``backward``,
``optimizer.step()``, with ``torch.set_num_threads(2)``; the two share one libgomp, with
mlc's wait policy (``mlc.runtime.threads``). Both start from the same
weights; the first steps' losses are compared. The two are timed in turn --repeat
times, each time the median of 3 steps after one more, so that a shared machine's
load, which drifts by the second, hits both alike. Each time printed is the median
of its --repeat; the ratio mlc / torch is the median of the pairs' ratios (at most
1.0: mlc is at least as fast). --profile prints mlc's per-kernel
table (``Executable.profile``) for each model.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np

import mlc
from mlc.runtime.threads import prepare_openmp
from mlc.runtime.timing import median_seconds
from mlc import nn, optim


class Residual(nn.Module):
    """x + conv(relu(conv(x))): two 3x3 convolutions with padding 1, channels kept."""

    def __init__(self, channels: int):
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def init_with(self, rng):
        return self.body.init_with(rng)

    def forward(self, params, x):
        return x + self.body(params, x)


def models():
    return {
        "mlp": (nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)),
                (128, 784)),
        "cnn": (nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(64 * 12 * 12, 10)), (64, 1, 28, 28)),
        "rescnn": (nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), Residual(32), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Flatten(), nn.Linear(32 * 14 * 14, 10)), (64, 1, 28, 28)),
    }


def torch_layers(torch, model, params):
    """The PyTorch modules of a Sequential's layers, weights copied from the mlc params."""
    tnn = torch.nn
    layers = []
    for layer, p in zip(model.layers, params):
        if isinstance(layer, Residual):
            body = tnn.Sequential(*torch_layers(torch, layer.body, p))

            class Block(tnn.Module):
                def __init__(self, body):
                    super().__init__()
                    self.body = body

                def forward(self, x):
                    return x + self.body(x)
            m = Block(body)
        elif isinstance(layer, nn.Linear):
            m = tnn.Linear(layer.in_features, layer.out_features)
            m.weight.data = torch.tensor(p["w"].T.copy())
            m.bias.data = torch.tensor(p["b"])
        elif isinstance(layer, nn.Conv2d):
            m = tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, padding=layer.padding)
            m.weight.data = torch.tensor(p["w"])
            m.bias.data = torch.tensor(p["b"])
        elif isinstance(layer, nn.ReLU):
            m = tnn.ReLU()
        elif isinstance(layer, nn.MaxPool2d):
            m = tnn.MaxPool2d(layer.kernel_size)
        else:
            m = tnn.Flatten()
        layers.append(m)
    return layers


def torch_step(torch, model, params, x, y):
    """One training step of the same model in PyTorch (weights copied from the mlc params)."""
    tnn = torch.nn
    net = tnn.Sequential(*torch_layers(torch, model, params))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    tx, ty = torch.tensor(x), torch.tensor(y)
    loss_fn = tnn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(tx), ty)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--models", default="mlp,cnn,rescnn")
    ap.add_argument("--profile", action="store_true", help="print mlc's per-kernel profile of each step")
    a = ap.parse_args()
    unknown = [n for n in a.models.split(",") if n not in models()]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(models())}")
    # torch loads libgomp before mlc does, and the two share it: give it mlc's wait policy
    # (a bounded spin unless OMP_WAIT_POLICY / GOMP_SPINCOUNT are set), as mlc alone would
    prepare_openmp()
    try:
        import torch
        torch.set_num_threads(2)
    except ImportError:
        torch = None
        print("torch is not installed (pip install torch==2.13.0): printing mlc only")
    print(f"host: {platform.processor() or platform.machine()}, torch {torch.__version__ if torch else '-'}, "
          f"mlc {mlc.__version__}")
    print(f"{'model':6} {'mlc ms':>8} {'torch ms':>9} {'mlc/torch':>10} {'compile s':>10} {'kernels':>8} "
          f"{'loss mlc':>9} {'loss torch':>10}")
    rng = np.random.default_rng(0)
    reports = []
    for name in a.models.split(","):
        model, shape = models()[name]
        x = rng.standard_normal(shape).astype(np.float32)
        y = rng.integers(0, 10, shape[0])
        params, _ = model.init(seed=0)
        t_params = mlc.tree.tree_map(np.copy, params)

        def loss_fn(p, x, y):
            return nn.cross_entropy(model(p, x), y)

        opt = optim.SGD(0.01, momentum=0.9)
        state = opt.init(params)
        step = optim.train_step(loss_fn, opt)
        t = time.perf_counter()
        first = float(step(params, state, x, y))
        compile_s = time.perf_counter() - t
        exe = step.lower(params, state, x, y)
        ts = t_first = None
        if torch is not None:
            ts = torch_step(torch, model, t_params, x, y)
            t_first = ts()
        mlc_times, torch_times = [], []
        for _ in range(a.repeat):   # a few steps of each in turn: a shared machine's load drifts by the second
            mlc_times.append(median_seconds(lambda: step(params, state, x, y), 3, warmup=1))
            if ts is not None:
                torch_times.append(median_seconds(ts, 3, warmup=1))
        t_mlc = float(np.median(mlc_times))
        if ts is not None:
            t_torch = float(np.median(torch_times))
            ratio = float(np.median([m / t for m, t in zip(mlc_times, torch_times)]))
            print(f"{name:6} {t_mlc * 1e3:8.2f} {t_torch * 1e3:9.2f} {ratio:10.2f} {compile_s:10.1f} "
                  f"{exe.kernel_count:8d} {first:9.5f} {t_first:10.5f}")
        else:
            print(f"{name:6} {t_mlc * 1e3:8.2f} {'-':>9} {'-':>10} {compile_s:10.1f} {exe.kernel_count:8d} "
                  f"{first:9.5f}")
        if a.profile:
            reports.append((name, exe.profile(params, state, x, y, runs=a.repeat)))
    for name, report in reports:
        print(f"\n{name}:\n{report}")


if __name__ == "__main__":
    main()
