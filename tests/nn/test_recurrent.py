"""mlc.nn.RNN, GRU and LSTM against torch.nn's modules of the same weights (eager and
compiled), their gradients against finite differences, and clear refusals."""
import numpy as np
import pytest

import mlc
from mlc import nn, optim
from gradcheck import check_grads

torch = pytest.importorskip("torch", reason="the recurrent layers are checked against torch.nn (pip install torch)")

R = np.random.default_rng(0)
LAYERS = {"RNN": (nn.RNN, torch.nn.RNN), "GRU": (nn.GRU, torch.nn.GRU), "LSTM": (nn.LSTM, torch.nn.LSTM)}


def torch_params(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def close(mine, theirs):
    np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("bidirectional,batch_first", [(False, False), (True, True), (True, False)])
def test_matches_torch_with_its_state_dict(kind, bidirectional, batch_first):
    mine, theirs = LAYERS[kind]
    torch.manual_seed(1)
    ref = theirs(5, 7, num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    layer = mine(5, 7, num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    params = torch_params(ref)
    assert sorted(params) == sorted(layer.init(seed=0)[0])   # the same names ...
    assert all(params[k].shape == v.shape for k, v in layer.init(seed=0)[0].items())   # ... and shapes
    x = R.standard_normal((3, 6, 5) if batch_first else (6, 3, 5)).astype(np.float32)
    d = 2 if bidirectional else 1
    h0 = R.standard_normal((2 * d, 3, 7)).astype(np.float32)
    state = (h0, R.standard_normal((2 * d, 3, 7)).astype(np.float32)) if kind == "LSTM" else h0
    with torch.no_grad():
        want_y, want_s = ref(torch.from_numpy(x), tuple(map(torch.from_numpy, state)) if kind == "LSTM"
                             else torch.from_numpy(state))
    for y, s in (layer(params, x, state), mlc.jit(lambda p, x, s: layer(p, x, s))(params, x, state)):
        close(y, want_y)
        for a, b in zip(s if kind == "LSTM" else [s], want_s if kind == "LSTM" else [want_s]):
            close(a, b)


def test_unbatched_input_default_state_and_relu():
    torch.manual_seed(2)
    ref = torch.nn.RNN(4, 3, nonlinearity="relu")
    layer = nn.RNN(4, 3, nonlinearity="relu")
    x = R.standard_normal((5, 4)).astype(np.float32)
    y, h = mlc.jit(lambda p, x: layer(p, x))(torch_params(ref), x)
    want_y, want_h = ref(torch.from_numpy(x))
    assert y.shape == (5, 3) and h.shape == (1, 3)
    close(y, want_y)
    close(h, want_h)


def test_lstm_gradients_match_finite_differences():
    layer = nn.LSTM(3, 4, bidirectional=True)
    p32, _ = layer.init(seed=3)
    names = sorted(p32)
    x = R.standard_normal((4, 2, 3))

    def f(x, *ws):
        return layer(dict(zip(names, ws)), x)[0]
    check_grads(f, [x] + [p32[n].astype(np.float64) for n in names], compiled=True)


def test_gru_trains_to_copy_a_delayed_signal():
    """A GRU learns y_t = x_{t-1}: the loss falls over a few compiled steps."""
    layer, head = nn.GRU(1, 8, batch_first=True), nn.Linear(8, 1)
    params = {"gru": layer.init(seed=0)[0], "head": head.init(seed=1)[0]}
    x = R.standard_normal((16, 10, 1)).astype(np.float32)
    target = np.concatenate([np.zeros((16, 1, 1), np.float32), x[:, :-1]], axis=1)

    def loss(p, x, t):
        h, _ = layer(p["gru"], x)
        return nn.mse(head(p["head"], h), t)
    opt = optim.Adam(0.03)
    step, opt_state = optim.train_step(loss, opt), opt.init(params)
    losses = [float(step(params, opt_state, x, target)) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_bad_configuration_and_input_are_refused():
    with pytest.raises(ValueError, match="hidden_size must be a positive int, got 0"):
        nn.LSTM(3, 0)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        nn.RNN(3, 4, nonlinearity="sigmoid")
    layer = nn.GRU(3, 4)
    params, _ = layer.init()
    with pytest.raises(ValueError, match=r"takes \[T, B, 3\] or \[T, 3\], got an input of shape \(2, 5, 4\)"):
        layer(params, np.zeros((2, 5, 4), np.float32))
    with pytest.raises(ValueError, match=r"an initial state must have shape \[1, 5, 4\], got \[2, 5, 4\]"):
        layer(params, np.zeros((2, 5, 3), np.float32), np.zeros((2, 5, 4), np.float32))
    del params["bias_hh_l0"]
    with pytest.raises(KeyError, match="parameters bias_hh_l0 are missing"):
        layer(params, np.zeros((2, 5, 3), np.float32))
