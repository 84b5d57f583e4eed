"""Tiny ONNX models with a dynamic batch dimension, their numpy references, and a
server on free loopback ports shared by the tests of a module."""
from __future__ import annotations

import numpy as np
import pytest

import onnx
from onnx import TensorProto, helper, numpy_helper


def require_serve_libraries():
    """Skip the calling test module when the serve extra is not installed."""
    for module, package in (("aiohttp", "aiohttp"), ("grpc", "grpcio"), ("prometheus_client", "prometheus-client")):
        pytest.importorskip(module, reason=f"mlc serve needs {package} (pip install 'mlc[serve]')")

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((6, 5)).astype(np.float32)
B1 = RNG.standard_normal(5).astype(np.float32)
CONV_W = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
FC_W = RNG.standard_normal((4 * 4 * 4, 10)).astype(np.float32) * 0.1


def make_mlp(path, batch_dim="N"):
    """mlp: x (N, 6) FP32, k (N, 2) INT64 -> y = relu(x @ W1 + B1) (N, 5) FP32, s = k * 2 + 1 (N, 2) INT64."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 6])
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [batch_dim, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch_dim, 5])
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [batch_dim, 2])
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Add", ["h", "B1"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"]), helper.make_node("Mul", ["k", "two"], ["k2"]),
             helper.make_node("Add", ["k2", "one"], ["s"])]
    inits = [numpy_helper.from_array(W1, "W1"), numpy_helper.from_array(B1, "B1"),
             numpy_helper.from_array(np.array(2, np.int64), "two"), numpy_helper.from_array(np.array(1, np.int64), "one")]
    g = helper.make_graph(nodes, "mlp", [x, k], [y, s], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def mlp_ref(x, k):
    return np.maximum(x @ W1 + B1, 0), k * 2 + 1


def make_cnn(path, batch_dim="batch", size=4):
    """cnn: image (batch, 3, size, size) FP32 -> logits (batch, 10): conv 3x3 pad 1, relu, flatten, matmul."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch_dim, 3, size, size])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch_dim, 10])
    fc = (RNG.standard_normal((4 * size * size, 10)).astype(np.float32) * 0.1) if size != 4 else FC_W
    nodes = [helper.make_node("Conv", ["image", "W"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("MatMul", ["f", "FC"], ["logits"])]
    g = helper.make_graph(nodes, "cnn", [x], [y], [numpy_helper.from_array(CONV_W, "W"), numpy_helper.from_array(fc, "FC")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, str(path))
    return str(path)


def reference(path, **inputs):
    """The outputs of onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator
    return ReferenceEvaluator(str(path)).run(None, inputs)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"mlp": make_mlp(d / "mlp.onnx"), "cnn": make_cnn(d / "cnn.onnx")}


def start_server(models=(), **kw):
    from mlc.serve.server import BackgroundServer, ServeConfig
    kw = {"host": "127.0.0.1", "http_port": 0, "grpc_port": 0, "metrics_port": 0, **kw}
    cfg = ServeConfig(models=list(models), **kw)
    return BackgroundServer(cfg).start()


@pytest.fixture(scope="module")
def server(model_dir):
    s = start_server([model_dir["mlp"], model_dir["cnn"]], max_batch=8, max_delay_ms=5)
    yield s
    s.stop()
