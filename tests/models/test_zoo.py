"""mlc.models against PyTorch modules of the same architecture and weights: the
forward pass, compiling with mlc.jit, a few training steps, and the weights through
safetensors."""
import numpy as np
import pytest

import mlc
from mlc import checkpoint, models, nn, optim
from mlc.tree import flatten

torch = pytest.importorskip("torch", reason="the zoo is checked against PyTorch modules (pip install torch)")
tnn = torch.nn
from torch_zoo import (BasicBlock, Bottleneck, TorchBertClassifier, TorchLSTMLM, TorchNeuMF,  # noqa: E402
                       TorchResNet, TorchWideDeep)

R = np.random.default_rng(0)


def randomize(module: "tnn.Module", seed: int):
    """Weights, biases and BatchNorm statistics away from their initial values, so a
    mapping that swaps or skips one shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("bn1.weight", "bn2.weight", "bn3.weight", "downsample.1.weight")):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return module.eval()


def assert_close(mine, theirs, tol=1e-4):
    theirs = theirs.detach().numpy()
    scale = max(1.0, float(np.abs(theirs).max()))
    np.testing.assert_allclose(mine, theirs, rtol=tol, atol=tol * scale)


def roundtrip_safetensors(tmp_path, params):
    path = tmp_path / "params.safetensors"
    checkpoint.save_safetensors(path, params)
    flat = checkpoint.load_safetensors(path)
    leaves, _ = flatten(params)
    names = checkpoint.safetensors_names(params)
    assert sorted(flat) == sorted(names)
    for name, leaf in zip(names, leaves):
        assert flat[name].dtype == leaf.dtype
        np.testing.assert_array_equal(flat[name], leaf)


def train(loss_fn, params, batch, steps=4, lr=0.05, state=None, opt=None):
    """Losses over a few compiled steps (SGD with momentum unless ``opt``), updating params in place."""
    opt = opt or optim.SGD(lr, momentum=0.9)
    opt_state = opt.init(params)
    if state is None:
        step = optim.train_step(loss_fn, opt)
        return [float(step(params, opt_state, *batch)) for _ in range(steps)]
    step = optim.train_step(loss_fn, opt, has_state=True)
    return [float(step(params, opt_state, state, *batch)) for _ in range(steps)]


# ----------------------------------------------------------------------------- ResNet (torchvision's names)

def test_resnet18_matches_torchvision_and_compiles(tmp_path):
    ref = randomize(TorchResNet(BasicBlock, [2, 2, 2, 2], num_classes=5), seed=1)
    model = models.resnet18(num_classes=5)
    params, state = model.params_from_state_dict(ref.state_dict())   # torch tensors in
    assert params["layer2"][0]["downsample"][0]["w"].shape == (128, 64, 1, 1)
    np.testing.assert_array_equal(state["layer3"][1]["bn2"]["var"], ref.layer3[1].bn2.running_var.numpy())
    np.testing.assert_array_equal(params["fc"]["w"], ref.fc.weight.detach().numpy().T)
    x = R.standard_normal((2, 3, 32, 32)).astype(np.float32)
    want = ref(torch.from_numpy(x))
    y = mlc.jit(lambda p, s, x: model(p, x, state=s))(params, state, x)
    assert y.shape == (2, 5)
    assert_close(y, want)
    roundtrip_safetensors(tmp_path, {"params": params, "state": state})
    with pytest.raises(TypeError, match="keeps BatchNorm running statistics"):
        model(params, x)


def test_resnet50_forward_matches_torchvision():
    ref = randomize(TorchResNet(Bottleneck, [3, 4, 6, 3], num_classes=3), seed=2)
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}   # numpy arrays in
    params, state = models.resnet50(num_classes=3).params_from_state_dict(sd)
    assert params["layer4"][2]["conv3"]["w"].shape == (2048, 512, 1, 1)
    x = R.standard_normal((1, 3, 32, 32)).astype(np.float32)
    assert_close(models.resnet50(num_classes=3)(params, x, state=state), ref(torch.from_numpy(x)))   # eager


@pytest.mark.slow   # ~60-100 s here: LLVM compiles the ~300 kernels of the forward and backward passes
def test_resnet_trains_and_keeps_running_statistics():
    # the smallest ResNet (one BasicBlock a stage): the same blocks, shortcuts and BatchNorms as resnet18
    model = models.ResNet("basic", (1, 1, 1, 1), num_classes=3)
    params, state = model.init(seed=0)
    x = R.standard_normal((4, 3, 16, 16)).astype(np.float32)
    labels = np.array([0, 1, 2, 1])

    def loss(p, s, x, labels):
        logits, s = model.apply(p, s, x, train=True)
        return nn.cross_entropy(logits, labels), s

    losses = train(loss, params, (x, labels), state=state)
    assert losses[-1] < 0.5 * losses[0], losses
    # the steps updated the running statistics in place (they start at 0 and 1)
    for bn in (state["bn1"], state["layer4"][0]["downsample"][1]):
        assert np.abs(bn["mean"]).max() > 1e-3 and np.abs(bn["var"] - 1.0).max() > 1e-3


def test_state_dict_errors():
    model = models.ResNet("basic", (1, 1, 1, 1), num_classes=3)
    sd = TorchResNet(BasicBlock, [1, 1, 1, 1], num_classes=3).state_dict()
    model.params_from_state_dict(sd)
    with pytest.raises(KeyError, match=r"the state dict lacks 'layer1.0.bn2.running_var'"):
        model.params_from_state_dict({k: v for k, v in sd.items() if k != "layer1.0.bn2.running_var"})
    with pytest.raises(KeyError, match=r"unexpected entries 'head.weight'"):
        model.params_from_state_dict({**sd, "head.weight": sd["fc.weight"]})
    with pytest.raises(ValueError, match=r"'fc.weight' has shape \[4, 512\], expected \[3, 512\]"):
        model.params_from_state_dict({**sd, "fc.weight": torch.zeros(4, 512)})
    with pytest.raises(TypeError, match=r"'fc.bias' is a list"):
        model.params_from_state_dict({**sd, "fc.bias": [0.0, 0.0, 0.0]})


# ----------------------------------------------------------------------------- BERT (Hugging Face's names)

def test_bert_matches_torch_compiles_and_trains(tmp_path):
    ref = randomize(TorchBertClassifier(2, 32, 4, 100, num_classes=3), seed=3)
    model = models.bert(2, 32, 4, 100, num_classes=3)
    params, _ = model.params_from_state_dict(ref.state_dict())
    np.testing.assert_array_equal(params["layers"][1]["attention"]["wk"],
                                  ref.bert.encoder.layer[1].attention.self.key.weight.detach().numpy().T)
    ids = R.integers(0, 100, (2, 8))
    f = mlc.jit(lambda p, ids: model(p, ids))
    assert_close(f(params, ids), ref(torch.from_numpy(ids)))
    # without num_classes: the hidden states (a BertModel's state dict, its pooler unused)
    encoder = models.bert(2, 32, 4, 100)
    enc_params, _ = encoder.params_from_state_dict(ref.bert.state_dict())
    assert "pooler" not in enc_params
    assert_close(encoder(enc_params, ids), ref.bert(torch.from_numpy(ids)))
    roundtrip_safetensors(tmp_path, params)

    # training: a 1-layer BERT (the compile of a step grows with the layers)
    small = models.bert(1, 16, 2, 50, num_classes=3)
    params, _ = small.init(seed=0)
    ids, labels = R.integers(0, 50, (2, 4)), np.array([0, 2])
    losses = train(lambda p, ids, labels: nn.cross_entropy(small(p, ids), labels), params, (ids, labels),
                   steps=12, opt=optim.Adam(0.02))
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.5 * losses[0], losses


def test_bert_base_configuration():
    m = models.bert_base()
    assert (m.layers, m.hidden, m.heads, m.vocab) == (12, 768, 12, 30522)
    with pytest.raises(ValueError, match="hidden 30 must divide by heads 4"):
        models.bert(1, 30, 4, 10)
    with pytest.raises(ValueError, match="expected integer token ids"):
        models.bert(1, 8, 2, 10)(models.bert(1, 8, 2, 10).init(seed=0)[0], np.zeros((1, 3), np.float32))


# ----------------------------------------------------------------------------- recommendation models

def test_wide_deep_matches_torch_compiles_and_trains(tmp_path):
    ref = randomize(TorchWideDeep(6, [10, 7, 4], 3, dim=4, hidden=(16, 8)), seed=4)
    model = models.wide_deep(6, [10, 7, 4], 3, embedding_dim=4, hidden=(16, 8))
    params, _ = model.params_from_state_dict(ref.state_dict())
    assert [p["w"].shape for p in params["deep"]] == [(15, 16), (16, 8), (8, 1)]
    n = 16
    wide = (R.random((n, 6)) > 0.5).astype(np.float32)
    categories = np.stack([R.integers(0, k, n) for k in (10, 7, 4)], axis=1)
    dense = R.standard_normal((n, 3)).astype(np.float32)
    want = ref(*(torch.from_numpy(a) for a in (wide, categories, dense)))
    y = mlc.jit(lambda p, *xs: model(p, *xs))(params, wide, categories, dense)
    assert y.shape == (n,)
    assert_close(y, want)
    roundtrip_safetensors(tmp_path, params)

    target = (dense[:, 0] + wide[:, 1] > 0.5).astype(np.float32)
    params, _ = model.init(seed=0)
    losses = train(lambda p, a, c, d, t: nn.binary_cross_entropy(model(p, a, c, d), t), params,
                   (wide, categories, dense, target), steps=10, opt=optim.Adam(0.05))
    assert losses[-1] < 0.8 * losses[0], losses
    with pytest.raises(ValueError, match=r"wide_deep: categories has shape \(16, 2\), expected \(16, 3\)"):
        model(params, wide, categories[:, :2], dense)
    with pytest.raises(TypeError, match="wide_deep: categories must be integer ids, got float32"):
        model(params, wide, categories.astype(np.float32), dense)


def test_ncf_matches_torch_compiles_and_trains(tmp_path):
    ref = randomize(TorchNeuMF(20, 30, 8, (16, 8, 4)), seed=5)
    model = models.ncf(20, 30, dim=8, mlp=(16, 8, 4))
    params, _ = model.params_from_state_dict(ref.state_dict())
    users, items = R.integers(0, 20, 32), R.integers(0, 30, 32)
    y = mlc.jit(lambda p, u, i: model(p, u, i))(params, users, items)
    assert y.shape == (32,) and ((y > 0) & (y < 1)).all()
    assert_close(y, ref(torch.from_numpy(users), torch.from_numpy(items)))
    roundtrip_safetensors(tmp_path, params)

    liked = ((users + items) % 2).astype(np.float32)   # a pattern the embeddings can learn
    params, _ = model.init(seed=0)
    losses = train(lambda p, u, i, t: nn.binary_cross_entropy(model(p, u, i), t), params, (users, items, liked),
                   steps=12, opt=optim.Adam(0.05))
    assert losses[-1] < 0.8 * losses[0], losses
    with pytest.raises(ValueError, match=r"ncf: items has shape \(31,\), expected \(32,\)"):
        model(params, users, items[:31])


# ----------------------------------------------------------------------------- the LSTM language model

def test_lstm_lm_matches_torch_compiles_and_trains(tmp_path):
    ref = randomize(TorchLSTMLM(30, 16, 2), seed=6)
    model = models.lstm_lm(30, 16, layers=2)
    params, _ = model.params_from_state_dict(ref.state_dict())
    ids = R.integers(0, 30, (4, 12))
    logits = mlc.jit(lambda p, ids: model(p, ids))(params, ids)
    assert logits.shape == (4, 12, 30)
    assert_close(logits, ref(torch.from_numpy(ids)))
    roundtrip_safetensors(tmp_path, params)

    text = np.tile(np.arange(10), 8)[None, :].repeat(4, 0)   # a sequence the model can learn to continue
    params, _ = model.init(seed=0)

    def loss(p, ids):
        return nn.cross_entropy(model(p, ids[:, :-1]).reshape(-1, 30), ids[:, 1:].reshape(-1))
    losses = train(loss, params, (text,), steps=15, opt=optim.Adam(0.02))
    assert losses[-1] < 0.7 * losses[0], losses
    with pytest.raises(TypeError, match=r"lstm_lm: ids must be integer token ids \[batch, time\], got float32\[4\]"):
        model(params, np.zeros(4, np.float32))
