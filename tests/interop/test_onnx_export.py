"""mlc graphs out as ONNX: every zoo model, and control flow, exported, accepted by
onnx.checker (full check), and computing what mlc computes in ONNX's reference
evaluator (and ONNX Runtime where installed); imported back, the same numbers."""
import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

import mlc
from mlc import models, ops
from mlc.frontend.onnx import from_onnx
from mlc.interop.onnx_export import OnnxExportError, export

R = np.random.default_rng(0)


def zoo():
    return {
        "resnet18": (models.resnet18(num_classes=10), (R.standard_normal((1, 3, 32, 32)).astype(np.float32),)),
        "bert": (models.bert(2, 32, 4, 100, num_classes=3), (R.integers(0, 100, (2, 8)),)),
        "lstm_lm": (models.lstm_lm(50, 16, layers=2), (R.integers(0, 50, (2, 8)),)),
        "wide_deep": (models.wide_deep(6, [10, 7], 3), ((R.random((4, 6)) > 0.5).astype(np.float32),
                                                        R.integers(0, 7, (4, 2)), R.standard_normal((4, 3))
                                                        .astype(np.float32))),
        "ncf": (models.ncf(20, 30, dim=8, mlp=(16, 8)), (R.integers(0, 20, 4), R.integers(0, 30, 4))),
    }


def check(graph, model, args, rtol=1e-5, atol=1e-6):
    feeds = {v.name: np.asarray(a) for v, a in zip(graph.inputs, args)}
    want = ops.run_reference(graph, *args)
    for got in (ReferenceEvaluator(model).run(None, feeds),):
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    try:
        import onnxruntime as ort
    except ImportError:
        return
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for a, b in zip(sess.run(None, feeds), want):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", ["resnet18", "bert", "lstm_lm", "wide_deep", "ncf"])
def test_zoo_models_export_with_their_weights_and_import_back(name, tmp_path):
    model, inputs = zoo()[name]
    params, state = model.init(seed=1)
    fn = (lambda *x: model(params, *x, state=state)) if state else (lambda *x: model(params, *x))
    path = tmp_path / f"{name}.onnx"
    onnx_model = export(fn, *inputs, path=path)
    assert path.stat().st_size > sum(p.nbytes for p in mlc.tree.leaves(params))   # the weights, as initializers
    assert len(onnx_model.graph.input) == len(inputs)   # the data inputs only: the weights are initializers
    graph = mlc.trace(fn, *inputs)
    check(graph, onnx_model, list(inputs), rtol=1e-4, atol=1e-5)
    back = mlc.compile(from_onnx(str(path)))(*inputs)
    np.testing.assert_allclose(back, ops.run_reference(graph, *inputs)[0], rtol=1e-4, atol=1e-5)
    if name == "lstm_lm":
        assert [n.op_type for n in onnx_model.graph.node].count("Scan") == 2   # the loops stay loops


def test_control_flow_exports_as_scan_loop_and_if():
    def f(w, h0, xs, n):
        h, ys = mlc.scan(lambda h, x: (mlc.tanh(x + h @ w), h * 2.0), h0, xs, reverse=True)
        count, total = mlc.while_loop(lambda s: s[1] < n, lambda s: (s[0] * 1.5, s[1] + 1), (h.sum(), np.int64(0)))
        return mlc.cond(count > 1.0, lambda a: a * 3.0, lambda a: a - w.sum(), h), ys, total
    args = [R.standard_normal((4, 4)).astype(np.float32) * 0.3, R.standard_normal((2, 4)).astype(np.float32),
            R.standard_normal((5, 2, 4)).astype(np.float32), np.int64(3)]
    g = mlc.trace(f, *args)
    model = export(g)
    assert sorted(n.op_type for n in model.graph.node if n.op_type in ("Scan", "Loop", "If")) == ["If", "Loop", "Scan"]
    check(g, model, args)
    args[3] = np.int64(0)   # the loop not entered
    check(g, model, args)


def test_an_op_without_export_is_named():
    with pytest.raises(OnnxExportError, match=r"op cumsum has no ONNX export yet \(at .*test_onnx_export.py:\d+\)"):
        export(lambda x: mlc.cumsum(x, axis=0), np.ones(3, np.float32))
