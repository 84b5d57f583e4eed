"""ONNX control flow (If, Loop, Scan) and recurrent ops (RNN, GRU, LSTM) imported onto
mlc.cond, mlc.while_loop and mlc.scan: compiled, and checked against ONNX's reference
evaluator on the attributes its own tests do not cover."""
import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import mlc
from mlc.frontend.onnx import OnnxImportError, from_onnx

R = np.random.default_rng(0)
F = TensorProto.FLOAT


def model(nodes, inputs, outputs, opset=22, initializers=()):
    g = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def run_both(m, feeds, rtol=1e-5, atol=1e-6):
    """mlc's compiled result against ONNX's reference evaluator; returns mlc's graph."""
    g = from_onnx(m)
    got = mlc.compile(g)(*[feeds[v.name] for v in g.inputs])
    got = got if isinstance(got, (tuple, list)) else [got]
    want = ReferenceEvaluator(m).run(None, feeds)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    return g


def ops_of(g):
    return [n.op for n in g.nodes]


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def recurrent_spec(kind, x, w, r, b, h0, c0=None, p=None, clip=None, before_reset=0, acts=None):
    """The ONNX operator definitions of RNN, GRU and LSTM written out in numpy, one
    direction after the other (the spec's equations, gate orders iofc / zrh)."""
    dirs = w.shape[0]
    f, g, h_act = acts or (_sigmoid, np.tanh, np.tanh)
    clip_ = (lambda v: np.clip(v, -clip, clip)) if clip is not None else (lambda v: v)
    ys, hs, cs = [], [], []
    for d in range(dirs):
        wb, rb = np.split(b[d], 2)
        h, c = h0[d].astype(np.float64), (c0[d] if c0 is not None else np.zeros_like(h0[d])).astype(np.float64)
        out = [None] * len(x)
        for t in (reversed(range(len(x))) if d == 1 else range(len(x))):
            xw, hr = x[t] @ w[d].T + wb, h @ r[d].T + rb
            if kind == "RNN":
                h = (acts[0] if acts else np.tanh)(clip_(xw + hr))
            elif kind == "GRU":
                z, rr, _ = np.split(xw + hr, 3, axis=-1)
                z, rr = f(clip_(z)), f(clip_(rr))
                xh = np.split(xw, 3, axis=-1)[2]
                if before_reset:
                    cand = g(clip_(xh + rr * np.split(hr, 3, axis=-1)[2]))
                else:
                    cand = g(clip_(xh + (rr * h) @ np.split(r[d], 3)[2].T + np.split(rb, 3)[2]))
                h = (1 - z) * cand + z * h
            else:
                i, o, fg, cc = np.split(xw + hr, 4, axis=-1)
                pi, po, pf = np.split(p[d], 3) if p is not None else (0, 0, 0)
                i, fg = f(clip_(i + pi * c)), f(clip_(fg + pf * c))
                c = fg * c + i * g(clip_(cc))
                h = f(clip_(o + po * c)) * h_act(c)
            out[t] = h
        ys.append(np.stack(out))
        hs.append(h)
        cs.append(c)
    return np.stack(ys, 1), np.stack(hs), np.stack(cs)


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_recurrent_bidirectional_with_states_bias_and_clip(kind):
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[kind]
    t, b, i, h = 5, 3, 4, 6
    feeds = {"X": R.standard_normal((t, b, i)).astype(np.float32),
             "W": (R.standard_normal((2, gates * h, i)) * 0.5).astype(np.float32),
             "R": (R.standard_normal((2, gates * h, h)) * 0.5).astype(np.float32),
             "B": (R.standard_normal((2, 2 * gates * h)) * 0.5).astype(np.float32),
             "H0": R.standard_normal((2, b, h)).astype(np.float32)}
    ins = ["X", "W", "R", "B", "", "H0"]
    outs = ["Y", "Y_h"]
    if kind == "LSTM":
        feeds["C0"] = R.standard_normal((2, b, h)).astype(np.float32)
        feeds["P"] = (R.standard_normal((2, 3 * h)) * 0.5).astype(np.float32)
        ins += ["C0", "P"]
        outs += ["Y_c"]
    attrs = {"hidden_size": h, "direction": "bidirectional", "clip": 2.5}
    if kind == "GRU":
        attrs["linear_before_reset"] = 1
    node = helper.make_node(kind, ins, outs, **attrs)
    m = model([node], [vi(k, F, v.shape) for k, v in feeds.items()], [vi(o, F, None) for o in outs])
    g = from_onnx(m)
    assert ops_of(g).count("scan") == 2   # one loop per direction
    got = mlc.compile(g)(*[feeds[v.name] for v in g.inputs])
    want = recurrent_spec(kind, feeds["X"], feeds["W"], feeds["R"], feeds["B"], feeds["H0"], feeds.get("C0"),
                          feeds.get("P"), clip=2.5, before_reset=1)
    for a, e in zip(got, want):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=2e-6)


def test_gru_resets_before_the_product_and_takes_activations():
    t, b, i, h = 4, 2, 3, 5
    feeds = {"X": R.standard_normal((t, b, i)).astype(np.float32),
             "W": R.standard_normal((1, 3 * h, i)).astype(np.float32),
             "R": R.standard_normal((1, 3 * h, h)).astype(np.float32),
             "B": R.standard_normal((1, 6 * h)).astype(np.float32)}
    node = helper.make_node("GRU", ["X", "W", "R", "B"], ["Y", "Y_h"], hidden_size=h, direction="reverse",
                            activations=["HardSigmoid", "LeakyRelu"], activation_alpha=[0.3, 0.1],
                            activation_beta=[0.4])
    g = from_onnx(model([node], [vi(k, F, v.shape) for k, v in feeds.items()],
                        [vi("Y", F, None), vi("Y_h", F, None)]))
    y, y_h = mlc.compile(g)(*[feeds[v.name] for v in g.inputs])

    def flipped(a):   # the spec oracle runs direction 1 in reverse: give it a dummy forward direction
        return np.concatenate([a, a])
    acts = (lambda v: np.clip(v * 0.3 + 0.4, 0, 1), lambda v: np.where(v < 0, v * 0.1, v), None)
    want_y, want_h, _ = recurrent_spec("GRU", feeds["X"], flipped(feeds["W"]), flipped(feeds["R"]),
                                       flipped(feeds["B"]), np.zeros((2, b, h), np.float32), acts=acts)
    np.testing.assert_allclose(y[:, 0], want_y[:, 1], rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(y_h[0], want_h[1], rtol=1e-5, atol=2e-6)


def test_lstm_sequence_lengths_match_each_sequence_run_alone():
    t, b, i, h = 6, 3, 2, 4
    x = R.standard_normal((t, b, i)).astype(np.float32)
    w, r = R.standard_normal((2, 4 * h, i)).astype(np.float32), R.standard_normal((2, 4 * h, h)).astype(np.float32)
    lens = np.array([6, 2, 4], np.int32)
    node = helper.make_node("LSTM", ["X", "W", "R", "", "L"], ["Y", "Y_h", "Y_c"], hidden_size=h,
                            direction="bidirectional")
    m = model([node], [vi("X", F, x.shape), vi("W", F, w.shape), vi("R", F, r.shape),
                       vi("L", TensorProto.INT32, lens.shape)], [vi(o, F, None) for o in ("Y", "Y_h", "Y_c")])
    g = from_onnx(m, constant_inputs={"L": lens})
    y, y_h, y_c = mlc.compile(g)(x, w, r)
    alone = model([helper.make_node("LSTM", ["X", "W", "R"], ["Y", "Y_h", "Y_c"], hidden_size=h,
                                    direction="bidirectional")],
                  [vi("X", F, None), vi("W", F, w.shape), vi("R", F, r.shape)],
                  [vi(o, F, None) for o in ("Y", "Y_h", "Y_c")])
    ref = ReferenceEvaluator(alone)
    for k, n in enumerate(lens):
        want_y, want_h, want_c = ref.run(None, {"X": x[:n, k:k + 1], "W": w, "R": r})
        np.testing.assert_allclose(y[:n, :, k], want_y[:, :, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(y[n:, :, k], 0.0)   # past its length: zeros
        np.testing.assert_allclose(y_h[:, k], want_h[:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(y_c[:, k], want_c[:, 0], rtol=1e-5, atol=1e-6)


def test_if_on_a_runtime_condition_compiles_both_branches():
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["t"])], "then", [], [vi("t", F, [3])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [vi("e", F, [3])])
    m = model([helper.make_node("Greater", ["x", "zero"], ["gt"]),
               helper.make_node("ReduceMin", ["gt_f"], ["c_f"], keepdims=0),
               helper.make_node("Cast", ["gt"], ["gt_f"], to=F),
               helper.make_node("Cast", ["c_f"], ["c"], to=TensorProto.BOOL),
               helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
              [vi("x", F, [3])], [vi("y", F, [3])],
              initializers=[helper.make_tensor("zero", F, [], [0.0])])
    m.graph.node.insert(1, m.graph.node.pop(2))   # Cast before ReduceMin
    for x in (np.array([1.0, 2.0, 3.0], np.float32), np.array([1.0, -2.0, 3.0], np.float32)):
        g = run_both(m, {"x": x})
        assert "cond" in ops_of(g)


def test_loop_with_a_data_dependent_exit_is_a_while_loop():
    # doubles y until its sum passes 100, at most M times; returns y and the iterations done
    body = helper.make_graph(
        [helper.make_node("Add", ["y_in", "y_in"], ["y_out"]),
         helper.make_node("ReduceSum", ["y_out"], ["s"], keepdims=0),
         helper.make_node("Less", ["s", "limit"], ["cond_out"]),
         helper.make_node("Add", ["n_in", "one"], ["n_out"])],
        "body", [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, []), vi("y_in", F, [2]),
                 vi("n_in", TensorProto.INT64, [])],
        [vi("cond_out", TensorProto.BOOL, []), vi("y_out", F, [2]), vi("n_out", TensorProto.INT64, [])])
    m = model([helper.make_node("Loop", ["M", "", "y", "n0"], ["y_final", "n"], body=body)],
              [vi("M", TensorProto.INT64, []), vi("y", F, [2])], [vi("y_final", F, [2]), vi("n", TensorProto.INT64, [])],
              initializers=[helper.make_tensor("limit", F, [], [100.0]), helper.make_tensor("one", TensorProto.INT64,
                                                                                            [], [1]),
                            helper.make_tensor("n0", TensorProto.INT64, [], [0])])
    g = from_onnx(m)
    assert "while_loop" in ops_of(g)
    exe = mlc.compile(g)
    for trip, y, want_y, want_n in ((100, [1, 2], [64, 128], 6), (3, [1, 2], [8, 16], 3), (100, [60, 50], [120, 100], 1),
                                    (0, [1, 2], [1, 2], 0)):
        got_y, got_n = exe(np.array(trip, np.int64), np.array(y, np.float32))
        np.testing.assert_array_equal(got_y, want_y)
        assert int(got_n) == want_n


def test_scan_over_other_axes_and_directions():
    body = helper.make_graph([helper.make_node("Add", ["s_in", "x"], ["s_out"]),
                              helper.make_node("Mul", ["s_out", "x"], ["y"])],
                             "body", [vi("s_in", F, [3]), vi("x", F, [3])], [vi("s_out", F, [3]), vi("y", F, [3])])
    node = helper.make_node("Scan", ["s0", "xs"], ["s", "ys"], body=body, num_scan_inputs=1, scan_input_axes=[1],
                            scan_input_directions=[1], scan_output_axes=[1], scan_output_directions=[1])
    s0, xs = R.standard_normal(3).astype(np.float32), R.standard_normal((3, 5)).astype(np.float32)
    g = from_onnx(model([node], [vi("s0", F, [3]), vi("xs", F, [3, 5])], [vi("s", F, [3]), vi("ys", F, [3, 5])],
                        opset=16))
    assert "scan" in ops_of(g)
    s, ys = mlc.compile(g)(s0, xs)
    want_s, want = s0, []
    for t in reversed(range(5)):   # input direction 1: from the last column
        want_s = want_s + xs[:, t]
        want.append(want_s * xs[:, t])
    np.testing.assert_allclose(s, want_s, rtol=1e-6)
    np.testing.assert_allclose(ys, np.stack(want[::-1], axis=1), rtol=1e-6)   # output direction 1, axis 1


def test_scan_of_opset_8_scans_each_batch_element():
    """Opset 8: a batch axis first on the states and scan inputs, the scan axis second; a
    reversed input; sequence_lens given whole (and refused when shorter)."""
    body = helper.make_graph([helper.make_node("Add", ["s_in", "x"], ["s_out"]),
                              helper.make_node("Mul", ["s_out", "x"], ["y"])],
                             "body", [vi("s_in", F, [3]), vi("x", F, [3])], [vi("s_out", F, [3]), vi("y", F, [3])])
    node = helper.make_node("Scan", ["lens", "s0", "xs"], ["s", "ys"], body=body, num_scan_inputs=1, directions=[1])
    s0, xs = R.standard_normal((2, 3)).astype(np.float32), R.standard_normal((2, 4, 3)).astype(np.float32)
    for lens, ok in (([4, 4], True), ([4, 2], False)):
        m = model([node], [vi("s0", F, [2, 3]), vi("xs", F, [2, 4, 3])], [vi("s", F, [2, 3]), vi("ys", F, [2, 4, 3])],
                  opset=8, initializers=[helper.make_tensor("lens", TensorProto.INT64, [2], lens)])
        if not ok:
            with pytest.raises(OnnxImportError, match="sequence_lens .* equal to the sequence length 4"):
                from_onnx(m)
            continue
        s, ys = mlc.compile(from_onnx(m))(s0, xs)
        for b in range(2):
            want_s, want = s0[b], []
            for t in reversed(range(4)):   # direction 1: from the end; outputs in the order computed
                want_s = want_s + xs[b, t]
                want.append(want_s * xs[b, t])
            np.testing.assert_allclose(s[b], want_s, rtol=1e-6)
            np.testing.assert_allclose(ys[b], np.stack(want), rtol=1e-6)


def test_loop_scan_outputs_with_a_data_dependent_exit_are_refused():
    body = helper.make_graph([helper.make_node("Less", ["i", "three"], ["c"]),
                              helper.make_node("Identity", ["i"], ["out"])],
                             "body", [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, [])],
                             [vi("c", TensorProto.BOOL, []), vi("out", TensorProto.INT64, [])])
    m = model([helper.make_node("Loop", ["M", ""], ["outs"], body=body)], [], [vi("outs", TensorProto.INT64, None)],
              initializers=[helper.make_tensor("M", TensorProto.INT64, [], [10]),
                            helper.make_tensor("three", TensorProto.INT64, [], [3])])
    with pytest.raises(OnnxImportError, match="node 0 '' \\(Loop\\): Loop with scan outputs whose body may end "
                                              "the loop early"):
        from_onnx(m)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_pytorch_exported_recurrent_models_import_and_match(kind, tmp_path):
    """What PyTorch's exporter writes for a 2-layer bidirectional LSTM/GRU (its own gate
    reordering, Squeeze/Concat around the ONNX op) imports, compiles and matches it."""
    torch = pytest.importorskip("torch", reason="checked against PyTorch's exporter (pip install torch)")
    import warnings
    torch.manual_seed(0)
    m = getattr(torch.nn, kind)(6, 10, num_layers=2, bidirectional=True).eval()
    x = torch.randn(7, 3, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(tmp_path / "m.onnx"), dynamo=False, input_names=["x"])
    g = from_onnx(str(tmp_path / "m.onnx"))
    assert ops_of(g).count("scan") == 4   # 2 layers x 2 directions
    got = mlc.compile(g)(x.numpy())
    with torch.no_grad():
        want = m(x)
    np.testing.assert_allclose(got[0], want[0].numpy(), rtol=1e-5, atol=1e-6)


def test_mlc_compile_for_cuda_names_the_loop_it_cannot_generate(tmp_path):
    import onnx
    from mlc.cli import main
    h = 4
    node = helper.make_node("GRU", ["X", "W", "R"], ["Y"], hidden_size=h)
    m = model([node], [vi("X", F, [3, 1, 2]), vi("W", F, [1, 3 * h, 2]), vi("R", F, [1, 3 * h, h])],
              [vi("Y", F, None)])
    onnx.save(m, str(tmp_path / "gru.onnx"))
    with pytest.raises(SystemExit, match=r"mlc compile: scan \(kernel scan_\d+\) is not compiled for cuda targets "
                                         r"yet.*compile this model for a cpu target"):
        main(["compile", str(tmp_path / "gru.onnx"), "--target", "cuda-sm90", "-o", str(tmp_path / "gru.ptx")])
