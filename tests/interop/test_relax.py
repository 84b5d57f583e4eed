"""mlc graphs to and from TVM Relax, judged by TVM itself: the exported module is built
by ``tvm.compile`` and its VM computes what mlc computes; TVM's front ends' output
(ONNX importer on the light ONNX models, the PyTorch ExportedProgram importer) comes
back through ``from_relax`` and, compiled by mlc, matches ONNX Runtime / PyTorch."""

import numpy as np
import pytest

tvm = pytest.importorskip("tvm", reason="the Relax exchange needs apache-tvm (pip install 'mlc[tvm]')")
from tvm import relax  # noqa: E402

import mlc  # noqa: E402
from mlc import ops  # noqa: E402
from mlc.interop import from_relax, to_relax  # noqa: E402
from mlc.interop.relax import RelaxExportError, RelaxImportError  # noqa: E402
from onnx_reference import light_model  # noqa: E402

R = np.random.default_rng(0)


def f32(*shape, lo=None):
    a = R.standard_normal(shape).astype(np.float32)
    return np.abs(a) + lo if lo is not None else a


def run_tvm(mod, args):
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(np.array(a, order="C")) for a in args])   # 0-d stays 0-d
    return [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]


def close(got, want, rtol=1e-4, atol=1e-5):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# one function per op family; each is traced, exported, built by TVM, imported back
FAMILIES = {
    "elementwise": (lambda x, y: (x + y, x - y, x * y, x / (mlc.abs(y) + 1.0), mlc.maximum(x, y), mlc.minimum(x, y),
                                  mlc.where(x < y, x, y), mlc.where(x > y, 1.0, 0.0), (x == x).astype(mlc.float32),
                                  (mlc.abs(x) + 1.0) ** y),
                    (f32(3, 4), f32(4))),
    "unary": (lambda x: (mlc.relu(x), mlc.sigmoid(x), mlc.tanh(x), mlc.exp(x), mlc.log(mlc.abs(x) + 1.0),
                         mlc.sqrt(mlc.abs(x)), mlc.rsqrt(mlc.abs(x) + 1.0), -x, mlc.abs(x), mlc.erf(x), mlc.floor(x),
                         mlc.ceil(x), mlc.sin(x), mlc.cos(x), mlc.gelu(x), mlc.gelu(x, approximate="tanh"),
                         mlc.leaky_relu(x, 0.2), mlc.softplus(x), mlc.clip(x, -0.5, 0.7), mlc.clip(x, min=0.1),
                         mlc.cast(x * 3.0, mlc.int32), mlc.prelu(x, np.float32([0.1, 0.2, 0.3, 0.4]))),
              (f32(2, 3, 4),)),
    "matmul_dense": (lambda x, w, b, xb, wb: (x @ w, mlc.relu(x @ w + b), x @ w.T[::-1].T, xb @ wb, xb @ w),
                     (f32(5, 8), f32(8, 6), f32(6), f32(2, 5, 8), f32(2, 8, 3))),
    "conv": (lambda x, w, wg, x1, w1, x3, w3: (
        mlc.conv(x, w, pads=(1, 0, 2, 1), strides=(2, 1), dilations=(1, 2)),
        mlc.conv(x, wg, group=2, auto_pad="SAME_UPPER"),
        mlc.conv(x1, w1, strides=(2,), pads=(1, 1)),
        mlc.conv(x3, w3, pads=(1, 1, 1, 1, 1, 1))),
        (f32(2, 4, 9, 8), f32(6, 4, 3, 3), f32(6, 2, 3, 3), f32(2, 3, 10), f32(4, 3, 3), f32(1, 2, 5, 5, 5),
         f32(3, 2, 3, 3, 3))),
    "pooling": (lambda x: (mlc.max_pool(x, kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
                           mlc.max_pool(x, kernel_shape=(2, 2), strides=(2, 2), ceil_mode=True),
                           mlc.avg_pool(x, kernel_shape=(3, 3), pads=(1, 1, 1, 1), count_include_pad=True),
                           mlc.avg_pool(x, kernel_shape=(3, 3), pads=(1, 1, 1, 1)),
                           mlc.global_avg_pool(x), mlc.global_max_pool(x), mlc.lrn(x, size=3),
                           mlc.lrn(x, size=2, alpha=0.1, beta=0.5, bias=2.0), mlc.copy(x),
                           mlc.max_pool(x[:, :, 0], kernel_shape=(3,), strides=(2,), pads=(1, 0)),
                           mlc.avg_pool(x[:, :, 0], kernel_shape=(2,)),
                           mlc.max_pool(x[:, :, None, :4, :4], kernel_shape=(1, 2, 2)),
                           mlc.avg_pool(x[:, :, None, :4, :4], kernel_shape=(1, 3, 3), pads=(0, 1, 1, 0, 1, 1),
                                        count_include_pad=True)),
                (f32(2, 3, 7, 7),)),
    "normalization": (lambda x, s, b, m, v, t, g, h: (mlc.batch_norm(x, s, b, m, v, epsilon=1e-3),
                                                      mlc.layer_norm(t, g, h), mlc.softmax(t, axis=1),
                                                      mlc.log_softmax(t, axis=-1)),
                      (f32(2, 3, 4, 4), f32(3), f32(3), f32(3), f32(3, lo=0.5), f32(2, 5, 6), f32(6), f32(6))),
    "reductions": (lambda x: (x.sum(), x.sum(axis=1), x.mean(axis=(0, 2), keepdims=True), x.max(axis=-1),
                              x.min(axis=0), (x * 0.5).prod(axis=1), mlc.argmax(x, axis=1), mlc.argmin(x, axis=2,
                                                                                                   keepdims=False)),
                   (f32(3, 4, 5),)),
    "shapes": (lambda x, i: (x.reshape(6, -1), x.reshape(-1), x.transpose(2, 0, 1),
                             mlc.concatenate([x, x * 2.0], axis=1),
                             mlc.expand_dims(x, axis=(0, 3)), mlc.squeeze(x[:, :1], axis=1),
                             mlc.broadcast_to(x[:, :1], (2, 3, 4)), mlc.gather(x, i, axis=1), x[:, ::-1, 1:3],
                             x[1, 2:, ::-2], mlc.pad(x, pads=(0, 1, 2, 1, 0, 0)),
                             mlc.pad(x, pads=(0, 1, 1, 0, 2, 2), mode="reflect"), mlc.pad(x, pads=(1, 0, 0, 0, 1, 2), mode="edge"),
                             mlc.pad(x, pads=(1, 1, 0, 0, 2, 1), mode="wrap"),
                             mlc.tile(x, repeats=(1, 2, 1)),
                             mlc.cumsum(x, axis=2)),
               (f32(2, 3, 4), np.array([[2, 0], [1, -1]], np.int64))),
    "integers": (lambda a, b, f: (a / b, a + f, a < f, mlc.where(a < b, a, f), a * b - a, mlc.maximum(a, b)),
                 (np.array([7, -7, 7, -7], np.int32), np.array([2, 2, -2, -3], np.int32), f32(4))),
    "scalars_bools": (lambda s, b, x: (s * x, mlc.where(b, x, s), x.sum(), np.float32([5, 6]), x),
                      (np.float32(2.0), np.array([True, False, True]), f32(3))),
    "constants": (lambda x: (x + np.arange(4, dtype=np.float32), np.float32(2.5) * x,
                             mlc.where(x > 0, x, np.float32(-1.0))),
                  (f32(3, 4),)),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_op_families_built_by_tvm_compute_what_mlc_computes_and_round_trip(family):
    fn, args = FAMILIES[family]
    g = mlc.trace(fn, *args)
    want = [np.asarray(w) for w in ops.run_reference(g, *args)]
    mod = to_relax(g)
    assert isinstance(mod, tvm.IRModule) and [gv.name_hint for gv in mod.get_global_vars()] == ["main"]
    assert [p.name for p in mod["main"].params] == [v.name for v in g.inputs]
    close(run_tvm(mod, args), want)
    back = from_relax(mod)
    assert [v.type for v in back.inputs] == [v.type for v in g.inputs]
    close([np.asarray(r) for r in ops.run_reference(back, *args)], want)
    compiled = mlc.compile(back)(*args)
    close(list(compiled) if isinstance(compiled, tuple) else [compiled], want)


@pytest.mark.parametrize("family", ["conv", "constants"])
def test_the_exported_module_is_tvmscript_that_parses_back(family):
    fn, args = FAMILIES[family]
    mod = to_relax(mlc.trace(fn, *args))
    again = tvm.script.from_source(mod.script(show_meta=True))   # the constants travel as metadata
    tvm.ir.assert_structural_equal(again, mod)
    close(run_tvm(again, args), [np.asarray(w) for w in ops.run_reference(mlc.trace(fn, *args), *args)])


def test_relax_integer_division_truncates_and_floor_division_floors_in_mlc_too():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4,), "int32"))
    y = relax.Var("y", relax.TensorType((4,), "int32"))
    with bb.function("main", [x, y]):
        with bb.dataflow():
            out = bb.emit_output(relax.Tuple([bb.emit(relax.op.divide(x, y)), bb.emit(relax.op.floor_divide(x, y))]))
        bb.emit_func_output(out)
    mod = bb.get()
    a, b = np.array([7, -7, 7, -7], np.int32), np.array([2, 2, -2, -3], np.int32)
    want = run_tvm(mod, [a, b])
    np.testing.assert_array_equal(want[0], [3, -3, -3, 2])
    np.testing.assert_array_equal(want[1], [3, -4, -4, 2])
    close([np.asarray(r) for r in ops.run_reference(from_relax(mod), a, b)], want)


def test_a_trained_model_exports_with_its_weights():
    model = mlc.models.resnet18(num_classes=10)
    params, state = model.init(seed=3)
    x = f32(2, 3, 32, 32)
    g = mlc.trace(lambda x: model(params, x, state=state), x)
    mod = to_relax(g)
    assert [p.name for p in mod["main"].params] == [g.inputs[0].name]   # the weights are constants
    close(run_tvm(mod, [x]), [np.asarray(ops.run_reference(g, x)[0])], rtol=1e-3, atol=1e-4)


def test_export_refuses_every_unmapped_op_at_once():
    def f(x):
        v, _ = mlc.top_k(x, k=2)
        return v, mlc.cumsum(x, axis=0, exclusive=True), mlc.relu(x)
    with pytest.raises(RelaxExportError) as e:
        to_relax(mlc.trace(f, f32(3, 4)))
    msg = str(e.value)
    assert "top_k (at " in msg and "cumsum (exclusive or reverse) (at " in msg and "test_relax.py" in msg
    assert "relu" not in msg


def test_import_refuses_every_unsupported_op_at_once():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 2, 4, 4), "float32"))
    w = relax.Var("w", relax.TensorType((2, 2, 3, 3), "float32"))
    xh = relax.Var("xh", relax.TensorType((1, 4, 4, 2), "float32"))
    wh = relax.Var("wh", relax.TensorType((3, 3, 2, 2), "float32"))
    with bb.function("main", [x, w, xh, wh]):
        with bb.dataflow():
            a = bb.emit(relax.op.nn.conv2d_transpose(x, w))
            b = bb.emit(relax.op.sort(x, axis=-1))
            c = bb.emit(relax.op.nn.relu(b))
            d = bb.emit(relax.op.nn.conv2d(xh, wh, data_layout="NHWC", kernel_layout="HWIO"))
            out = bb.emit_output(relax.Tuple([a, c, d]))
        bb.emit_func_output(out)
    with pytest.raises(RelaxImportError) as e:
        from_relax(bb.get())
    msg = str(e.value)
    assert "relax.nn.conv2d_transpose" in msg and "relax.sort" in msg and "relax.nn.conv2d (layout" in msg
    assert "relu" not in msg


def test_from_relax_takes_graphs_only_in_to_relax():
    with pytest.raises(TypeError, match="mlc Graph"):
        to_relax(lambda x: x)


# ----------------------------------------------------------------------------- TVM's front ends



@pytest.mark.slow
@pytest.mark.parametrize("name", ["squeezenet", "resnet50"])
def test_tvm_onnx_importer_output_for_light_models_compiles_with_mlc_and_matches_onnxruntime(name):
    ort = pytest.importorskip("onnxruntime", reason="the reference here is ONNX Runtime")
    from tvm.relax.frontend.onnx import from_onnx as tvm_from_onnx
    model = light_model(name)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = f32(*sess.get_inputs()[0].shape)
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert want.std() > 1e-5   # the output depends on the weights and the input
    g = from_relax(tvm_from_onnx(model, keep_params_in_input=False))
    assert len(g.inputs) == 1 and g.inputs[0].shape == x.shape
    got = mlc.compile(g)(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())   # logits far from 1


@pytest.mark.slow
def test_an_onnx_model_imported_by_mlc_exports_to_relax_and_tvm_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime", reason="the reference here is ONNX Runtime")
    from mlc.frontend.onnx import from_onnx
    model = light_model("squeezenet")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = f32(*sess.get_inputs()[0].shape)
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    close(run_tvm(to_relax(from_onnx(model)), [x]), [want], rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_tvm_pytorch_exported_program_importer_output_compiles_with_mlc():
    torch = pytest.importorskip("torch", reason="the ExportedProgram importer's input is a PyTorch model")
    from tvm.relax.frontend.torch import from_exported_program
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(8, 5), torch.nn.Softmax(dim=-1)).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    x = f32(2, 3, 8, 8)
    ep = torch.export.export(net, (torch.from_numpy(x),))
    g = from_relax(from_exported_program(ep, keep_params_as_input=False))
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    got = mlc.compile(g)(x)
    got = got[0] if isinstance(got, tuple) else got
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_tvm_pytorch_fx_importer_output_compiles_with_mlc():
    torch = pytest.importorskip("torch", reason="the FX importer's input is a PyTorch model")
    from tvm.relax.frontend.torch import from_fx
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.LayerNorm(16), torch.nn.SiLU(),
                              torch.nn.Linear(16, 4), torch.nn.LogSoftmax(dim=-1)).eval()
    mod = from_fx(torch.fx.symbolic_trace(net), [((3, 6), "float32")], keep_params_as_input=False)
    g = from_relax(mod)
    x = f32(3, 6)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(mlc.compile(g)(x), want, rtol=1e-5, atol=1e-6)


def test_relax_ops_mlc_never_writes_import_with_tvms_meaning():
    """The Relax ops TVM's importers write that to_relax does not: each checked against TVM's VM."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3, 4, 4), "float32"))
    y = relax.Var("y", relax.TensorType((2, 3, 4, 4), "float32"))
    op = relax.op
    with bb.function("main", [x, y]):
        with bb.dataflow():
            outs = [bb.emit(e) for e in (
                op.astype(op.less_equal(x, y), "float32"), op.astype(op.greater_equal(x, y), "int32"),
                op.clip(x, relax.prim_value(-0.5), relax.prim_value(0.25)), op.flatten(x),
                op.nn.softplus(x, beta=2.0), op.nn.silu(x), op.nn.adaptive_avg_pool2d(x, output_size=1),
                op.argmax(x), op.argmin(x, axis=1, keepdims=True), op.stack([x, y], axis=2),
                op.squeeze(op.sum(x, axis=[2, 3], keepdims=True)), op.ones_like(x), op.zeros((3, 2), "int64"),
                op.take(op.flatten(x), relax.const(np.array([5, 0, 95], np.int64))), op.nn.log_softmax(x, axis=1),
                op.floor_divide(x, y))]
            parts = bb.emit(op.split(x, indices_or_sections=[1, 3], axis=3))
            outs += [bb.emit(relax.TupleGetItem(parts, i)) for i in range(3)]
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    mod = bb.get()
    a, b = f32(2, 3, 4, 4), f32(2, 3, 4, 4)
    b[0, 0] = a[0, 0]   # some equal elements, for <= and >=
    want = run_tvm(mod, [a, b])
    g = from_relax(mod)
    close([np.asarray(r) for r in ops.run_reference(g, a, b)], want)
