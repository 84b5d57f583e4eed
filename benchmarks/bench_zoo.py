"""The recurrent and recommendation models of the zoo against their peers, in one run:
forward latency against ONNX Runtime (the PyTorch module of the same weights exported
with torch.onnx) and one training step against PyTorch eager.

    python benchmarks/bench_zoo.py [--repeat N] [--models resnet18,resnet50,bert,lstm_lm,lstm,ncf,wide_deep]

Models (float32, 2 threads everywhere):
  resnet18   mlc.models.resnet18(1000) at 224x224, forward only: ONNX Runtime runs mlc's own
  resnet50   ONNX export of the model (mlc.interop.onnx_export, the same weights and ops)
  bert       mlc.models.bert(4 layers, hidden 256, 4 heads, vocab 8000), 64 tokens, forward only
  lstm_lm    mlc.models.lstm_lm(vocab=1000, hidden=256): token ids [batch, 35] -> logits
  lstm       mlc.nn.LSTM(128, 256, num_layers=2): [35, batch, 128] -> outputs and states
  ncf        mlc.models.ncf(1000 users, 2000 items, dim 32, mlp 64-32-16)
  wide_deep  mlc.models.wide_deep(64 wide, 8 fields of 100 ids, 16 dense)
Forward at batch 1 and 32; training at batch 32 with Adam (lstm_lm: cross-entropy of the
next token; lstm: mean square of the outputs; the recommenders: binary cross-entropy).
Engines are timed in turn --repeat times (median of 5 calls each); the printed ratio
mlc / peer is the median of the pairs' ratios (below 1: mlc is faster).
"""
from __future__ import annotations

import argparse
import io
import statistics
import warnings

import numpy as np

import mlc
from mlc import models, nn, optim
from mlc.runtime.threads import prepare_openmp

from peers import ort_session, timed

T = 35


def torch_modules(torch):
    tnn = torch.nn

    class LM(tnn.Module):
        def __init__(self, vocab, hidden):
            super().__init__()
            self.embedding = tnn.Embedding(vocab, hidden)
            self.lstm = tnn.LSTM(hidden, hidden, batch_first=True)
            self.decoder = tnn.Linear(hidden, vocab)

        def forward(self, ids):
            return self.decoder(self.lstm(self.embedding(ids))[0])

    class NeuMF(tnn.Module):
        def __init__(self, users, items, dim, mlp):
            super().__init__()
            self.gmf_user, self.gmf_item = tnn.Embedding(users, dim), tnn.Embedding(items, dim)
            self.mlp_user, self.mlp_item = tnn.Embedding(users, mlp[0] // 2), tnn.Embedding(items, mlp[0] // 2)
            layers = []
            for a, b in zip(mlp[:-1], mlp[1:]):
                layers += [tnn.Linear(a, b), tnn.ReLU()]
            self.mlp = tnn.Sequential(*layers)
            self.predict = tnn.Linear(dim + mlp[-1], 1)

        def forward(self, u, i):
            gmf = self.gmf_user(u) * self.gmf_item(i)
            mlp = self.mlp(torch.cat([self.mlp_user(u), self.mlp_item(i)], 1))
            return torch.sigmoid(self.predict(torch.cat([gmf, mlp], 1)))[:, 0]

    class WideDeep(tnn.Module):
        def __init__(self, n_wide, n_categories, n_dense, dim=8, hidden=(64, 32)):
            super().__init__()
            self.wide = tnn.Linear(n_wide, 1)
            self.embeddings = tnn.ModuleList(tnn.Embedding(n, dim) for n in n_categories)
            sizes = (len(n_categories) * dim + n_dense, *hidden)
            layers = []
            for a, b in zip(sizes[:-1], sizes[1:]):
                layers += [tnn.Linear(a, b), tnn.ReLU()]
            self.deep = tnn.Sequential(*layers, tnn.Linear(sizes[-1], 1))

        def forward(self, wide, categories, dense):
            deep_in = torch.cat([e(categories[:, f]) for f, e in enumerate(self.embeddings)] + [dense], 1)
            return torch.sigmoid(self.wide(wide) + self.deep(deep_in))[:, 0]

    return LM, NeuMF, WideDeep


def cases(torch, batch: int, rng):
    """name -> (mlc model, torch module, inputs(batch), loss on the output and targets)."""
    LM, NeuMF, WideDeep = torch_modules(torch)
    fields = [100] * 8

    def recommend_inputs(b):
        return (rng.integers(0, 1000, b), rng.integers(0, 2000, b))

    def wide_deep_inputs(b):
        return ((rng.random((b, 64)) > 0.5).astype(np.float32), rng.integers(0, 100, (b, 8)),
                rng.standard_normal((b, 16)).astype(np.float32))
    return {
        "lstm_lm": (models.lstm_lm(1000, 256), LM(1000, 256), lambda b: (rng.integers(0, 1000, (b, T)),), "lm"),
        "lstm": (nn.LSTM(128, 256, num_layers=2), torch.nn.LSTM(128, 256, num_layers=2),
                 lambda b: (rng.standard_normal((T, b, 128)).astype(np.float32),), "mse"),
        "ncf": (models.ncf(1000, 2000, dim=32, mlp=(64, 32, 16)), NeuMF(1000, 2000, 32, (64, 32, 16)),
                recommend_inputs, "bce"),
        "wide_deep": (models.wide_deep(64, fields, 16), WideDeep(64, fields, 16), wide_deep_inputs, "bce"),
    }


EXPORTED = {   # forward only, against ONNX Runtime on mlc's own export (no PyTorch module here)
    "resnet18": (lambda: models.resnet18(1000), lambda rng, b: (rng.standard_normal((b, 3, 224, 224))
                                                                 .astype(np.float32),)),
    "resnet50": (lambda: models.resnet50(1000), lambda rng, b: (rng.standard_normal((b, 3, 224, 224))
                                                                 .astype(np.float32),)),
    "bert": (lambda: models.bert(4, 256, 4, 8000), lambda rng, b: (rng.integers(0, 8000, (b, 64)),)),
}


def exported_forward(name, args, ort, rng):
    """Forward latency of a zoo model against ONNX Runtime on mlc's ONNX export of it."""
    from mlc.interop.onnx_export import export
    make, inputs = EXPORTED[name]
    model = make()
    params, state = model.init(seed=0)
    fn = (lambda *x: model(params, *x, state=state)) if state else (lambda *x: model(params, *x))
    for b in (1, 8):
        xs = inputs(rng, b)
        sess = ort_session(ort, export(fn, *xs).SerializeToString())
        feeds = dict(zip([i.name for i in sess.get_inputs()], xs))
        forward = mlc.jit(fn)
        err = float(np.abs(forward(*xs) - sess.run(None, feeds)[0]).max())
        pairs = []
        for _ in range(args.repeat):
            pairs.append((timed(lambda: forward(*xs), 3), timed(lambda: sess.run(None, feeds), 3)))
        print(f"{name:<11}{f'forward b{b}':<14}{statistics.median(a for a, _ in pairs) * 1e3:>9.3f}"
              f"{statistics.median(c for _, c in pairs) * 1e3:>9.3f}{ratio_of(pairs):>10.2f}  ONNX Runtime on "
              f"mlc's export (max |diff| {err:.1e})")


def params_of(name, model, module):
    if name == "lstm":   # an mlc.nn layer: PyTorch's state dict is its parameters
        return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
    return model.params_from_state_dict(module.state_dict())[0]


def mlc_forward(name, model):
    if name == "lstm":
        return lambda p, x: model(p, x)
    return lambda p, *xs: model(p, *xs)


def onnx_bytes(torch, module, inputs) -> bytes:
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(torch.from_numpy(x) for x in inputs), f, dynamo=False)
    return f.getvalue()


def ratio_of(pairs):
    return statistics.median(a / b for a, b in pairs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--models", default="resnet18,resnet50,bert,lstm_lm,lstm,ncf,wide_deep")
    args = ap.parse_args(argv)
    prepare_openmp()
    import onnxruntime as ort
    import torch
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    table = cases(torch, 32, rng)
    print(f"{'model':<11}{'work':<14}{'mlc ms':>9}{'peer ms':>9}{'mlc/peer':>10}  peer")
    for name in args.models.split(","):
        if name in EXPORTED:
            exported_forward(name, args, ort, rng)
            continue
        model, module, inputs, loss_kind = table[name]
        module.eval()
        params = params_of(name, model, module)
        forward = mlc.jit(mlc_forward(name, model))
        for b in (1, 32):
            xs = inputs(b)
            sess = ort_session(ort, onnx_bytes(torch, module, xs))
            feeds = dict(zip([i.name for i in sess.get_inputs()], xs))
            got = forward(params, *xs)
            got = got[0] if isinstance(got, tuple) else got
            want = sess.run(None, feeds)[0]
            err = float(np.abs(got - want).max())
            pairs = []
            for _ in range(args.repeat):
                a = timed(lambda: forward(params, *xs), 5)
                c = timed(lambda: sess.run(None, feeds), 5)
                pairs.append((a, c))
            print(f"{name:<11}{f'forward b{b}':<14}{statistics.median(a for a, _ in pairs) * 1e3:>9.3f}"
                  f"{statistics.median(c for _, c in pairs) * 1e3:>9.3f}{ratio_of(pairs):>10.2f}  ONNX Runtime "
                  f"(max |diff| {err:.1e})")
        # one training step at batch 32, Adam, against PyTorch eager
        xs = inputs(32)
        module.train()
        if loss_kind == "lm":
            def loss_fn(p, ids):
                logits = model(p, ids[:, :-1])
                return nn.cross_entropy(logits.reshape(-1, 1000), ids[:, 1:].reshape(-1))

            def torch_loss(ids):
                logits = module(ids[:, :-1])
                return torch.nn.functional.cross_entropy(logits.reshape(-1, 1000), ids[:, 1:].reshape(-1))
            batch = xs
        elif loss_kind == "mse":
            def loss_fn(p, x):
                return nn.mse(model(p, x)[0], np.zeros((), np.float32))

            def torch_loss(x):
                return (module(x)[0] ** 2).mean()
            batch = xs
        else:
            target = (rng.random(32) > 0.5).astype(np.float32)

            def loss_fn(p, *a):
                return nn.binary_cross_entropy(model(p, *a[:-1]), a[-1])

            def torch_loss(*a):
                return torch.nn.functional.binary_cross_entropy(module(*a[:-1]), a[-1])
            batch = xs + (target,)
        opt = optim.Adam(1e-3)
        p = params_of(name, model, module)
        state = opt.init(p)
        step = optim.train_step(loss_fn, opt)
        tb = tuple(torch.from_numpy(x) for x in batch)
        topt = torch.optim.Adam(module.parameters(), 1e-3)

        def torch_step():
            topt.zero_grad()
            loss = torch_loss(*tb)
            loss.backward()
            topt.step()
        pairs = []
        for _ in range(args.repeat):
            a = timed(lambda: step(p, state, *batch), 5)
            c = timed(torch_step, 5)
            pairs.append((a, c))
        print(f"{name:<11}{'train b32':<14}{statistics.median(a for a, _ in pairs) * 1e3:>9.3f}"
              f"{statistics.median(c for _, c in pairs) * 1e3:>9.3f}{ratio_of(pairs):>10.2f}  PyTorch eager")


if __name__ == "__main__":
    main()
