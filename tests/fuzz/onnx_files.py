"""Mutated ONNX files: each mutant is refused with ``OnnxImportError``, or imports,
compiles and runs to the answer of ONNX's reference evaluator.

The seeds are small valid models built with ``onnx.helper`` (convolution and
pooling, Gemm/MatMul/Softmax, Reshape/Transpose/Slice/Concat on initializers, shape
arithmetic, elementwise ops with broadcasting). A mutant changes bytes (truncate,
flip bits, splice, delete, insert) or structure (drop, duplicate or reorder nodes,
rename values, change attribute types and values, huge/negative/zero dims,
initializers of the wrong size or type, element types, op types, the opset).
Replay one case with ``mutant(seed, i)`` (its bytes) and ``check(data)``.
"""
from __future__ import annotations

import functools
import os
import tempfile
import warnings

import numpy as np
import onnx
import onnx.reference
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from . import FuzzResult

OPSET = 17
F = TensorProto.FLOAT
INTERESTING = [0, 1, -1, 2, 3, -2, 7, 64, 2 ** 31 - 1, 2 ** 31, -2 ** 31, 2 ** 62, -2 ** 62, 2 ** 63 - 1]
RUN_LIMIT = 1 << 24   # bytes of inputs, outputs and workspace a mutant may have to be run


def _vi(name, shape, elem=F):
    return helper.make_tensor_value_info(name, elem, shape)


def _model(name, nodes, inputs, outputs, inits):
    g = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])


def seeds() -> list[onnx.ModelProto]:
    """Fresh copies of the valid models mutants start from."""
    return [onnx.load_from_string(b) for b in _seed_bytes()]


@functools.lru_cache(maxsize=None)
def _seed_bytes() -> tuple[bytes, ...]:
    r = np.random.default_rng(0)

    def init(name, shape, dtype=np.float32):
        return numpy_helper.from_array(r.standard_normal(shape).astype(dtype), name)

    def ints(name, values):
        return numpy_helper.from_array(np.array(values, np.int64), name)

    conv = _model("conv", [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["r"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["a"], ["y"])],
        [_vi("x", [1, 2, 5, 5])], [_vi("p", [1, 3, 2, 2]), _vi("y", [1, 3, 1, 1])],
        [init("w", (3, 2, 3, 3)), init("b", (3,))])
    mlp = _model("mlp", [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, alpha=0.5),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("MatMul", ["t", "w2"], ["z"]),
        helper.make_node("Softmax", ["z"], ["y"], axis=-1)],
        [_vi("x", [2, 4])], [_vi("y", [2, 3])], [init("w1", (6, 4)), init("b1", (6,)), init("w2", (6, 3))])
    shapes = _model("shapes", [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Reshape", ["t", "shape"], ["r"]),
        helper.make_node("Slice", ["r", "starts", "ends", "axes", "steps"], ["s"]),
        helper.make_node("Concat", ["s", "c"], ["cc"], axis=1),
        helper.make_node("ReduceSum", ["cc", "raxes"], ["y"], keepdims=0),
        helper.make_node("Flatten", ["x"], ["f"], axis=2)],
        [_vi("x", [2, 3, 4])], [_vi("y", [2]), _vi("f", [6, 4])],
        [ints("shape", [2, -1]), ints("starts", [-1]), ints("ends", [-100]), ints("axes", [1]),
         ints("steps", [-2]), init("c", (2, 3)), ints("raxes", [1])])
    arith = _model("arith", [
        helper.make_node("Shape", ["x"], ["sh"]),
        helper.make_node("Gather", ["sh", "zero"], ["d0"], axis=0),
        helper.make_node("Unsqueeze", ["d0", "uaxes"], ["d0u"]),
        helper.make_node("Concat", ["d0u", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("Add", ["r", "bias"], ["a"]),
        helper.make_node("Cast", ["a"], ["y"], to=TensorProto.DOUBLE),
        helper.make_node("Expand", ["one", "target2"], ["e"]),
        helper.make_node("Mul", ["e", "r"], ["m"])],
        [_vi("x", [3, 2, 2])], [_vi("y", [3, 4], TensorProto.DOUBLE), _vi("m", [3, 4])],
        [ints("zero", 0), ints("uaxes", [0]), ints("minus1", [-1]), init("bias", (4,)),
         numpy_helper.from_array(np.ones((1, 1), np.float32), "one"), ints("target2", [3, 1])])
    elementwise = _model("elementwise", [
        helper.make_node("Sub", ["x", "k"], ["d"]),
        helper.make_node("Abs", ["d"], ["ad"]),
        helper.make_node("Sqrt", ["ad"], ["s"]),
        helper.make_node("Greater", ["x", "k"], ["g"]),
        helper.make_node("Where", ["g", "s", "x"], ["w"]),
        helper.make_node("Clip", ["w", "lo", "hi"], ["c"]),
        helper.make_node("LeakyRelu", ["c"], ["l"], alpha=0.2),
        helper.make_node("Pow", ["l", "two"], ["y"])],
        [_vi("x", [4, 3])], [_vi("y", [4, 3])],
        [init("k", (3,)), numpy_helper.from_array(np.array(-0.5, np.float32), "lo"),
         numpy_helper.from_array(np.array(1.5, np.float32), "hi"),
         numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    misc = _model("misc", [
        helper.make_node("Pad", ["x", "pads", "pv"], ["p"], mode="constant"),
        helper.make_node("Split", ["p", "split"], ["s0", "s1"], axis=1),
        helper.make_node("Tile", ["s1", "reps"], ["t"]),
        helper.make_node("Gather", ["x", "idx"], ["g"], axis=2),
        helper.make_node("Unsqueeze", ["g", "uaxes"], ["u"]),
        helper.make_node("Squeeze", ["u", "uaxes"], ["sq"]),
        helper.make_node("CumSum", ["sq", "cax"], ["cs"], reverse=1),
        helper.make_node("ArgMax", ["x"], ["am"], axis=1, keepdims=0),
        helper.make_node("TopK", ["x", "k"], ["tv", "ti"], axis=-1)],
        [_vi("x", [2, 3, 4])],
        [_vi("s0", [2, 2, 5]), _vi("t", [2, 4, 5]), _vi("cs", [2, 3, 2]), _vi("am", [2, 4], TensorProto.INT64),
         _vi("tv", [2, 3, 2]), _vi("ti", [2, 3, 2], TensorProto.INT64)],
        [ints("pads", [0, 1, 0, 0, 0, 1]), numpy_helper.from_array(np.array(0.5, np.float32), "pv"),
         ints("split", [2, 2]), ints("reps", [1, 2, 1]), ints("idx", [3, 0]), ints("uaxes", [0]), ints("cax", 2),
         ints("k", [2])])
    norm = _model("norm", [
        helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["bn"], epsilon=1e-3),
        helper.make_node("ConvTranspose", ["bn", "wt"], ["ct"], strides=[2, 2]),
        helper.make_node("LayerNormalization", ["ct", "ls", "lb"], ["ln"], axis=-1),
        helper.make_node("ReduceMax", ["ln"], ["y"], axes=[2, 3], keepdims=1),
        helper.make_node("Sigmoid", ["y"], ["sy"]),
        helper.make_node("Einsum", ["sy", "e"], ["z"], equation="nchw,dc->ndhw")],
        [_vi("x", [1, 3, 3, 3])], [_vi("ln", [1, 2, 6, 6]), _vi("z", [1, 4, 1, 1])],
        [init("scale", (3,)), init("bias", (3,)), init("mean", (3,)),
         numpy_helper.from_array(r.random(3).astype(np.float32) + 0.5, "var"), init("wt", (3, 2, 2, 2)),
         init("ls", (6,)), init("lb", (6,)), init("e", (4, 2))])
    integers = _model("integers", [
        helper.make_node("Mod", ["x", "m"], ["md"]),
        helper.make_node("Div", ["x", "d"], ["dv"]),
        helper.make_node("Equal", ["md", "zero"], ["eq"]),
        helper.make_node("Not", ["eq"], ["ne"]),
        helper.make_node("Where", ["ne", "dv", "x"], ["w"]),
        helper.make_node("ConstantOfShape", ["cshape"], ["c"], value=numpy_helper.from_array(np.array([3], np.int64))),
        helper.make_node("Add", ["w", "c"], ["a"]),
        helper.make_node("Range", ["zero", "six", "two"], ["rg"]),
        helper.make_node("Mul", ["a", "rg"], ["y"]),
        helper.make_node("Cast", ["y"], ["f"], to=TensorProto.FLOAT)],
        [_vi("x", [2, 3], TensorProto.INT64)], [_vi("y", [2, 3], TensorProto.INT64), _vi("f", [2, 3])],
        [ints("m", [2, -3, 4]), ints("d", [3]), ints("zero", 0), ints("cshape", [2, 3]), ints("six", 6),
         ints("two", 2)])
    models = (conv, mlp, shapes, arith, elementwise, misc, norm, integers)
    for m in models:
        onnx.checker.check_model(m, full_check=True)
    return tuple(m.SerializeToString() for m in models)


# ----------------------------------------------------------------------------- mutations

def _names(m) -> list[str]:
    g = m.graph
    return sorted({n for node in g.node for n in list(node.input) + list(node.output) if n}
                  | {v.name for v in g.input} | {t.name for t in g.initializer})


def _byte_mutation(data: bytes, r, others: list[bytes]) -> bytes:
    b = bytearray(data)
    kind = r.integers(5)
    if kind == 0 and b:    # truncate
        return bytes(b[:r.integers(len(b))])
    if kind == 1:          # flip a few bits
        for _ in range(r.integers(1, 5)):
            i = r.integers(len(b))
            b[i] ^= 1 << int(r.integers(8))
        return bytes(b)
    if kind == 2:          # splice in a chunk of another model
        o = others[r.integers(len(others))]
        i, j = sorted(r.integers(len(o), size=2))
        at = r.integers(len(b))
        return bytes(b[:at] + o[i:j] + b[at + (j - i):])
    if kind == 3:          # delete a chunk
        i = r.integers(len(b))
        return bytes(b[:i] + b[i + r.integers(1, 16):])
    i = r.integers(len(b) + 1)   # insert random bytes
    return bytes(b[:i] + r.integers(256, size=r.integers(1, 8)).astype(np.uint8).tobytes() + b[i:])


def _random_attribute(r, name):
    kind = r.integers(7)
    if kind == 0:
        return helper.make_attribute(name, int(r.choice(INTERESTING)))
    if kind == 1:
        return helper.make_attribute(name, [int(r.choice(INTERESTING)) for _ in range(r.integers(0, 6))],
                                     attr_type=AttributeProto.INTS)
    if kind == 2:
        return helper.make_attribute(name, float(r.choice([0.0, -1.0, 1e30, float("nan"), float("inf"), 0.5])))
    if kind == 3:
        return helper.make_attribute(name, [float(r.standard_normal()) for _ in range(r.integers(1, 4))])
    if kind == 4:
        return helper.make_attribute(name, str(r.choice(["", "SAME_UPPER", "VALID", "constant", "reflect", "x"])))
    if kind == 5:
        return helper.make_attribute(name, numpy_helper.from_array(np.array([r.integers(-3, 3)], np.int64)))
    a = AttributeProto()   # a type that is not there
    a.name, a.type = name, AttributeProto.UNDEFINED
    return a


def _mutate_attribute(r, node):
    if not node.attribute or r.random() < 0.15:   # a new one, maybe one the op does not take
        name = str(r.choice(["axis", "axes", "perm", "kernel_shape", "pads", "strides", "to", "keepdims",
                             "alpha", "group", "dilations", "bogus"]))
        node.attribute.append(_random_attribute(r, name))
        return
    k = r.integers(len(node.attribute))
    a = node.attribute[k]
    choice = r.integers(10)
    if choice == 0:       # another type under the same name
        node.attribute[k].CopyFrom(_random_attribute(r, a.name))
    elif choice == 1:     # drop it
        del node.attribute[k]
    elif a.type == AttributeProto.INT:
        a.i = int(r.choice(INTERESTING))
    elif a.type == AttributeProto.INTS:
        values = list(a.ints)
        if values and r.random() < 0.5:
            values[r.integers(len(values))] = int(r.choice(INTERESTING))
        elif values and r.random() < 0.5:
            values.pop(r.integers(len(values)))
        else:
            values.append(int(r.choice(INTERESTING)))
        del a.ints[:]
        a.ints.extend(values)
    elif a.type == AttributeProto.FLOAT:
        a.f = float(r.choice([0.0, -1.0, 1e30, float("nan"), 3.0]))
    else:
        node.attribute[k].CopyFrom(_random_attribute(r, a.name))


def _mutate_initializer(r, t):
    kind = r.integers(5)
    try:
        a = numpy_helper.to_array(t)
    except Exception:   # noqa: BLE001 -- already broken by an earlier mutation
        kind, a = 0, None
    if kind == 0:   # dims that do not match the data
        dims = list(t.dims) or [1]
        dims[r.integers(len(dims))] = int(r.choice([0, 1, 2, 5, -1, 2 ** 40]))
        del t.dims[:]
        t.dims.extend(dims)
    elif kind == 1:   # another element type over the same bytes
        t.data_type = int(r.choice([TensorProto.INT64, TensorProto.INT32, TensorProto.DOUBLE, TensorProto.FLOAT16,
                                    TensorProto.BOOL, TensorProto.UINT8, TensorProto.STRING, TensorProto.BFLOAT16,
                                    TensorProto.COMPLEX64, 77]))
    elif kind == 2 and t.raw_data:   # too few or too many bytes
        t.raw_data = t.raw_data[:r.integers(len(t.raw_data))] if r.random() < 0.5 else t.raw_data + b"\0" * 8
    elif kind == 3 and a.size:   # interesting values (shape tensors: huge, negative, zero)
        flat = a.reshape(-1).copy()
        v = r.choice(INTERESTING) if a.dtype.kind in "iu" else r.choice([0.0, -1.0, np.inf, np.nan, 1e30])
        flat[r.integers(flat.size)] = np.array(v).astype(a.dtype) if a.dtype.kind == "f" else \
            np.array(v, dtype=np.int64).astype(a.dtype)
        t.CopyFrom(numpy_helper.from_array(flat.reshape(a.shape), t.name))
    else:   # another shape for the same values
        t.CopyFrom(numpy_helper.from_array(a.reshape(-1), t.name))


def _set_dims(vi, r):
    shape = vi.type.tensor_type.shape
    if not shape.dim:
        return
    d = shape.dim[r.integers(len(shape.dim))]
    choice = r.integers(5)
    if choice == 0:
        d.dim_param = "N"
    elif choice == 1:
        d.dim_value = -int(r.integers(1, 5))
    elif choice == 2:
        del shape.dim[r.integers(len(shape.dim))]
    else:
        d.dim_value = int(r.choice([0, 1, 3, 2 ** 31, 2 ** 40, 2 ** 62]))


def _structure_mutation(m, r) -> None:
    g = m.graph
    kind = int(r.choice([0, 1, 2, 3, 4, 5, 6, 7, 7, 7, 8, 8, 8, 9, 9, 10, 11, 12]))
    nodes = g.node
    if kind == 0 and len(nodes) > 1:            # drop a node
        del nodes[r.integers(len(nodes))]
    elif kind == 1:                             # duplicate a node
        nodes.append(nodes[r.integers(len(nodes))])
    elif kind == 2 and len(nodes) > 1:          # swap two nodes (order may break)
        i, j = r.integers(len(nodes), size=2)
        a, b = onnx.NodeProto(), onnx.NodeProto()
        a.CopyFrom(nodes[i]), b.CopyFrom(nodes[j])
        nodes[i].CopyFrom(b), nodes[j].CopyFrom(a)
    elif kind == 3:                             # an input reads another value, or nothing
        node = nodes[r.integers(len(nodes))]
        if node.input:
            names = _names(m) + ["", "nothing"]
            node.input[r.integers(len(node.input))] = str(r.choice(names))
        else:
            node.input.append("x")
    elif kind == 4:                             # an output renamed (maybe onto another value)
        node = nodes[r.integers(len(nodes))]
        node.output[r.integers(len(node.output))] = str(r.choice(_names(m) + ["fresh"]))
    elif kind == 5:                             # a graph input or output renamed
        vis = list(g.input) + list(g.output)
        vis[r.integers(len(vis))].name = str(r.choice(_names(m) + ["fresh"]))
    elif kind in (6, 7):                        # attributes
        _mutate_attribute(r, nodes[r.integers(len(nodes))])
    elif kind == 8 and g.initializer:           # initializers
        _mutate_initializer(r, g.initializer[r.integers(len(g.initializer))])
    elif kind == 9:                             # declared dims
        vis = list(g.input) + list(g.output)
        _set_dims(vis[r.integers(len(vis))], r)
    elif kind == 10:                            # element types
        vis = list(g.input) + list(g.output)
        vis[r.integers(len(vis))].type.tensor_type.elem_type = int(r.choice(
            [TensorProto.DOUBLE, TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL, TensorProto.FLOAT16,
             TensorProto.STRING, TensorProto.BFLOAT16, 0, 99]))
    elif kind == 11:                            # another op type
        from mlc.frontend.onnx import supported_op_types
        nodes[r.integers(len(nodes))].op_type = str(r.choice(supported_op_types()))
    else:                                       # another opset
        m.opset_import[0].version = int(r.choice([1, 6, 7, 9, 11, 12, 13, 18, 21, 99]))


def _value_mutation(m, r) -> None:
    """A value that keeps the model well-formed more often: an attribute's value within its
    type, or an initializer's values or shape."""
    g = m.graph
    if g.initializer and r.random() < 0.5:
        t = g.initializer[r.integers(len(g.initializer))]
        try:
            a = numpy_helper.to_array(t)
        except Exception:   # noqa: BLE001 -- already broken
            return
        if a.size and r.random() < 0.7:
            flat = a.reshape(-1).copy()
            k = r.integers(flat.size)
            flat[k] = (flat[k] + r.integers(-3, 4)) if a.dtype.kind in "iu" else r.choice([0.0, -1.0, 2.0, 1e-3])
            t.CopyFrom(numpy_helper.from_array(flat.reshape(a.shape), t.name))
        else:
            _mutate_initializer(r, t)
        return
    with_attrs = [n for n in g.node if any(a.type in (AttributeProto.INT, AttributeProto.INTS, AttributeProto.FLOAT)
                                           for a in n.attribute)]
    if not with_attrs:
        return
    node = with_attrs[r.integers(len(with_attrs))]
    a = [a for a in node.attribute if a.type in (AttributeProto.INT, AttributeProto.INTS, AttributeProto.FLOAT)]
    a = a[r.integers(len(a))]
    if a.type == AttributeProto.INT:
        a.i = int(a.i + r.integers(-2, 3)) if r.random() < 0.7 else int(r.choice(INTERESTING))
    elif a.type == AttributeProto.FLOAT:
        a.f = float(r.choice([0.0, 1.0, -0.5, 2.0, 1e-6]))
    elif a.ints:
        k = r.integers(len(a.ints))
        a.ints[k] = int(a.ints[k] + r.integers(-2, 3))


def mutant(seed: int, i: int) -> bytes:
    """The bytes of case ``i`` of the run with ``seed``."""
    r = np.random.default_rng([seed, i])
    models = seeds()
    m = models[r.integers(len(models))]
    p = r.random()
    if p < 0.25:
        return _byte_mutation(m.SerializeToString(), r, [x.SerializeToString() for x in models])
    for _ in range(r.integers(1, 3)):
        (_value_mutation if p < 0.55 else _structure_mutation)(m, r)
    return m.SerializeToString()


# ----------------------------------------------------------------------------- the check

def _inputs(g, r):
    out = []
    for v in g.inputs:
        t = v.type
        if t.dtype.is_bool:
            out.append(r.random(t.shape) < 0.5)
        elif t.dtype.np.kind in "iu":   # never 0: integer division by zero has no defined result
            out.append(r.choice([-3, -2, -1, 1, 2, 3], size=t.shape).astype(t.dtype.np))
        else:
            out.append(r.standard_normal(t.shape).astype(t.dtype.np))
    return out


def _constants(model):
    for t in model.graph.initializer:
        yield numpy_helper.to_array(t)
    for node in model.graph.node:
        for a in node.attribute:
            if a.type == AttributeProto.TENSOR:
                yield numpy_helper.to_array(a.t)
            elif a.type in (AttributeProto.FLOAT, AttributeProto.FLOATS):
                yield np.array(helper.get_attribute_value(a), np.float32)


def _divides_integers_by_zero(model) -> bool:
    """Integer Div or Mod by a constant holding 0: ONNX leaves the result undefined."""
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("Div", "Mod") and len(node.input) > 1 and node.input[1] in inits:
            try:
                a = numpy_helper.to_array(inits[node.input[1]])
            except Exception:   # noqa: BLE001 -- a broken initializer: the importer refuses it
                continue
            if a.dtype.kind in "iu" and (a == 0).any():
                return True
    return False


def check(data: bytes, r=None) -> str:
    """'refused', 'matched', 'reference refused', 'too big to run', 'undefined', or raises AssertionError
    describing a failure."""
    import mlc
    from mlc.frontend.onnx import OnnxImportError, from_onnx
    r = r if r is not None else np.random.default_rng(0)
    try:
        g = from_onnx(data)
    except OnnxImportError:
        return "refused"
    except Exception as e:   # noqa: BLE001 -- what this fuzzer looks for
        raise AssertionError(f"import raised {type(e).__name__}: {e}") from e
    model = onnx.load_from_string(data)
    if _divides_integers_by_zero(model):
        return "undefined"
    sizes = [v.type.nbytes for v in list(g.inputs) + list(g.outputs)]
    largest = max((v.type.nbytes for node in g.nodes for v in node.outputs), default=0)
    if sum(sizes) > RUN_LIMIT or largest > 64 * RUN_LIMIT:   # valid, but e.g. a pool padded by 2**31 rows
        return "too big to run"
    try:
        exe = mlc.compile(g)
    except Exception as e:   # noqa: BLE001
        raise AssertionError(f"imported, then compile raised {type(e).__name__}: {e}") from e
    if exe.workspace_bytes > 64 * RUN_LIMIT:
        return "too big to run"
    xs = _inputs(g, r)
    outs = exe(*xs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = onnx.reference.ReferenceEvaluator(model).run(None, {v.name: x for v, x in zip(g.inputs, xs)})
    except Exception:   # noqa: BLE001 -- an invalid model the reference cannot run, mlc can
        return "reference refused"
    if len(want) != len(outs):
        raise AssertionError(f"mlc computes {len(outs)} outputs, the reference {len(want)}")
    # The reference pools treat NaN as padding and its LeakyRelu spreads a NaN alpha to
    # every element, so with inf or NaN among the constants only the elements both
    # compute as finite numbers are compared.
    finite = all(np.isfinite(a).all() for a in _constants(model) if a.dtype.kind == "f")
    for k, (got, ref) in enumerate(zip(outs, want)):
        ref = np.asarray(ref)
        if got.shape != ref.shape or got.dtype != ref.dtype:
            raise AssertionError(f"output {k}: mlc {got.dtype}{list(got.shape)}, reference {ref.dtype}{list(ref.shape)}")
        if got.dtype.kind == "f":
            if not finite:
                both = np.isfinite(got) & np.isfinite(ref)
                got, ref = got[both], ref[both]
            np.testing.assert_allclose(got, ref, rtol=2e-4, atol=1e-5, equal_nan=True, err_msg=f"output {k}")
        else:
            np.testing.assert_array_equal(got, ref, err_msg=f"output {k}")
    return "matched"


def fuzz(seed: int, iterations: int) -> FuzzResult:
    result = FuzzResult("onnx_files")
    old = os.environ.get("MLC_CACHE_DIR")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["MLC_CACHE_DIR"] = cache   # identical mutants compile once, in a cache of their own
        try:
            for i in range(iterations):
                data = mutant(seed, i)
                result.cases += 1
                try:
                    outcome = check(data, np.random.default_rng([seed, i, 1]))
                except AssertionError as e:
                    result.fail(f"seed {seed} case {i} (onnx_files.mutant({seed}, {i})): {str(e).strip()[:500]}")
                    continue
                except Exception as e:   # noqa: BLE001 -- e.g. running compiled code raised
                    result.fail(f"seed {seed} case {i} (onnx_files.mutant({seed}, {i})): {type(e).__name__}: "
                                f"{str(e).strip()[:500]}")
                    continue
                result.notes[outcome] = result.notes.get(outcome, 0) + 1
        finally:
            if old is None:
                os.environ.pop("MLC_CACHE_DIR", None)
            else:
                os.environ["MLC_CACHE_DIR"] = old
    return result
