"""mlc meeting other frameworks' interfaces: ``onnx_backend`` is mlc as an ONNX
backend (``onnx.backend.base.Backend``), so ONNX's conformance suite and tools that
drive a backend run models through mlc; ``onnx_export`` writes mlc graphs (a traced
function, a zoo model with its weights) as ONNX models."""
