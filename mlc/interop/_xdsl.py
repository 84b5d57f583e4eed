"""The xDSL pieces the MLIR exporters and importer share: type conversion, affine maps,
dense attributes, the parsing context, and the upstream linalg named ops xDSL does not
define (``batch_matmul``, ``conv_1d_ncw_fcw``, ``conv_3d_ncdhw_fcdhw``,
``pooling_nchw_sum``, ``pooling_ncw_max``/``_sum``). Imported only when MLIR exchange is used (the ``mlir`` extra)."""
from __future__ import annotations

from typing import ClassVar

import numpy as np
from xdsl.builder import Builder, ImplicitBuilder  # noqa: F401
from xdsl.context import Context
from xdsl.dialects import arith, bufferization, func, math, memref, scf, tensor, vector  # noqa: F401
from xdsl.dialects import linalg as _linalg_dialect
from xdsl.dialects.builtin import (  # noqa: F401
    DYNAMIC_INDEX,
    AffineMapAttr, ArrayAttr, BytesAttr, DenseArrayBase, DenseIntOrFPElementsAttr, Float16Type, Float32Type,
    Float64Type, FloatAttr, IndexType, IntegerAttr, IntegerType, MemRefType, ModuleOp, StringAttr, TensorType,
    UnitAttr, VectorType, i64,
)
from xdsl.dialects.linalg import ops as linalg  # noqa: F401
from xdsl.dialects.linalg.abstract_ops import NamedOperation, PoolingOperation
from xdsl.dialects.linalg.attrs import IteratorTypeAttr
from xdsl.ir import Block, BlockArgument, Region, SSAValue  # noqa: F401
from xdsl.ir.affine import AffineConstantExpr, AffineDimExpr, AffineExpr, AffineMap
from xdsl.irdl import irdl_op_definition

from ..ir import types as T


@irdl_op_definition
class PoolingNchwSumOp(PoolingOperation):
    """Upstream's ``linalg.pooling_nchw_sum`` (sum pooling; average pooling divides after)."""

    name = "linalg.pooling_nchw_sum"

    @classmethod
    def get_hidden_region(cls, inputs, outputs) -> Region:
        arg_types = cls.body_arg_types((*inputs, *outputs))
        add = arith.AddfOp if isinstance(arg_types[-1], (Float16Type, Float32Type, Float64Type)) else arith.AddiOp

        @Builder.implicit_region(arg_types)
        def hidden_region(args: tuple[BlockArgument, ...]) -> None:
            linalg.YieldOp(add(args[1], args[0]))

        return hidden_region

    def get_default_indexing_maps(self):
        n, c, oh, ow, kh, kw = (AffineDimExpr(d) for d in range(6))
        sh, sw = self.strides.get_values()
        dh, dw = self.dilations.get_values()
        return (AffineMap(6, 0, (n, c, oh * sh + kh * dh, ow * sw + kw * dw)),
                AffineMap(6, 0, (kh, kw)), AffineMap(6, 0, (n, c, oh, ow)))

    ORDER: ClassVar = None


_FLOATS = {16: Float16Type, 32: Float32Type, 64: Float64Type}


def elem_type(dt: T.DType):
    if dt.is_float:
        return _FLOATS[dt.bits]()
    if dt.is_bool:
        return IntegerType(1)
    return IntegerType(dt.bits)


def tensor_type(dt: T.DType, shape):
    return TensorType(elem_type(dt), list(shape))


def memref_type(dt: T.DType, shape):
    return MemRefType(elem_type(dt), list(shape))


def expr(r) -> AffineExpr:
    """An indexing-map result: a loop index (int), the constant 0 (None), or an AffineExpr."""
    if r is None:
        return AffineConstantExpr(0)
    if isinstance(r, int):
        return AffineDimExpr(r)
    return r


def d(i: int) -> AffineExpr:
    return AffineDimExpr(i)


def affine_map(n: int, results) -> AffineMapAttr:
    return AffineMapAttr(AffineMap(n, 0, tuple(results)))


def parallel():
    return IteratorTypeAttr.parallel()


def reduction():
    return IteratorTypeAttr.reduction()


def dense(value: np.ndarray, ty):
    """A dense elements attribute holding ``value``'s bytes (little-endian, C order)."""
    value = np.asarray(value)
    if value.dtype == np.bool_:
        return DenseIntOrFPElementsAttr.from_list(ty, [int(v) for v in value.reshape(-1)])
    data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
    return DenseIntOrFPElementsAttr(ty, BytesAttr(data))


def dense_i64(values):
    return DenseIntOrFPElementsAttr.from_list(TensorType(i64, [len(values)]), list(values))


def reassoc(groups):
    return ArrayAttr([ArrayAttr([IntegerAttr(i, i64) for i in g]) for g in groups])


class _GenericOp(linalg.GenericOp):
    """``linalg.generic`` whose parser also reads several results, ``-> (t1, t2)``, as
    upstream prints them (xDSL 0.75 reads only one)."""

    @classmethod
    def parse(cls, parser):
        from xdsl.dialects.linalg.attrs import IteratorType
        attrs = dict(parser.parse_optional_attr_dict())
        maps = attrs.pop("indexing_maps", None)
        its = attrs.pop("iterator_types", None)
        if maps is None or its is None:
            parser.raise_error("expected indexing_maps and iterator_types for linalg.generic")
        its = [IteratorTypeAttr(IteratorType(t.data)) if isinstance(t, StringAttr) else t for t in its]
        doc, library_call = attrs.pop("doc", None), attrs.pop("library_call", None)

        def group(keyword):
            pos = parser.pos
            if not parser.parse_optional_characters(keyword):
                return ()
            parser.parse_punctuation("(")
            names = parser.parse_comma_separated_list(parser.Delimiter.NONE, parser.parse_unresolved_operand)
            parser.parse_punctuation(":")
            types = parser.parse_comma_separated_list(parser.Delimiter.NONE, parser.parse_type)
            parser.parse_punctuation(")")
            return parser.resolve_operands(names, types, pos)
        ins, outs = group("ins"), group("outs")
        if parser.parse_optional_keyword("attrs"):
            parser.parse_punctuation("=")
            attrs |= parser.expect(parser.parse_optional_attr_dict, "expected extra attributes")
        body = parser.parse_region()
        results = ()
        if parser.parse_optional_punctuation("->"):
            paren = parser.parse_optional_punctuation("(") is not None
            results = parser.parse_comma_separated_list(parser.Delimiter.NONE, parser.parse_type)
            if paren:
                parser.parse_punctuation(")")
        op = cls(ins, outs, body, maps, its, results, doc, library_call)
        op.attributes |= attrs
        return op


def context() -> Context:
    """A context with every dialect the importer reads (and mlc's extra linalg ops)."""
    from xdsl.dialects.builtin import Builtin
    ctx = Context(allow_unregistered=True)
    for dialect in (Builtin, func.Func, arith.Arith, math.Math, tensor.Tensor, bufferization.Bufferization,
                    memref.MemRef, scf.Scf):
        ctx.load_dialect(dialect)
    for op in _linalg_dialect.Linalg.operations:
        ctx.load_op(_GenericOp if op is linalg.GenericOp else op)
    for op in EXTRA_OPS:
        ctx.load_op(op)
    return ctx


@irdl_op_definition
class BatchMatmulOp(NamedOperation):
    """Upstream's ``linalg.batch_matmul`` (C[b] += A[b] @ B[b]), which xDSL does not define."""

    name = "linalg.batch_matmul"

    PRINT_ATTRS_IN_FRONT: ClassVar[bool] = True

    def __init__(self, inputs, outputs=(), res=None, attributes=None):
        super().__init__(ins=inputs, outs=outputs, result_types=[o.type for o in outputs] if res is None else res,
                         attributes=attributes, hidden_region=self.get_hidden_region(inputs, outputs))

    @classmethod
    def get_hidden_region(cls, inputs, outputs) -> Region:
        return linalg.MatmulOp.get_hidden_region.__func__(cls, inputs, outputs)

    def get_default_indexing_maps(self):
        b, i, j, k = (AffineDimExpr(d) for d in range(4))
        return (AffineMap(4, 0, (b, i, k)), AffineMap(4, 0, (b, k, j)), AffineMap(4, 0, (b, i, j)))

    def get_indexing_maps(self):
        return ArrayAttr([AffineMapAttr(m) for m in self.get_default_indexing_maps()])

    def get_iterator_types(self):
        return ArrayAttr([parallel(), parallel(), parallel(), reduction()])


def _spatial_maps(n_spatial: int, strides, dilations, with_channels_in: bool):
    """Indexing maps of an N-d conv (``with_channels_in``) or pooling: loops are
    (n, f|c, out spatial..., [c], kernel spatial...)."""
    k = n_spatial
    if with_channels_in:
        n, f, *rest = (AffineDimExpr(i) for i in range(3 + 2 * k))
        out, c, ker = rest[:k], rest[k], rest[k + 1:]
        total = 3 + 2 * k
        image = tuple(o * s + q * d for o, q, s, d in zip(out, ker, strides, dilations))
        return (AffineMap(total, 0, (n, c) + image), AffineMap(total, 0, (f, c, *ker)),
                AffineMap(total, 0, (n, f, *out)))
    n, c, *rest = (AffineDimExpr(i) for i in range(2 + 2 * k))
    out, ker = rest[:k], rest[k:]
    total = 2 + 2 * k
    image = tuple(o * s + q * d for o, q, s, d in zip(out, ker, strides, dilations))
    return (AffineMap(total, 0, (n, c) + image), AffineMap(total, 0, tuple(ker)), AffineMap(total, 0, (n, c, *out)))


class _NdConv(linalg.Conv2DNchwFchwOp.__mro__[1]):   # xDSL's ConvOperation
    SPATIAL: ClassVar[int] = 2

    def get_default_indexing_maps(self):
        return _spatial_maps(self.SPATIAL, self.strides.get_values(), self.dilations.get_values(), True)

    def get_iterator_types(self):
        k = self.SPATIAL
        return ArrayAttr([parallel()] * (2 + k) + [reduction()] * (1 + k))


@irdl_op_definition
class Conv1DNcwFcwOp(_NdConv):
    """Upstream's ``linalg.conv_1d_ncw_fcw``."""
    name = "linalg.conv_1d_ncw_fcw"
    SPATIAL: ClassVar[int] = 1


@irdl_op_definition
class Conv3DNcdhwFcdhwOp(_NdConv):
    """Upstream's ``linalg.conv_3d_ncdhw_fcdhw``."""
    name = "linalg.conv_3d_ncdhw_fcdhw"
    SPATIAL: ClassVar[int] = 3


class _Pool1d(PoolingOperation):
    def get_default_indexing_maps(self):
        return _spatial_maps(1, self.strides.get_values(), self.dilations.get_values(), False)


@irdl_op_definition
class PoolingNcwMaxOp(_Pool1d):
    """Upstream's ``linalg.pooling_ncw_max``."""
    name = "linalg.pooling_ncw_max"

    @classmethod
    def get_hidden_region(cls, inputs, outputs) -> Region:
        return linalg.PoolingNchwMaxOp.get_hidden_region.__func__(cls, inputs, outputs)


@irdl_op_definition
class PoolingNcwSumOp(_Pool1d):
    """Upstream's ``linalg.pooling_ncw_sum``."""
    name = "linalg.pooling_ncw_sum"

    @classmethod
    def get_hidden_region(cls, inputs, outputs) -> Region:
        return PoolingNchwSumOp.get_hidden_region.__func__(cls, inputs, outputs)


EXTRA_OPS = (PoolingNchwSumOp, BatchMatmulOp, Conv1DNcwFcwOp, Conv3DNcdhwFcdhwOp, PoolingNcwMaxOp, PoolingNcwSumOp)
