"""Front ends: Python tracing (``trace``) and ONNX import (``onnx``).

``mlc.frontend.onnx`` is imported on first use, so ``import mlc`` does not pay for
the onnx package until a model is imported."""
import importlib


def __getattr__(name: str):
    if name == "onnx":
        return importlib.import_module(".onnx", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
