"""One training step (forward + backward + update), mlc against PyTorch eager, in one run.

    python benchmarks/bench_training.py [--repeat N] [--models mlp,cnn]

Models (float32, SGD with momentum 0.9, cross-entropy on integer labels):
  mlp  784-512-512-10, ReLU, batch 128
  cnn  conv 3x3 (1->32) ReLU, conv 3x3 (32->64) ReLU, maxpool 2, linear -> 10; batch 64 of 1x28x28
mlc: ``mlc.optim.train_step`` -- one compiled executable updating parameters and
momentum in place. PyTorch 2.13 eager: ``zero_grad``, forward, ``backward``,
``optimizer.step()``, with ``torch.set_num_threads(2)``. Both start from the same
weights; the first steps' losses are compared. Each time is the median of --repeat
steps after warm-up. Ratio = mlc / torch (at most 1.0: mlc is at least as fast).
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np

import mlc
from mlc.runtime.timing import median_seconds
from mlc import nn, optim


def models():
    return {
        "mlp": (nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)),
                (128, 784)),
        "cnn": (nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(64 * 12 * 12, 10)), (64, 1, 28, 28)),
    }


def torch_step(torch, name, model, params, x, y):
    """The same model in PyTorch (weights copied from the mlc params)."""
    tnn = torch.nn
    layers = []
    for layer, p in zip(model.layers, params):
        if isinstance(layer, nn.Linear):
            m = tnn.Linear(layer.in_features, layer.out_features)
            m.weight.data = torch.tensor(p["w"].T.copy())
            m.bias.data = torch.tensor(p["b"])
        elif isinstance(layer, nn.Conv2d):
            m = tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size)
            m.weight.data = torch.tensor(p["w"])
            m.bias.data = torch.tensor(p["b"])
        elif isinstance(layer, nn.ReLU):
            m = tnn.ReLU()
        elif isinstance(layer, nn.MaxPool2d):
            m = tnn.MaxPool2d(layer.kernel_size)
        else:
            m = tnn.Flatten()
        layers.append(m)
    net = tnn.Sequential(*layers)
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
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--models", default="mlp,cnn")
    a = ap.parse_args()
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
        kernels = step.lower(params, state, x, y).kernel_count
        t_mlc = median_seconds(lambda: step(params, state, x, y), a.repeat, warmup=3)
        if torch is not None:
            ts = torch_step(torch, name, model, t_params, x, y)
            t_first = ts()
            t_torch = median_seconds(ts, a.repeat, warmup=3)
            print(f"{name:6} {t_mlc * 1e3:8.2f} {t_torch * 1e3:9.2f} {t_mlc / t_torch:10.2f} {compile_s:10.1f} "
                  f"{kernels:8d} {first:9.5f} {t_first:10.5f}")
        else:
            print(f"{name:6} {t_mlc * 1e3:8.2f} {'-':>9} {'-':>10} {compile_s:10.1f} {kernels:8d} {first:9.5f}")


if __name__ == "__main__":
    main()
