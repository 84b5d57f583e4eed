"""mlc meeting other frameworks' interfaces: ``onnx_backend`` is mlc as an ONNX
backend (``onnx.backend.base.Backend``), so ONNX's conformance suite and tools that
drive a backend run models through mlc; ``onnx_export`` writes mlc graphs (a traced
function, a zoo model with its weights) as ONNX models."""

_LAZY = {"to_relax": "relax", "from_relax": "relax",   # imported on first use: `import mlc` never imports tvm
         "to_mlir": "mlir", "from_mlir": "mlir_import",   # nor xdsl
         "to_onnx": "onnx_export"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
