"""What the benchmarks share: where the onnx package keeps its light models, and an
ONNX Runtime session set up the same way for every comparison (batch 1, 2 threads)."""
from __future__ import annotations

import os
import time

import onnx

from mlc.runtime.timing import median_seconds

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def ort_session(ort, model):
    """An ONNX Runtime CPU session on ``model`` (a path or serialized bytes): 2 intra-op
    threads, like mlc's libgomp on this machine's cores."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    so.log_severity_level = 3   # quiet: the light models carry unused initializers
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def settle() -> None:
    """Let the previous engine's worker threads stop spinning (OpenBLAS and ONNX Runtime
    busy-wait after a call) before another engine is timed on the same 2 cores."""
    time.sleep(0.3)


def timed(fn, reps: int) -> float:
    settle()
    return median_seconds(fn, reps)
