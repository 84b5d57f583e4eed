"""mlc.optim: every update rule against an independent numpy implementation of the
same (PyTorch) rule, schedules against their formulas, the compiled step updating
in place, and a checkpointed run resuming bit-identically."""
import math

import numpy as np
import pytest

import mlc
from mlc import nn, optim

R = np.random.default_rng(0)
X = R.standard_normal((16, 5))
T = R.standard_normal((16, 3))


def loss_fn(p, x, t):
    return mlc.mean((mlc.tanh(x @ p["w"]) + p["b"] - t) ** 2)


def numpy_grads(p):
    h = np.tanh(X @ p["w"])
    d = 2 * (h + p["b"] - T) / T.size
    return {"w": X.T @ (d * (1 - h * h)), "b": d.sum(0)}


def numpy_run(kind, steps, lr, **kw):
    """The update rules written out in numpy, PyTorch's formulation."""
    p = {"w": np.linspace(-1, 1, 15).reshape(5, 3), "b": np.zeros(3)}
    s = {k: {n: np.zeros_like(v) for n, v in p.items()} for k in ("buf", "m", "v", "g_avg")}
    for t in range(steps):
        g = numpy_grads(p)
        for n in p:
            gn = g[n] + kw.get("weight_decay", 0) * p[n] if kind != "adamw" else g[n]
            if kind == "sgd":
                mom = kw.get("momentum", 0)
                if mom:
                    s["buf"][n] = gn if t == 0 else mom * s["buf"][n] + gn
                    gn = gn + mom * s["buf"][n] if kw.get("nesterov") else s["buf"][n]
                p[n] = p[n] - lr * gn
            elif kind in ("adam", "adamw"):
                b1, b2, eps = 0.9, 0.999, 1e-8
                if kind == "adamw":
                    p[n] = p[n] * (1 - lr * kw["weight_decay"])
                s["m"][n] = b1 * s["m"][n] + (1 - b1) * gn
                s["v"][n] = b2 * s["v"][n] + (1 - b2) * gn * gn
                mh = s["m"][n] / (1 - b1 ** (t + 1))
                vh = s["v"][n] / (1 - b2 ** (t + 1))
                p[n] = p[n] - lr * mh / (np.sqrt(vh) + eps)
            elif kind == "rmsprop":
                a, eps, mom = 0.99, 1e-8, kw.get("momentum", 0)
                s["v"][n] = a * s["v"][n] + (1 - a) * gn * gn
                avg = s["v"][n]
                if kw.get("centered"):
                    s["g_avg"][n] = a * s["g_avg"][n] + (1 - a) * gn
                    avg = avg - s["g_avg"][n] ** 2
                d = gn / (np.sqrt(avg) + eps)
                if mom:
                    s["buf"][n] = mom * s["buf"][n] + d
                    d = s["buf"][n]
                p[n] = p[n] - lr * d
    return p


CASES = [
    ("sgd", optim.SGD, {}), ("sgd", optim.SGD, {"momentum": 0.9}),
    ("sgd", optim.SGD, {"momentum": 0.9, "nesterov": True}), ("sgd", optim.SGD, {"weight_decay": 0.1}),
    ("adam", optim.Adam, {}), ("adam", optim.Adam, {"weight_decay": 0.05}), ("adamw", optim.AdamW, {"weight_decay": 0.1}),
    ("rmsprop", optim.RMSProp, {}), ("rmsprop", optim.RMSProp, {"momentum": 0.5, "centered": True}),
]


@pytest.mark.parametrize("kind,cls,kw", CASES, ids=[f"{c[0]}-{'-'.join(c[2]) or 'plain'}" for c in CASES])
def test_update_rule_matches_numpy(kind, cls, kw):
    lr = 0.05
    opt = cls(lr=lr, **kw)
    p = {"w": np.linspace(-1, 1, 15).reshape(5, 3), "b": np.zeros(3)}
    state = opt.init(p)
    step = optim.train_step(loss_fn, opt)
    for _ in range(4):
        step(p, state, X, T)
    ref = numpy_run(kind, 4, lr, **kw)
    for n in p:
        np.testing.assert_allclose(p[n], ref[n], rtol=1e-10, atol=1e-12)
    assert state["step"] == 4


def test_step_is_one_executable_updating_in_place():
    opt = optim.Adam(1e-2)
    p = {"w": np.linspace(-1, 1, 15).reshape(5, 3), "b": np.zeros(3)}
    state = opt.init(p)
    ids = [id(a) for a in (p["w"], p["b"], state["m"]["w"], state["v"]["b"], state["step"])]
    step = optim.train_step(loss_fn, opt)
    first = step(p, state, X, T)
    second = step(p, state, X, T)
    assert second < first
    assert ids == [id(a) for a in (p["w"], p["b"], state["m"]["w"], state["v"]["b"], state["step"])]
    exe = step.lower(p, state, X, T)
    assert isinstance(exe, mlc.runtime.executable.Executable) and exe.aliases


def test_schedules():
    assert optim.step_decay(0.1, 10, 0.5)(25) == pytest.approx(0.025)
    cos = optim.cosine(1.0, 100, min_lr=0.1)
    assert cos(0) == pytest.approx(1.0) and cos(100) == pytest.approx(0.1) and cos(500) == pytest.approx(0.1)
    assert cos(50) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    w = optim.warmup(optim.constant(0.2), 4)
    assert [float(w(s)) for s in range(6)] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])


def test_scheduled_lr_inside_compiled_step():
    sched = optim.step_decay(0.1, 2, 0.5)
    p = {"w": np.linspace(-1, 1, 15).reshape(5, 3), "b": np.zeros(3)}
    ref = {k: v.copy() for k, v in p.items()}
    opt = optim.SGD(sched)
    state = opt.init(p)
    step = optim.train_step(loss_fn, opt)
    for t in range(5):
        g = numpy_grads(ref)
        for n in ref:
            ref[n] = ref[n] - sched(t) * g[n]
        step(p, state, X, T)
    for n in p:
        np.testing.assert_allclose(p[n], ref[n], rtol=1e-6)


def test_penalties():
    p = {"a": np.array([1.0, -2.0]), "b": np.array([[3.0]])}
    assert float(optim.l2_penalty(p, 0.1)) == pytest.approx(0.5 * 0.1 * 14)
    assert float(optim.l1_penalty(p, 0.1)) == pytest.approx(0.6)
    g = mlc.grad(lambda p: optim.l1_penalty(p, 0.5) + optim.l2_penalty(p, 2.0))(p)
    np.testing.assert_allclose(g["a"], [0.5 + 2.0, -0.5 - 4.0])


def test_optimizer_refuses_integer_params():
    with pytest.raises(TypeError, match="float numpy arrays"):
        optim.SGD(0.1).init({"w": np.arange(3)})


def test_resume_from_checkpoint_is_bit_identical(tmp_path):
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3))
    x = R.standard_normal((40, 5)).astype(np.float32)
    y = R.integers(0, 3, 40)

    def loss(p, xb, yb, seed):
        logits, _ = model.apply(p, [{}] * 4, xb, train=True, seed=seed)
        return nn.cross_entropy(logits, yb)

    opt = optim.Adam(optim.cosine(1e-2, 20))
    step = optim.train_step(loss, opt)

    def run(params, state, loader, n, seed0):
        it = iter(loader)
        for k in range(n):
            try:
                xb, yb = next(it)
            except StopIteration:
                it = iter(loader)
                xb, yb = next(it)
            step(params, state, xb, yb, np.array(seed0 + k, np.int64))

    def fresh():
        params, _ = model.init(seed=3)
        return params, opt.init(params), mlc.data.DataLoader(x, y, batch_size=16, seed=1, drop_last=True)

    p1, s1, l1 = fresh()
    run(p1, s1, l1, 7, 100)

    p2, s2, l2 = fresh()
    run(p2, s2, l2, 3, 100)
    mlc.checkpoint.save(tmp_path / "ck.mlct", {"params": p2, "opt": s2, "loader": l2.state_dict(), "step": 3})
    ck = mlc.checkpoint.load(tmp_path / "ck.mlct")
    p3, s3, l3 = fresh()
    l3.load_state_dict(ck["loader"])
    run(ck["params"], ck["opt"], l3, 4, 100 + ck["step"])
    for a, b in zip(mlc.tree.leaves(p1), mlc.tree.leaves(ck["params"])):
        assert a.tobytes() == b.tobytes()
    for a, b in zip(mlc.tree.leaves(s1), mlc.tree.leaves(ck["opt"])):
        assert a.tobytes() == b.tobytes()
