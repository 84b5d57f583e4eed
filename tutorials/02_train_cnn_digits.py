"""Tutorial 2: train a CNN on handwritten digits with mlc.nn and mlc.optim.

The digits (8x8 images, 10 classes) ship with scikit-learn: no download. One
training step -- forward, backward and the Adam update -- is ONE compiled
executable that updates the parameters and optimizer state in place. Halfway
through, training is checkpointed and resumed from the file.

    python tutorials/02_train_cnn_digits.py [--out DIR]

Writes DIR/loss.png (the loss curve) and DIR/digits.mlct (a checkpoint).
"""
import argparse
import os
import tempfile
import time

import numpy as np
from sklearn.datasets import load_digits

import mlc
from mlc import nn, optim

parser = argparse.ArgumentParser()
parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "mlc_digits"))
parser.add_argument("--epochs", type=int, default=12)
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)

# 1. Data: 1797 images, scaled to [0, 1]; a fixed 80/20 split.
digits = load_digits()
images = (digits.images / 16.0).astype(np.float32)[:, None]          # N x 1 x 8 x 8
labels = digits.target.astype(np.int64)
order = np.random.default_rng(0).permutation(len(images))
train, test = order[:1437], order[1437:]
mean, std = images[train].mean(), images[train].std()
augment = mlc.data.Compose([mlc.data.RandomCrop(8, padding=1), mlc.data.Normalize(mean, std)])
loader = mlc.data.DataLoader(images[train], labels[train], batch_size=64, seed=0, drop_last=True, transform=augment)
x_test = mlc.data.Normalize(mean, std)(images[test])

# 2. The model: parameters are plain pytrees of numpy arrays.
model = nn.Sequential(
    nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
    nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 4 * 4, 10))
params, state = model.init(seed=0)
print(model)
print(f"{sum(p.size for p in mlc.tree.leaves(params))} parameters")


def loss_fn(params, x, y, seed):
    logits, _ = model.apply(params, state, x, train=True, seed=seed)
    return nn.cross_entropy(logits, y)


steps_per_epoch = len(loader)
opt = optim.Adam(lr=optim.cosine(3e-3, total_steps=args.epochs * steps_per_epoch, min_lr=1e-4))
opt_state = opt.init(params)
step = optim.train_step(loss_fn, opt)          # compiled on the first call
predict = mlc.jit(lambda params, x: model.apply(params, state, x)[0])


def accuracy(params) -> float:
    return float((predict(params, x_test).argmax(1) == labels[test]).mean())


# 3. Train; checkpoint halfway, then continue from the checkpoint file.
losses, seen, train_time = [], 0, 0.0
checkpoint = os.path.join(args.out, "digits.mlct")
for epoch in range(args.epochs):
    if epoch == args.epochs // 2:
        mlc.checkpoint.save(checkpoint, {"params": params, "opt": opt_state, "loader": loader.state_dict()})
        restored = mlc.checkpoint.load(checkpoint)
        params, opt_state = restored["params"], restored["opt"]
        loader.load_state_dict(restored["loader"])
        print(f"checkpointed to {checkpoint} and resumed from it")
    for x, y in loader:
        seed = np.array(len(losses), np.int64)      # a fresh dropout mask every step
        t0 = time.perf_counter()
        loss = step(params, opt_state, x, y, seed)
        if losses:                                  # the first step includes compilation
            train_time += time.perf_counter() - t0
            seen += len(x)
        losses.append(float(loss))
    print(f"epoch {epoch + 1:2d}: loss {np.mean(losses[-steps_per_epoch:]):.4f}, test accuracy {accuracy(params):.4f}")

acc = accuracy(params)
print(f"test accuracy: {acc:.4f}")
print(f"training speed: {seen / train_time:.0f} images/s ({1e3 * train_time / (len(losses) - 1):.2f} ms per step "
      f"of {loader.batch_size})")

# 4. The loss curve.
import matplotlib  # noqa: E402
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(losses, lw=0.8, label="per step")
k = steps_per_epoch
ax.plot(np.arange(k - 1, len(losses)), np.convolve(losses, np.ones(k) / k, "valid"), label="epoch average")
ax.set(xlabel="step", ylabel="cross-entropy", yscale="log", title=f"CNN on digits: {100 * acc:.1f}% test accuracy")
ax.legend()
fig.tight_layout()
png = os.path.join(args.out, "loss.png")
fig.savefig(png, dpi=120)
print(f"loss curve: {png}")
assert acc >= 0.97, f"test accuracy {acc:.4f} is below 97%"
