"""mlc.nn: layers against numpy, losses against their formulas, and whole models'
gradients against finite differences (float64) and against PyTorch autograd (when
torch is installed)."""
import numpy as np
import pytest

import mlc
from mlc import nn
from mlc.tree import leaves, tree_map

from gradcheck import check_grads

R = np.random.default_rng(0)


def f64(tree):
    return tree_map(lambda a: a.astype(np.float64), tree)


# ----------------------------------------------------------------------------- layers

def test_linear_and_sequential_forward():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2, bias=False))
    params, state = model.init(seed=1)
    assert [sorted(p) for p in params] == [["b", "w"], [], ["w"]] and state == [{}, {}, {}]
    bound = 1 / np.sqrt(4)
    assert np.abs(params[0]["w"]).max() <= bound and params[0]["w"].dtype == np.float32
    x = R.standard_normal((3, 4)).astype(np.float32)
    y = mlc.jit(model)(params, x)
    np.testing.assert_allclose(y, np.tanh(x @ params[0]["w"] + params[0]["b"]) @ params[2]["w"], rtol=1e-5)
    p2, _ = model.init(seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(leaves(params), leaves(p2)))


def test_conv_pool_flatten_forward():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    params, _ = model.init(0)
    x = R.standard_normal((2, 2, 6, 6)).astype(np.float32)
    y = mlc.jit(model)(params, x)
    w, b = params[0]["w"], params[0]["b"]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((2, 3, 6, 6), np.float32)
    for i in range(3):
        for j in range(3):
            conv += np.einsum("nchw,mc->nmhw", xp[:, :, i:i + 6, j:j + 6], w[:, :, i, j])
    ref = np.maximum(conv + b[:, None, None], 0).reshape(2, 3, 3, 2, 3, 2).max((3, 5)).reshape(2, -1)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_batchnorm_train_and_eval():
    bn = nn.BatchNorm2d(3, momentum=0.1)
    params, state = bn.init()
    x = (R.standard_normal((4, 3, 5, 5)) * 2 + 1).astype(np.float32)
    y, new = mlc.jit(lambda p, s, x: bn.apply(p, s, x, train=True))(params, state, x)
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
    np.testing.assert_allclose(y, (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(new["mean"], 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(new["var"], 0.9 + 0.1 * var * 100 / 99, rtol=1e-5)
    y_eval, same = mlc.jit(lambda p, s, x: bn.apply(p, s, x))(params, new, x)
    np.testing.assert_allclose(y_eval, (x - new["mean"][:, None, None]) / np.sqrt(new["var"][:, None, None] + 1e-5),
                               rtol=1e-4, atol=1e-5)


def test_layernorm_forward():
    ln = nn.LayerNorm(6)
    params, _ = ln.init()
    x = R.standard_normal((2, 6)).astype(np.float32)
    y = mlc.jit(ln)(params, x)
    np.testing.assert_allclose(y, (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5),
                               rtol=1e-4, atol=1e-5)


def test_dropout_is_seeded_reproducible_and_scaled():
    drop = nn.Dropout(0.25)
    x = np.ones((200, 50), np.float32)
    f = mlc.jit(lambda x, s: drop.apply({}, {}, x, train=True, seed=s)[0])
    a, b = f(x, np.array(7, np.int64)), f(x, np.array(7, np.int64))
    c = f(x, np.array(8, np.int64))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) == {0.0, np.float32(1 / 0.75)}
    assert abs((a == 0).mean() - 0.25) < 0.01
    np.testing.assert_array_equal(drop.apply({}, {}, x)[0], x)   # inference: identity
    with pytest.raises(ValueError, match="needs a seed"):
        drop.apply({}, {}, x, train=True)


def test_multi_head_attention_forward():
    mha = nn.MultiHeadAttention(8, 2, causal=True)
    params, _ = mha.init(0)
    x = R.standard_normal((2, 5, 8)).astype(np.float32)
    y = mlc.jit(mha)(params, x)

    def ref(x):
        def heads(t):
            return t.reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)
        q, k, v = (heads(x @ params["w" + n] + params["b" + n]) for n in "qkv")
        s = q @ k.transpose(0, 1, 3, 2) / 2.0
        s = np.where(np.triu(np.ones((5, 5), bool), 1), -1e9, s)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        return (a @ v).transpose(0, 2, 1, 3).reshape(2, 5, 8) @ params["wo"] + params["bo"]
    np.testing.assert_allclose(y, ref(x), rtol=1e-4, atol=1e-5)


def test_layer_errors():
    with pytest.raises(ValueError, match="Linear"):
        mlc.trace(nn.Linear(3, 2), nn.Linear(3, 2).init()[0], np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="divide"):
        nn.MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="p must be"):
        nn.Dropout(1.0)


# ----------------------------------------------------------------------------- losses

def test_cross_entropy_and_others():
    logits = R.standard_normal((6, 4))
    labels = R.integers(0, 4, 6)
    lsm = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert float(nn.cross_entropy(logits, labels)) == pytest.approx(-lsm[np.arange(6), labels].mean())
    p, t = R.uniform(0.1, 0.9, 5), R.uniform(0, 1, 5)
    assert float(nn.binary_cross_entropy(p, t)) == pytest.approx(-(t * np.log(p) + (1 - t) * np.log(1 - p)).mean())
    z = R.standard_normal(5)
    s = 1 / (1 + np.exp(-z))
    assert float(nn.binary_cross_entropy_with_logits(z, t)) == pytest.approx(
        -(t * np.log(s) + (1 - t) * np.log(1 - s)).mean())
    assert float(nn.mse(p, t)) == pytest.approx(((p - t) ** 2).mean())
    with pytest.raises(TypeError, match="integer class indices"):
        nn.cross_entropy(logits, labels.astype(np.float64))
    with pytest.raises(ValueError, match="do not match"):
        nn.cross_entropy(logits, labels[:3])


def test_cross_entropy_gradient():
    labels = R.integers(0, 4, 6)
    check_grads(lambda z: nn.cross_entropy(z, labels), [R.standard_normal((6, 4))])


# ----------------------------------------------------------------------------- model gradients (float64)

MLP = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 3))
CNN = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, stride=1),
                    nn.Tanh(), nn.Flatten(), nn.Linear(4, 3))
ATTN = nn.Sequential(nn.MultiHeadAttention(8, 2), nn.LayerNorm(8))


def _model_loss(model, labels):
    def loss(params, x):
        return nn.cross_entropy(model(params, x).reshape(-1, 3) if model is not ATTN else
                                model(params, x)[..., :3].reshape(-1, 3), labels)
    return loss


@pytest.mark.parametrize("name", ["mlp", "cnn", "attention"])
def test_model_gradient_against_finite_differences(name):
    model, x = {"mlp": (MLP, R.standard_normal((5, 6))), "cnn": (CNN, R.standard_normal((2, 2, 6, 6))),
                "attention": (ATTN, R.standard_normal((2, 3, 8)))}[name]
    params = f64(model.init(seed=2)[0])
    labels = R.integers(0, 3, {"mlp": 5, "cnn": 2, "attention": 6}[name])
    loss = _model_loss(model, labels)
    flat, tree = mlc.tree.flatten(params)
    check_grads(lambda *ps: loss(mlc.tree.unflatten(tree, ps[:-1]), ps[-1]), flat + [x], compiled=True,
                rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------- against PyTorch autograd

@pytest.mark.parametrize("name", ["mlp", "cnn", "attention"])
def test_model_gradient_against_torch(name):
    torch = pytest.importorskip("torch")
    model, x = {"mlp": (MLP, R.standard_normal((5, 6))), "cnn": (CNN, R.standard_normal((2, 2, 6, 6))),
                "attention": (ATTN, R.standard_normal((2, 3, 8)))}[name]
    params = f64(model.init(seed=4)[0])
    labels = R.integers(0, 3, {"mlp": 5, "cnn": 2, "attention": 6}[name])
    value, grads = mlc.value_and_grad(_model_loss(model, labels))(params, x)

    tp = tree_map(lambda a: torch.tensor(a, requires_grad=True), params)
    F = torch.nn.functional
    t = torch.tensor(x)
    if name == "mlp":
        h = torch.tanh(t @ tp[0]["w"] + tp[0]["b"])
        h = F.gelu(h @ tp[2]["w"] + tp[2]["b"])
        out = h @ tp[4]["w"] + tp[4]["b"]
    elif name == "cnn":
        h = F.max_pool2d(F.relu(F.conv2d(t, tp[0]["w"], tp[0]["b"], padding=1)), 2)
        h = torch.tanh(F.conv2d(h, tp[3]["w"], tp[3]["b"])).flatten(1)
        out = h @ tp[6]["w"] + tp[6]["b"]
    else:
        a = tp[0]
        q, k, v = (t @ a["w" + n] + a["b" + n] for n in "qkv")
        heads = lambda z: z.reshape(2, 3, 2, 4).transpose(1, 2)   # noqa: E731
        ctx = F.scaled_dot_product_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(2, 3, 8)
        y = ctx @ a["wo"] + a["bo"]
        out = F.layer_norm(y, (8,), tp[1]["scale"], tp[1]["bias"])[..., :3]
    loss = F.cross_entropy(out.reshape(-1, 3), torch.tensor(labels))
    loss.backward()
    assert float(value) == pytest.approx(loss.item(), rel=1e-10)
    for g, p in zip(leaves(grads), leaves(tp)):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-8, atol=1e-10)


def test_embedding_forward_and_gradient():
    emb = nn.Embedding(7, 3)
    params, _ = emb.init(0)
    ids = np.array([[1, 4, 1], [6, 0, 1]])
    np.testing.assert_array_equal(mlc.jit(emb)(params, ids), params["table"][ids])
    w = R.standard_normal((2, 3, 3)).astype(np.float32)
    g = mlc.grad(lambda p: mlc.sum(emb(p, ids) * w))(params)
    ref = np.zeros((7, 3), np.float32)
    np.add.at(ref, ids, w)
    np.testing.assert_allclose(g["table"], ref, rtol=1e-6)
    with pytest.raises(TypeError, match="ids must be integers"):
        emb(params, ids.astype(np.float32))


def test_batchnorm_model_train_step_against_torch():
    torch = pytest.importorskip("torch")
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
    params, state = model.init(seed=5)
    params, state = f64(params), f64(state)
    x = R.standard_normal((4, 2, 4, 4))
    y = R.integers(0, 2, 4)

    def loss(p, s, x, y):
        logits, s2 = model.apply(p, s, x, train=True)
        return nn.cross_entropy(logits, y), s2

    t_conv = torch.nn.Conv2d(2, 3, 3, padding=1).double()
    t_bn = torch.nn.BatchNorm2d(3).double()
    t_lin = torch.nn.Linear(48, 2).double()
    with torch.no_grad():
        t_conv.weight.copy_(torch.tensor(params[0]["w"]))
        t_conv.bias.copy_(torch.tensor(params[0]["b"]))
        t_lin.weight.copy_(torch.tensor(params[4]["w"].T))
        t_lin.bias.copy_(torch.tensor(params[4]["b"]))
    net = torch.nn.Sequential(t_conv, t_bn, torch.nn.ReLU(), torch.nn.Flatten(), t_lin)
    t_opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    opt = mlc.optim.SGD(0.1, momentum=0.9)
    opt_state = opt.init(params)
    step = mlc.optim.train_step(loss, opt, has_state=True)
    for _ in range(3):
        value = step(params, opt_state, state, x, y)
        t_opt.zero_grad()
        t_loss = torch.nn.functional.cross_entropy(net(torch.tensor(x)), torch.tensor(y))
        t_loss.backward()
        t_opt.step()
        assert float(value) == pytest.approx(t_loss.item(), rel=1e-9)
    np.testing.assert_allclose(params[0]["w"], t_conv.weight.detach().numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(params[1]["scale"], t_bn.weight.detach().numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(state[1]["mean"], t_bn.running_mean.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(state[1]["var"], t_bn.running_var.numpy(), rtol=1e-8, atol=1e-10)
