"""mlc: a compiler-centric machine-learning stack.

    import mlc
    @mlc.jit
    def f(x, w): return mlc.relu(x @ w)
"""
from .version import __version__  # noqa: E402, F401  (mlc.__version__)
from . import logs as _logs  # noqa: E402

try:
    _logs.configure()   # MLC_LOG=debug|info|...,mlc.passes=debug
except ValueError as _e:   # a typo in the environment must not break every import of mlc
    import warnings as _warnings
    _warnings.warn(f"{_e}; logging left as it was", RuntimeWarning)

from .ir.types import (DType, TensorType, dtype, float16, float32, float64, int8, int16, int32, int64,  # noqa: E402
                       uint8, uint16, uint32, uint64, bool_)
from .frontend.trace import trace, TraceError  # noqa: E402
from .frontend.api import OP_FUNCTIONS as _OPS  # noqa: E402
from .frontend.control import cond, scan, while_loop  # noqa: E402
from .driver import compile, jit  # noqa: E402
from .transforms import grad, value_and_grad, vjp  # noqa: E402
from .target import Target  # noqa: E402
from .runtime.library import LibraryError, load  # noqa: E402
from . import checkpoint, data, dist, models, nn, optim  # noqa: E402

def _mlir_level(level: str):
    def text(compiled):   # imported when asked for: xdsl is the optional extra mlir
        from .interop.mlir import compiled_text
        return compiled_text(compiled, level)
    return text


from .driver import register_ir_level as _register_ir_level  # noqa: E402
_register_ir_level("mlir", _mlir_level("graph"))        # exe.ir("mlir"): interop sits above the driver,
_register_ir_level("mlir-loop", _mlir_level("loop"))    # which therefore learns these levels from here

globals().update(_OPS)   # mlc.exp, mlc.matmul, mlc.sum, ... one per registered op
globals().update({k: getattr(dist, k) for k in ("allreduce", "allgather", "reduce_scatter", "broadcast", "send",
                                               "recv")})  # collectives: mlc.dist's, which know the job's ranks

__all__ = ["trace", "jit", "scan", "while_loop", "cond", "compile", "load", "LibraryError", "grad", "value_and_grad", "vjp", "nn", "optim", "models", "data", "checkpoint", "dist", "Target", "TraceError", "DType", "TensorType", "dtype", "float16",
           "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool_",
           *sorted(_OPS)]
