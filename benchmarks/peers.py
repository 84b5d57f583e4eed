"""What the benchmarks share: where the onnx package keeps its light models, and an
ONNX Runtime session set up the same way for every comparison (batch 1, 2 threads)."""
from __future__ import annotations

import os

import onnx

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def ort_session(ort, model):
    """An ONNX Runtime CPU session on ``model`` (a path or serialized bytes): 2 intra-op
    threads, like mlc's libgomp on this machine's cores."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    so.log_severity_level = 3   # quiet: the light models carry unused initializers
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
