"""Tutorial 5: train an LSTM language model from the zoo on Python's own source.

The text is the source of a module of Python's standard library (``textwrap``):
no download. ``mlc.models.lstm_lm`` is an embedding, an LSTM and a linear decoder;
its LSTM is an ``mlc.scan`` over time, which stays a loop in the compiled code, so
one training step -- the forward loop, the reverse loop of its gradient and the Adam
update -- is ONE compiled executable whatever the sequence length. The model then
reports its perplexity on held-out text and writes a few characters of its own.

    python tutorials/05_model_zoo.py [--steps N]
"""
import argparse
import inspect
import math
import textwrap
import time

import numpy as np

import mlc
from mlc import models, nn, optim

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=160)
parser.add_argument("--hidden", type=int, default=64)
args = parser.parse_args()

# 1. Data: characters of textwrap.py as ids; the last tenth held out.
text = inspect.getsource(textwrap)
chars = sorted(set(text))
ids = np.array([chars.index(c) for c in text], np.int64)
split = len(ids) * 9 // 10
train_ids, test_ids = ids[:split], ids[split:]
vocab, seq, batch = len(chars), 48, 32
print(f"{len(text)} characters, vocabulary {vocab}")

# 2. The model and one compiled training step.
model = models.lstm_lm(vocab, args.hidden)
params, _ = model.init(seed=0)
print(model, f"{sum(p.size for p in mlc.tree.leaves(params))} parameters")


def loss_fn(params, window):   # window: [batch, seq + 1]; position t predicts t + 1
    logits = model(params, window[:, :-1])
    return nn.cross_entropy(logits.reshape(-1, vocab), window[:, 1:].reshape(-1))


opt = optim.Adam(lr=optim.cosine(1e-2, total_steps=args.steps, min_lr=1e-3))
opt_state = opt.init(params)
step = optim.train_step(loss_fn, opt)
rng = np.random.default_rng(0)


def windows(source, n):
    starts = rng.integers(0, len(source) - seq - 1, n)
    return np.stack([source[s:s + seq + 1] for s in starts])


t0 = time.perf_counter()
first = float(step(params, opt_state, windows(train_ids, batch)))
print(f"first step (compiles the loop, its gradient and the update): {time.perf_counter() - t0:.1f} s, "
      f"loss {first:.3f}")
t0 = time.perf_counter()
for i in range(1, args.steps):
    loss = float(step(params, opt_state, windows(train_ids, batch)))
    if i % 40 == 0 or i == args.steps - 1:
        print(f"step {i:4d}  loss {loss:.3f}")
print(f"{(time.perf_counter() - t0) / max(args.steps - 1, 1) * 1e3:.1f} ms per step")

# 3. Perplexity on held-out text, and a sample.
evaluate = mlc.jit(loss_fn)
held_out = np.mean([float(evaluate(params, windows(test_ids, batch))) for _ in range(4)])
print(f"held-out perplexity {math.exp(held_out):.2f} (a uniform guess: {vocab})")
assert held_out < first, "training did not lower the loss"

predict = mlc.jit(lambda p, ids: model(p, ids))
out = list(ids[:seq])
for _ in range(60):
    logits = predict(params, np.array([out[-seq:]]))[0, -1]
    out.append(int(np.argmax(logits)))
print("sample:", repr("".join(chars[i] for i in out[seq:])))
