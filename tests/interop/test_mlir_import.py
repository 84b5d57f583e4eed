"""MLIR in (mlc.interop.from_mlir): linalg on tensors as other front ends write it
imports and computes what it says; from_mlir(to_mlir(g)) computes what g computes;
unsupported ops are listed all at once with their lines."""
import numpy as np
import pytest

pytest.importorskip("xdsl", reason="MLIR exchange needs xDSL (the mlir extra)")

import mlc  # noqa: E402
from mlc.interop.mlir import to_mlir  # noqa: E402
from mlc.interop.mlir_import import MlirImportError, from_mlir  # noqa: E402

import mlir_tools as mt  # noqa: E402

from mlir_cases import CASES, CONTROL, ZOO, f32, zoo  # noqa: E402


def run(g, *args):
    r = mlc.compile(g)(*args)
    return list(r) if isinstance(r, (list, tuple)) else [r]


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip(name):
    fn, *args = CASES[name]
    g = mlc.trace(fn, *args)
    g2 = from_mlir(to_mlir(g))
    assert [v.type for v in g2.inputs] == [v.type for v in g.inputs]
    for got, want in zip(run(g2, *args), run(g, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["mlp", "gelu"])
def test_round_trip_examples(name):
    from mlc.examples import EXAMPLES
    fn, inputs = EXAMPLES[name]
    args = inputs()
    g = mlc.trace(fn, *args)
    np.testing.assert_allclose(run(from_mlir(to_mlir(g)), *args)[0], run(g, *args)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("passes", ["", "--canonicalize --cse"], ids=["as_written", "canonicalized"])
@pytest.mark.parametrize("name", sorted(CONTROL))
def test_control_flow_round_trip(name, passes):
    """scf.for, scf.while and scf.if on tensors import as scan, while_loop and cond (their
    regions as body graphs reading what they use from outside), as to_mlir writes them and
    as upstream canonicalizes them."""
    fn, *args = CONTROL[name]
    g = mlc.trace(fn, *args)
    text = to_mlir(g)
    if passes:
        text = mt.mlir_opt(text, *passes.split())
    g2 = from_mlir(text)
    assert {n.op for n in g2.nodes} & {"scan", "while_loop", "cond"}
    for got, want in zip(run(g2, *args), run(g, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_scf_for_with_its_induction_variable():
    text = """
func.func @f(%x: tensor<4x3xf32>) -> tensor<3xf32> {
  %c0 = arith.constant 0 : index
  %c4 = arith.constant 4 : index
  %c1 = arith.constant 1 : index
  %cst = arith.constant 0.000000e+00 : f32
  %e = tensor.empty() : tensor<3xf32>
  %z = linalg.fill ins(%cst : f32) outs(%e : tensor<3xf32>) -> tensor<3xf32>
  %r = scf.for %i = %c0 to %c4 step %c1 iter_args(%acc = %z) -> (tensor<3xf32>) {
    %row = tensor.extract_slice %x[%i, 0] [1, 3] [1, 1] : tensor<4x3xf32> to tensor<3xf32>
    %k = arith.index_cast %i : index to i64
    %kf = arith.sitofp %k : i64 to f32
    %e2 = tensor.empty() : tensor<3xf32>
    %next = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>], iterator_types = ["parallel"]} ins(%acc, %row : tensor<3xf32>, tensor<3xf32>) outs(%e2 : tensor<3xf32>) {
    ^bb0(%a: f32, %b: f32, %o: f32):
      %m = arith.mulf %b, %kf : f32
      %s = arith.addf %a, %m : f32
      linalg.yield %s : f32
    } -> tensor<3xf32>
    scf.yield %next : tensor<3xf32>
  }
  return %r : tensor<3xf32>
}
"""
    mt.verify(text)
    x = f32(4, 3)
    np.testing.assert_allclose(run(from_mlir(text), x)[0], (x * np.arange(4, dtype=np.float32)[:, None]).sum(0),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ZOO + ["lstm_lm"])
def test_round_trip_zoo(name):
    fn, inputs = zoo(name)
    g = mlc.trace(fn, *inputs)
    for got, want in zip(run(from_mlir(to_mlir(g)), *inputs), run(g, *inputs)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# linalg on tensors in the shape torch-mlir's linalg backend writes it (MLIR 19 syntax)
TORCH_STYLE = """
#map = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
#map1 = affine_map<(d0, d1, d2) -> (0, d1, d2)>
#map2 = affine_map<(d0, d1, d2) -> (d0, d1)>
#map3 = affine_map<(d0, d1) -> (d1, d0)>
#map4 = affine_map<(d0, d1) -> (d0, d1)>
module {
  func.func private @helper(%x: tensor<2x3x5xf32>) -> tensor<2x3x5xf32> {
    %c0 = arith.constant 0.000000e+00 : f32
    %e = tensor.empty() : tensor<2x3x5xf32>
    %r = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%x : tensor<2x3x5xf32>) outs(%e : tensor<2x3x5xf32>) {
    ^bb0(%in: f32, %out: f32):
      %m = arith.maximumf %in, %c0 : f32
      linalg.yield %m : f32
    } -> tensor<2x3x5xf32>
    return %r : tensor<2x3x5xf32>
  }
  func.func @forward(%a: tensor<2x3x4xf32>, %b: tensor<2x4x5xf32>, %bias: tensor<1x3x5xf32>, %w: tensor<5x3xf32>) -> (tensor<2x3xf32>, tensor<3x5xf32>, tensor<2x4x7xf32>) {
    %cst = arith.constant 0.000000e+00 : f32
    %ninf = arith.constant 0xFF800000 : f32
    %e0 = tensor.empty() : tensor<2x3x5xf32>
    %z = linalg.fill ins(%cst : f32) outs(%e0 : tensor<2x3x5xf32>) -> tensor<2x3x5xf32>
    %mm = linalg.batch_matmul ins(%a, %b : tensor<2x3x4xf32>, tensor<2x4x5xf32>) outs(%z : tensor<2x3x5xf32>) -> tensor<2x3x5xf32>
    %add = linalg.generic {indexing_maps = [#map, #map1, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%mm, %bias : tensor<2x3x5xf32>, tensor<1x3x5xf32>) outs(%e0 : tensor<2x3x5xf32>) {
    ^bb0(%in: f32, %in_1: f32, %out: f32):
      %s = arith.addf %in, %in_1 : f32
      linalg.yield %s : f32
    } -> tensor<2x3x5xf32>
    %act = func.call @helper(%add) : (tensor<2x3x5xf32>) -> tensor<2x3x5xf32>
    %e1 = tensor.empty() : tensor<2x3xf32>
    %mx = linalg.fill ins(%ninf : f32) outs(%e1 : tensor<2x3xf32>) -> tensor<2x3xf32>
    %red = linalg.generic {indexing_maps = [#map, #map2], iterator_types = ["parallel", "parallel", "reduction"]} ins(%act : tensor<2x3x5xf32>) outs(%mx : tensor<2x3xf32>) {
    ^bb0(%in: f32, %out: f32):
      %m = arith.maximumf %out, %in : f32
      linalg.yield %m : f32
    } -> tensor<2x3xf32>
    %e2 = tensor.empty() : tensor<3x5xf32>
    %t = linalg.generic {indexing_maps = [#map3, #map4], iterator_types = ["parallel", "parallel"]} ins(%w : tensor<5x3xf32>) outs(%e2 : tensor<3x5xf32>) {
    ^bb0(%in: f32, %out: f32):
      %i0 = linalg.index 0 : index
      %i1 = linalg.index 1 : index
      %k = arith.index_cast %i1 : index to i64
      %kf = arith.sitofp %k : i64 to f32
      %p = arith.mulf %in, %kf : f32
      linalg.yield %p : f32
    } -> tensor<3x5xf32>
    %sl = tensor.extract_slice %a[0, 1, 0] [2, 2, 4] [1, 1, 1] : tensor<2x3x4xf32> to tensor<2x2x4xf32>
    %pd = tensor.pad %sl low[0, 1, 1] high[0, 1, 2] {
    ^bb0(%i: index, %j: index, %k: index):
      tensor.yield %cst : f32
    } : tensor<2x2x4xf32> to tensor<2x4x7xf32>
    %big = arith.constant dense<1.500000e+00> : tensor<2x1x3xf32>
    %ins = tensor.insert_slice %big into %pd[0, 3, 2] [2, 1, 3] [1, 1, 1] : tensor<2x1x3xf32> into tensor<2x4x7xf32>
    %col = tensor.collapse_shape %ins [[0, 1], [2]] : tensor<2x4x7xf32> into tensor<8x7xf32>
    %exp = tensor.expand_shape %col [[0, 1], [2]] output_shape [2, 4, 7] : tensor<8x7xf32> into tensor<2x4x7xf32>
    return %red, %t, %exp : tensor<2x3xf32>, tensor<3x5xf32>, tensor<2x4x7xf32>
  }
}
"""


def torch_style_reference(a, b, bias, w):
    act = np.maximum(a @ b + bias, 0)
    red = act.max(axis=2)
    t = w.T * np.arange(5, dtype=np.float32)[None, :]
    pd = np.pad(a[:, 1:3, :], [(0, 0), (1, 1), (1, 2)])
    pd[:, 3:4, 2:5] = 1.5
    return red, t, pd


def test_torch_style_module():
    args = [f32(2, 3, 4), f32(2, 4, 5), f32(1, 3, 5), f32(5, 3)]
    g = from_mlir(TORCH_STYLE)
    assert g.name == "forward" and [v.shape for v in g.inputs] == [(2, 3, 4), (2, 4, 5), (1, 3, 5), (5, 3)]
    assert [v.name for v in g.inputs] == ["a", "b", "bias", "w"]
    for got, want in zip(run(g, *args), torch_style_reference(*args)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_torch_style_module_is_upstream_mlir():
    mt.verify(TORCH_STYLE)


def test_named_linalg_ops():
    text = """
func.func @f(%x: tensor<1x2x6x6xf32>, %w: tensor<3x2x3x3xf32>, %v: tensor<4x3xf32>, %m: tensor<3x5xf32>) -> (tensor<1x3x2x2xf32>, tensor<4x5xf32>, tensor<3xf32>, tensor<4x2x3xf32>) {
  %cst = arith.constant 0.000000e+00 : f32
  %ninf = arith.constant 0xFF800000 : f32
  %e = tensor.empty() : tensor<1x3x4x4xf32>
  %z = linalg.fill ins(%cst : f32) outs(%e : tensor<1x3x4x4xf32>) -> tensor<1x3x4x4xf32>
  %c = linalg.conv_2d_nchw_fchw {dilations = dense<1> : vector<2xi64>, strides = dense<1> : vector<2xi64>} ins(%x, %w : tensor<1x2x6x6xf32>, tensor<3x2x3x3xf32>) outs(%z : tensor<1x3x4x4xf32>) -> tensor<1x3x4x4xf32>
  %win = tensor.empty() : tensor<2x2xf32>
  %e2 = tensor.empty() : tensor<1x3x2x2xf32>
  %f2 = linalg.fill ins(%ninf : f32) outs(%e2 : tensor<1x3x2x2xf32>) -> tensor<1x3x2x2xf32>
  %p = linalg.pooling_nchw_max {dilations = dense<1> : vector<2xi64>, strides = dense<2> : vector<2xi64>} ins(%c, %win : tensor<1x3x4x4xf32>, tensor<2x2xf32>) outs(%f2 : tensor<1x3x2x2xf32>) -> tensor<1x3x2x2xf32>
  %e3 = tensor.empty() : tensor<4x5xf32>
  %z3 = linalg.fill ins(%cst : f32) outs(%e3 : tensor<4x5xf32>) -> tensor<4x5xf32>
  %mm = linalg.matmul ins(%v, %m : tensor<4x3xf32>, tensor<3x5xf32>) outs(%z3 : tensor<4x5xf32>) -> tensor<4x5xf32>
  %e4 = tensor.empty() : tensor<3xf32>
  %z4 = linalg.fill ins(%cst : f32) outs(%e4 : tensor<3xf32>) -> tensor<3xf32>
  %r = linalg.reduce ins(%v : tensor<4x3xf32>) outs(%z4 : tensor<3xf32>) dimensions = [0]
    (%in: f32, %init: f32) {
      %s = arith.addf %in, %init : f32
      linalg.yield %s : f32
    }
  %e5 = tensor.empty() : tensor<4x2x3xf32>
  %b = linalg.broadcast ins(%v : tensor<4x3xf32>) outs(%e5 : tensor<4x2x3xf32>) dimensions = [1]
  return %p, %mm, %r, %b : tensor<1x3x2x2xf32>, tensor<4x5xf32>, tensor<3xf32>, tensor<4x2x3xf32>
}
"""
    mt.verify(text)
    x, w, v, m = f32(1, 2, 6, 6), f32(3, 2, 3, 3), f32(4, 3), f32(3, 5)
    got = run(from_mlir(text), x, w, v, m)
    conv = np.array(mlc.compile(lambda x, w: mlc.conv(x, w), x, w)(x, w))
    pool = conv.reshape(1, 3, 2, 2, 2, 2).max(axis=(3, 5))
    for g_, want in zip(got, [pool, v @ m, v.sum(axis=0), np.broadcast_to(v[:, None, :], (4, 2, 3))]):
        np.testing.assert_allclose(g_, want, rtol=1e-5, atol=1e-5)


def test_unsupported_ops_listed_with_lines():
    text = """func.func @f(%a: tensor<4xf32>, %i: tensor<4xi64>) -> tensor<4xf32> {
  %0 = "tosa.abs"(%a) : (tensor<4xf32>) -> tensor<4xf32>
  %e = tensor.empty() : tensor<4xf32>
  %1 = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>], iterator_types = ["parallel"]} ins(%i : tensor<4xi64>) outs(%e : tensor<4xf32>) {
  ^bb0(%in: i64, %out: f32):
    %k = arith.index_cast %in : i64 to index
    %v = tensor.extract %a[%k] : tensor<4xf32>
    %w = math.expm1 %v : f32
    linalg.yield %w : f32
  } -> tensor<4xf32>
  %2 = "tosa.abs"(%1) : (tensor<4xf32>) -> tensor<4xf32>
  return %2 : tensor<4xf32>
}"""
    with pytest.raises(MlirImportError) as e:
        from_mlir(text)
    msg = str(e.value)
    assert "tosa.abs (line 2, 11)" in msg and "math.expm1 (line 8)" in msg and "tensor.extract" not in msg
    assert msg.count("tosa.abs") == 1


def test_bad_text_and_entry():
    with pytest.raises(MlirImportError, match="does not parse"):
        from_mlir("func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> { return %b : tensor<4xf32> }")
    two = ("func.func @f(%a: tensor<2xf32>) -> tensor<2xf32> { return %a : tensor<2xf32> }\n"
           "func.func @g(%a: tensor<2xf32>) -> tensor<2xf32> { return %a : tensor<2xf32> }")
    with pytest.raises(MlirImportError, match="2 entry functions"):
        from_mlir(two)
    assert from_mlir(two, entry="g").name == "g"


def test_reads_a_file(tmp_path):
    path = tmp_path / "m.mlir"
    path.write_text(to_mlir(lambda x: mlc.relu(x) * 2.0, f32(3)))
    x = f32(3)
    np.testing.assert_allclose(run(from_mlir(path), x)[0], np.maximum(x, 0) * 2, rtol=1e-6)


@pytest.mark.parametrize("passes", ["--linalg-fuse-elementwise-ops --canonicalize --cse",
                                    "--linalg-generalize-named-ops --canonicalize"], ids=["fused", "generalized"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_upstream_printed_and_optimized_forms_import(name, passes):
    """What upstream mlir-opt prints (its syntax, #map aliases), after fusing the
    elementwise generics and canonicalizing, or with every named op generalized (convs
    and pools as generics reading windows through affine maps), imports and computes
    the same."""
    fn, *args = CASES[name]
    g = mlc.trace(fn, *args)
    text = mt.mlir_opt(to_mlir(g), *passes.split())
    if "generalize" in passes:
        assert "linalg.conv" not in text and "linalg.matmul" not in text and "linalg.pooling" not in text
    for got, want in zip(run(from_mlir(text), *args), run(g, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_channels_last_and_grouped_convs_concat_reshape():
    text = """
func.func @f(%x: tensor<1x5x5x2xf32>, %w: tensor<3x3x2x4xf32>, %g: tensor<1x2x3x4x4xf32>, %k: tensor<2x2x3x3x3xf32>, %s: tensor<4xi64>) -> (tensor<1x3x3x4xf32>, tensor<1x2x2x2x2xf32>, tensor<2x4x2xf32>) {
  %cst = arith.constant 0.000000e+00 : f32
  %e = tensor.empty() : tensor<1x3x3x4xf32>
  %z = linalg.fill ins(%cst : f32) outs(%e : tensor<1x3x3x4xf32>) -> tensor<1x3x3x4xf32>
  %c = linalg.conv_2d_nhwc_hwcf {dilations = dense<1> : tensor<2xi64>, strides = dense<1> : tensor<2xi64>} ins(%x, %w : tensor<1x5x5x2xf32>, tensor<3x3x2x4xf32>) outs(%z : tensor<1x3x3x4xf32>) -> tensor<1x3x3x4xf32>
  %e2 = tensor.empty() : tensor<1x2x2x2x2xf32>
  %z2 = linalg.fill ins(%cst : f32) outs(%e2 : tensor<1x2x2x2x2xf32>) -> tensor<1x2x2x2x2xf32>
  %gc = linalg.conv_2d_ngchw_fgchw {dilations = dense<1> : tensor<2xi64>, strides = dense<1> : tensor<2xi64>} ins(%g, %k : tensor<1x2x3x4x4xf32>, tensor<2x2x3x3x3xf32>) outs(%z2 : tensor<1x2x2x2x2xf32>) -> tensor<1x2x2x2x2xf32>
  %r = tensor.reshape %c(%s) : (tensor<1x3x3x4xf32>, tensor<4xi64>) -> tensor<1x9x2x2xf32>
  %r2 = tensor.collapse_shape %r [[0, 1], [2], [3]] : tensor<1x9x2x2xf32> into tensor<9x2x2xf32>
  %a = tensor.extract_slice %r2[0, 0, 0] [2, 2, 2] [1, 1, 1] : tensor<9x2x2xf32> to tensor<2x2x2xf32>
  %b = tensor.extract_slice %r2[3, 0, 0] [2, 2, 2] [1, 1, 1] : tensor<9x2x2xf32> to tensor<2x2x2xf32>
  %cat = tensor.concat dim(1) %a, %b : (tensor<2x2x2xf32>, tensor<2x2x2xf32>) -> tensor<2x4x2xf32>
  return %c, %gc, %cat : tensor<1x3x3x4xf32>, tensor<1x2x2x2x2xf32>, tensor<2x4x2xf32>
}
"""
    mt.verify(text)
    x, w, gx, k = f32(1, 5, 5, 2), f32(3, 3, 2, 4), f32(1, 2, 3, 4, 4), f32(2, 2, 3, 3, 3)
    shape = np.array([1, 9, 2, 2], np.int64)
    got = run(from_mlir(text), x, w, gx, k, shape)
    conv = lambda a, b, **kw: np.asarray(mlc.compile(lambda a, b: mlc.conv(a, b, **kw), a, b)(a, b))  # noqa: E731
    nhwc = conv(x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1)).transpose(0, 2, 3, 1)
    grouped = conv(gx.reshape(1, 6, 4, 4), k.transpose(1, 0, 2, 3, 4).reshape(4, 3, 3, 3), group=2)
    flat = nhwc.reshape(9, 2, 2)
    for g_, want in zip(got, [nhwc, grouped.reshape(1, 2, 2, 2, 2), np.concatenate([flat[:2], flat[3:5]], 1)]):
        np.testing.assert_allclose(g_, want, rtol=1e-5, atol=1e-5)
    # the grouped conv against numpy: output channel f of group g reads input channels of g only
    ref = np.zeros((1, 2, 2, 2, 2), np.float32)
    for g in range(2):
        for f in range(2):
            for i in range(2):
                for j in range(2):
                    ref[0, g, f, i, j] = (gx[0, g, :, i:i + 3, j:j + 3] * k[f, g]).sum()
    np.testing.assert_allclose(got[1], ref, rtol=1e-5, atol=1e-5)


def test_inconsistent_op_is_an_import_error_with_its_line():
    text = """func.func @f(%a: tensor<9x2xf32>) -> tensor<2x6xf32> {
  %b = tensor.extract_slice %a[3, 0] [2, 6] [1, 1] : tensor<9x2xf32> to tensor<2x6xf32>
  return %b : tensor<2x6xf32>
}"""
    with pytest.raises(MlirImportError, match=r"tensor.extract_slice \(line 2\): .*reshape"):
        from_mlir(text)
