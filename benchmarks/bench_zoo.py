"""The model zoo against its peers, in one run: each model's forward latency against
ONNX Runtime and one training step against PyTorch eager, from the same weights.

    python benchmarks/bench_zoo.py [--repeat N] [--models resnet18,resnet50,bert,lstm_lm,lstm,ncf,wide_deep]

Models (float32, 2 threads everywhere; the PyTorch modules are tests/torch_zoo.py's):
  resnet18   mlc.models.resnet18: forward 224x224 at batch 1 and 8; training 32x32 images,
             10 classes, batch 32
  resnet50   mlc.models.resnet50(1000): forward 224x224 at batch 1 and 8
  bert       mlc.models.bert(4 layers, hidden 256, 4 heads, vocab 8000, 2 classes), 64 tokens:
             forward at batch 1 and 8, training at batch 8
  lstm_lm    mlc.models.lstm_lm(vocab=1000, hidden=256): token ids [batch, 35] -> logits;
             training: cross-entropy of the next token at batch 32
  lstm       mlc.nn.LSTM(128, 256, num_layers=2): [35, batch, 128]; training: mean square
  ncf        mlc.models.ncf(1000 users, 2000 items, dim 32, mlp 64-32-16)
  wide_deep  mlc.models.wide_deep(64 wide, 8 fields of 100 ids, 16 dense)
The recommenders train at batch 32 with binary cross-entropy; every training step is Adam.
ONNX Runtime runs the PyTorch module exported by torch.onnx (so the recurrent models get
its fused LSTM), except for the ResNets and BERT, where it runs mlc's own export of the
model (mlc.interop.onnx_export: the same weights and ops). The outputs are compared too.
Engines are timed in turn --repeat times (median of a few calls each); the printed ratio
mlc / peer is the median of the pairs' ratios (below 1: mlc is faster).
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import warnings

import numpy as np

import mlc
from mlc import models, nn, optim
from mlc.runtime.threads import prepare_openmp

from peers import ort_session, timed

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
T = 35


def cases(rng):
    """name -> (mlc model, PyTorch module factory, inputs(batch), training batch size,
    loss kind, ONNX Runtime peer: "torch" (torch.onnx's export) or "mlc" (mlc's))."""
    import torch
    from torch_zoo import BasicBlock, Bottleneck, TorchBertClassifier, TorchLSTMLM, TorchNeuMF, TorchResNet, \
        TorchWideDeep
    fields = [100] * 8

    def images(b, side=224):
        return (rng.standard_normal((b, 3, side, side)).astype(np.float32),)
    return {
        "resnet18": (models.resnet18(10), lambda: TorchResNet(BasicBlock, [2, 2, 2, 2], 10), images, 32, "ce",
                     "mlc"),
        "resnet50": (models.resnet50(1000), lambda: TorchResNet(Bottleneck, [3, 4, 6, 3], 1000), images, None,
                     None, "mlc"),
        "bert": (models.bert(4, 256, 4, 8000, num_classes=2), lambda: TorchBertClassifier(4, 256, 4, 8000, 2),
                 lambda b: (rng.integers(0, 8000, (b, 64)),), 8, "ce", "mlc"),
        "lstm_lm": (models.lstm_lm(1000, 256), lambda: TorchLSTMLM(1000, 256, 1),
                    lambda b: (rng.integers(0, 1000, (b, T)),), 32, "lm", "torch"),
        "lstm": (nn.LSTM(128, 256, num_layers=2), lambda: torch.nn.LSTM(128, 256, num_layers=2),
                 lambda b: (rng.standard_normal((T, b, 128)).astype(np.float32),), 32, "mse", "torch"),
        "ncf": (models.ncf(1000, 2000, dim=32, mlp=(64, 32, 16)), lambda: TorchNeuMF(1000, 2000, 32, (64, 32, 16)),
                lambda b: (rng.integers(0, 1000, b), rng.integers(0, 2000, b)), 32, "bce", "torch"),
        "wide_deep": (models.wide_deep(64, fields, 16), lambda: TorchWideDeep(64, fields, 16),
                      lambda b: ((rng.random((b, 64)) > 0.5).astype(np.float32), rng.integers(0, 100, (b, 8)),
                                 rng.standard_normal((b, 16)).astype(np.float32)), 32, "bce", "torch"),
    }


def weights_of(name, model, module):
    """(params, state) of the mlc model from the PyTorch module's state dict."""
    if name == "lstm":   # an mlc.nn layer: PyTorch's state dict is its parameters
        return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}, {}
    return model.params_from_state_dict(module.state_dict())


def onnx_model(torch, name, module, fn, xs, peer) -> bytes:
    if peer == "mlc":
        from mlc.interop.onnx_export import export
        return export(fn, *xs).SerializeToString()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(torch.from_numpy(x) for x in xs), f, dynamo=False)
    return f.getvalue()


def row(name, work, pairs, peer):
    a = statistics.median(p[0] for p in pairs) * 1e3
    c = statistics.median(p[1] for p in pairs) * 1e3
    ratio = statistics.median(x / y for x, y in pairs)
    print(f"{name:<11}{work:<14}{a:>10.3f}{c:>10.3f}{ratio:>10.2f}  {peer}", flush=True)


def forward(torch, ort, name, case, args):
    model, make, inputs, _, _, peer = case
    module = make().eval()
    params, state = weights_of(name, model, module)
    if name == "lstm":
        fn = lambda *x: model(params, *x)   # noqa: E731
    else:
        fn = (lambda *x: model(params, *x, state=state)) if model.has_state else (lambda *x: model(params, *x))
    jitted = mlc.jit(fn)
    for b in (1, 32) if peer == "torch" else (1, 8):
        xs = inputs(b)
        sess = ort_session(ort, onnx_model(torch, name, module, fn, xs, peer))
        feeds = dict(zip([i.name for i in sess.get_inputs()], xs))
        got = jitted(*xs)
        got = got[0] if isinstance(got, tuple) else got
        err = float(np.abs(got - sess.run(None, feeds)[0]).max())
        reps = 3 if name.startswith("resnet") else 5
        pairs = [(timed(lambda: jitted(*xs), reps), timed(lambda: sess.run(None, feeds), reps))
                 for _ in range(args.repeat)]
        row(name, f"forward b{b}", pairs, f"ONNX Runtime on {'torch.onnx' if peer == 'torch' else 'mlc'}'s export "
                                         f"(max |diff| {err:.1e})")


def train(torch, name, case, args, rng):
    model, make, inputs, batch_size, loss_kind, _ = case
    module = make().train()
    params, state = weights_of(name, model, module)
    xs = (rng.standard_normal((batch_size, 3, 32, 32)).astype(np.float32),) if name == "resnet18" \
        else inputs(batch_size)   # ResNet-18 trains on 32x32 images
    F = torch.nn.functional
    if loss_kind == "lm":
        vocab = 1000

        def loss_fn(p, ids):
            return nn.cross_entropy(model(p, ids[:, :-1]).reshape(-1, vocab), ids[:, 1:].reshape(-1))

        def torch_loss(ids):
            return F.cross_entropy(module(ids[:, :-1]).reshape(-1, vocab), ids[:, 1:].reshape(-1))
        batch = xs
    elif loss_kind == "mse":
        def loss_fn(p, x):
            return nn.mse(model(p, x)[0], np.zeros((), np.float32))

        def torch_loss(x):
            return (module(x)[0] ** 2).mean()
        batch = xs
    elif loss_kind == "bce":
        target = (rng.random(batch_size) > 0.5).astype(np.float32)

        def loss_fn(p, *a):
            return nn.binary_cross_entropy(model(p, *a[:-1]), a[-1])

        def torch_loss(*a):
            return F.binary_cross_entropy(module(*a[:-1]), a[-1])
        batch = xs + (target,)
    else:   # cross-entropy of class logits; the ResNet keeps BatchNorm statistics
        labels = rng.integers(0, 2 if name == "bert" else 10, batch_size)
        if model.has_state:
            def loss_fn(p, s, x, y):
                logits, s = model.apply(p, s, x, train=True)
                return nn.cross_entropy(logits, y), s
        else:
            def loss_fn(p, x, y):
                return nn.cross_entropy(model(p, x), y)

        def torch_loss(x, y):
            return F.cross_entropy(module(x), y)
        batch = xs + (labels,)
    opt = optim.Adam(1e-3)
    opt_state = opt.init(params)
    step = optim.train_step(loss_fn, opt, has_state=model.has_state if hasattr(model, "has_state") else False)
    fixed = (params, opt_state, state) if getattr(model, "has_state", False) else (params, opt_state)
    tb = tuple(torch.from_numpy(x) for x in batch)
    topt = torch.optim.Adam(module.parameters(), 1e-3)

    def torch_step():
        topt.zero_grad()
        torch_loss(*tb).backward()
        topt.step()
    reps = 3 if name in ("resnet18", "bert", "lstm", "lstm_lm") else 5
    pairs = [(timed(lambda: step(*fixed, *batch), reps), timed(torch_step, reps)) for _ in range(args.repeat)]
    row(name, f"train b{batch_size}", pairs, "PyTorch eager")


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
    table = cases(rng)
    print(f"{'model':<11}{'work':<14}{'mlc ms':>10}{'peer ms':>10}{'mlc/peer':>10}  peer")
    for name in args.models.split(","):
        case = table[name]
        forward(torch, ort, name, case, args)
        if case[3] is not None:
            train(torch, name, case, args, rng)


if __name__ == "__main__":
    main()
