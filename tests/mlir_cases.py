"""Programs covering the op families, shared by the MLIR exchange tests."""
import numpy as np
import pytest

import mlc

rng = np.random.default_rng(0)


def f32(*shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, shape).astype(np.float32)


CASES = {
    "binary_broadcast": (lambda a, b: (a + b) * (a - b) / (b * b + 1.0), f32(3, 4), f32(4)),
    "max_min_pow": (lambda a, b: mlc.maximum(a, b) + mlc.minimum(a, b) + mlc.pow(mlc.abs(a) + 0.5, b),
                    f32(2, 3, 4), f32(3, 1)),
    "unary": (lambda a: mlc.exp(a) + mlc.log(mlc.abs(a) + 1.0) + mlc.tanh(a) + mlc.sqrt(mlc.abs(a))
              + mlc.rsqrt(mlc.abs(a) + 1.0) + mlc.sin(a) + mlc.cos(a) + mlc.floor(a * 3) + mlc.ceil(a * 3)
              - a, f32(5, 6)),
    "activations": (lambda a: mlc.relu(a) + mlc.sigmoid(a) + mlc.gelu(a) + mlc.gelu(a, approximate="tanh")
                    + mlc.leaky_relu(a, 0.2) + mlc.elu(a) + mlc.softplus(a) + mlc.erf(a), f32(4, 7, lo=-3, hi=3)),
    "where_compare": (lambda a, b: mlc.where(a < b, a, b * 2.0) + mlc.where(a > 0.0, 1.0, 0.0), f32(4, 5), f32(5)),
    "reductions": (lambda a: (mlc.sum(a, axis=1), mlc.mean(a, axis=(0, 2), keepdims=True), mlc.max(a),
                              mlc.min(a, axis=-1)), f32(3, 4, 5)),
    "softmax": (lambda a: mlc.softmax(a, axis=-1) + mlc.log_softmax(a, axis=0), f32(4, 6)),
    "matmul_2d": (lambda a, b: a @ b, f32(5, 7), f32(7, 3)),
    "matmul_batched": (lambda a, b: a @ b, f32(2, 5, 7), f32(2, 7, 3)),
    "matmul_broadcast": (lambda a, b: a @ b, f32(2, 5, 7), f32(7, 3)),
    "matmul_vector": (lambda a, b: a @ b, f32(7), f32(2, 7, 3)),
    "conv": (lambda x, w: mlc.conv(x, w, strides=(2, 1), pads=(1, 2, 1, 0)), f32(1, 3, 9, 8), f32(4, 3, 3, 3)),
    "conv_grouped": (lambda x, w: mlc.conv(x, w, pads=(1, 1, 1, 1), group=3), f32(2, 6, 5, 5), f32(6, 2, 3, 3)),
    "conv_1d": (lambda x, w: mlc.conv(x, w, strides=(2,), pads=(1, 1), dilations=(2,)), f32(2, 3, 11), f32(4, 3, 3)),
    "conv_3d": (lambda x, w: mlc.conv(x, w, pads=(1, 0, 1, 1, 0, 0)), f32(1, 2, 4, 5, 4), f32(3, 2, 3, 2, 2)),
    "pool_1d": (lambda x: mlc.max_pool(x, kernel_shape=(3,), strides=(2,), pads=(1, 1))
                + mlc.avg_pool(x, kernel_shape=(3,), strides=(2,), pads=(1, 1)), f32(2, 3, 9)),
    "max_pool": (lambda x: mlc.max_pool(x, kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)), f32(1, 2, 7, 7)),
    "avg_pool": (lambda x: mlc.avg_pool(x, kernel_shape=(2, 2), strides=(2, 2)), f32(2, 3, 6, 6)),
    "avg_pool_padded": (lambda x: mlc.avg_pool(x, kernel_shape=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1)),
                        f32(1, 2, 5, 5)),
    "shapes": (lambda a: mlc.reshape(mlc.transpose(a, (2, 0, 1)), (4, 6)) + 1.0, f32(2, 3, 4)),
    "broadcast_slice_concat": (lambda a, b: mlc.concatenate([mlc.broadcast_to(b, (3, 4)), a[1:, ::2]], axis=0),
                               f32(3, 8), f32(1, 4)),
    "layer_norm": (lambda x, s, b: mlc.layer_norm(x, s, b, axis=-1), f32(3, 8), f32(8), f32(8)),
    "reversed_slice_tile": (lambda a: (a[::-1, 4:0:-2] * 1.0, mlc.tile(a, (2, 3)) + 1.0), f32(3, 7)),
    "cumsum": (lambda a: (mlc.cumsum(a, axis=1), mlc.cumsum(a, axis=0, exclusive=True),
                          mlc.cumsum(a, axis=1, reverse=True), mlc.cumsum(a, axis=1, exclusive=True, reverse=True)),
               f32(3, 5)),
    "lrn": (lambda x: mlc.lrn(x, size=3, alpha=1e-2, beta=0.75, bias=1.0) + mlc.lrn(x, size=4), f32(2, 5, 3, 3)),
    "gather": (lambda e, i: mlc.gather(e, i, axis=0) * 2.0, f32(10, 4), np.array([[3, 0, -1], [9, 9, 2]], np.int64)),
    "gather_inner": (lambda e, i: mlc.gather(e, i, axis=1), f32(3, 5, 2), np.array([4, 0], np.int32)),
    "argmax_argmin": (lambda a: (mlc.argmax(a, axis=1), mlc.argmin(a, axis=0, keepdims=False),
                                 mlc.argmax(a, axis=0, select_last_index=True, keepdims=False)),
                      np.round(f32(5, 6) * 2) / 2),   # ties, which the index rule decides
    "gather_elements": (lambda d, i: mlc.gather_elements(d, i, axis=1) + 1.0, f32(3, 4),
                        np.array([[3, 0], [-1, 1], [2, 2]], np.int64)),
    "integers": (lambda a, b: (a + b * 3 - mlc.maximum(a, b), mlc.bitwise_and(a, b) + mlc.bitwise_xor(a, b),
                               mlc.left_shift(a, 1), mlc.cast(a, "float32") * 0.5 + mlc.where(a < b, 1.0, 0.0),
                               mlc.cast(mlc.abs(a), "int64") + mlc.sum(b, axis=0)),
                 np.array([[3, -7, 12], [0, 5, -2]], np.int32), np.array([[1, 2, 3], [-4, 5, 6]], np.int32)),
    "bool_constant": (lambda a: mlc.where(np.arange(600).reshape(200, 3) % 3 == 1, a, a * 3.0), f32(200, 3)),
    "constant": (lambda a: a * np.arange(12, dtype=np.float32).reshape(3, 4) + np.float32(2.0), f32(3, 4)),
}

# control flow (exported as scf on tensors; from_mlir does not read scf)
CONTROL = {
    "scan": (lambda x: mlc.scan(lambda c, xi: (c * 0.5 + xi, mlc.tanh(c + xi)), x[0] * 0.0, x), f32(5, 3)),
    "scan_reverse": (lambda x: mlc.scan(lambda c, xi: (c + xi, c * 2.0), x[0] * 0.0, x, reverse=True), f32(4, 2)),
    "while_loop": (lambda x: mlc.while_loop(lambda c: mlc.sum(c) < 100.0, lambda c: c * 2.0 + 1.0, mlc.abs(x)),
                   f32(5, 3)),
    "cond": (lambda x: (mlc.cond(mlc.sum(x) > 0.0, lambda a: a * 2.0, lambda a: a - 1.0, x),
                        mlc.cond(mlc.sum(x) <= 0.0, lambda a: a * 2.0, lambda a: a - 1.0, x)), f32(5, 3)),
}


def zoo(name):
    """A zoo model with its weights as a function of its data inputs, and those inputs."""
    from mlc import models
    r = np.random.default_rng(3)
    model, inputs = {
        "resnet18": lambda: (models.resnet18(num_classes=10), (r.standard_normal((1, 3, 32, 32)).astype(np.float32),)),
        "bert": lambda: (models.bert(2, 32, 4, 100, num_classes=3), (r.integers(0, 100, (2, 8)),)),
        "wide_deep": lambda: (models.wide_deep(6, [10, 7], 3), ((r.random((4, 6)) > 0.5).astype(np.float32),
                                                                r.integers(0, 7, (4, 2)),
                                                                r.standard_normal((4, 3)).astype(np.float32))),
        "ncf": lambda: (models.ncf(20, 30, dim=8, mlp=(16, 8)), (r.integers(0, 20, 4), r.integers(0, 30, 4))),
        "lstm_lm": lambda: (models.lstm_lm(50, 16, layers=2), (r.integers(0, 50, (2, 8)),)),
    }[name]()
    params, state = model.init(seed=1)
    fn = (lambda *x: model(params, *x, state=state)) if state else (lambda *x: model(params, *x))
    return fn, inputs


ZOO = ["bert", "wide_deep", "ncf", pytest.param("resnet18", marks=pytest.mark.slow)]   # resnet18: ~35 s upstream
