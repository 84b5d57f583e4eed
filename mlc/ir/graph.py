"""Graph IR: SSA dataflow over typed tensor values.

Text form (the printer and the parser round-trip exactly)::

    graph @mlp(%x: f32[32,784], %w1: f32[784,128]) {
      %0 = matmul(%x, %w1) : f32[32,128]
      %1 = relu(%0) : f32[32,128]
      %2 = softmax(%1) {axis=1} : f32[32,128]
      return %2
    }

A control-flow node (``scan``, ``while_loop``, ``cond``) carries its bodies as
graph-valued attributes, printed nested in place (``body=graph @body(...) {...}``)
and parsed back the same way; a body is closed: what it reads from outside comes
in as explicit inputs.

Constants are ``constant`` nodes whose ``value`` attribute holds a numpy array,
printed as ``dense<f32[2]: [1.0, 2.0]>`` (small) or as raw little-endian hex
(large, or holding a NaN with a payload or sign bit that ``nan`` would lose), so a
printed graph parses back bit-identically. Graph and input names are limited to
``[A-Za-z0-9_.]`` (the verifier checks), and numbered results skip input names.

This module knows nothing about individual ops: the verifier takes the type
rule as a callback (``mlc.ops.verify`` supplies the registry's).
"""
from __future__ import annotations

import json
import re
from typing import Callable, Sequence

import numpy as np

from .text import DTYPES as _DTYPES, GRAPH_TOKENS, ParseError, Parser, VerificationError
from .types import DType, TensorType

# A graph or input name prints as ``@name`` / ``%name``; only these characters parse back.
_NAME = re.compile(r"[A-Za-z0-9_.]+")


class Value:
    """An SSA value: a graph input or one output of a node."""

    __slots__ = ("type", "producer", "index", "name")

    def __init__(self, type: TensorType, producer: "Node | None" = None, index: int = 0,
                 name: str | None = None):
        self.type = type
        self.producer = producer
        self.index = index
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    def __repr__(self) -> str:
        return f"Value({self.name or '?'}: {self.type})"


class Node:
    """One op application. ``loc`` is the user's source line, kept for error messages."""

    __slots__ = ("op", "inputs", "attrs", "outputs", "loc")

    def __init__(self, op: str, inputs: Sequence[Value], attrs: dict, out_types: Sequence[TensorType],
                 loc: str | None = None):
        self.op = op
        self.inputs = list(inputs)
        self.attrs = dict(attrs)
        self.outputs = [Value(t, self, i) for i, t in enumerate(out_types)]
        self.loc = loc

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise ValueError(f"{self.op} has {len(self.outputs)} outputs")
        return self.outputs[0]

    def __repr__(self) -> str:
        return f"Node({self.op})"


class Graph:
    def __init__(self, name: str, inputs: Sequence[Value], nodes: Sequence[Node], outputs: Sequence[Value]):
        self.name = name
        self.inputs = list(inputs)
        self.nodes = list(nodes)
        self.outputs = list(outputs)

    def __str__(self) -> str:
        return print_graph(self)

    def __repr__(self) -> str:
        return f"<Graph @{self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes>"

    def users(self) -> dict[Value, list[Node]]:
        uses: dict[Value, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                uses.setdefault(v, []).append(n)
        return uses

    def copy(self) -> "Graph":
        """A structural copy (new Values and Nodes; constant arrays are shared)."""
        mapping: dict[Value, Value] = {}
        inputs = []
        for v in self.inputs:
            mapping[v] = Value(v.type, name=v.name)
            inputs.append(mapping[v])
        nodes = []
        for n in self.nodes:
            m = Node(n.op, [mapping[v] for v in n.inputs], n.attrs, [o.type for o in n.outputs], n.loc)
            mapping.update(zip(n.outputs, m.outputs))
            nodes.append(m)
        return Graph(self.name, inputs, nodes, [mapping[v] for v in self.outputs])


def walk_nodes(graph: Graph):
    """Every node of ``graph`` and, depth first, of the bodies its control-flow nodes carry."""
    for n in graph.nodes:
        yield n
        for v in n.attrs.values():
            if isinstance(v, Graph):
                yield from walk_nodes(v)


class GraphBuilder:
    """Appends nodes in order. ``infer(op, input_types, attrs) -> out types`` fills in
    output types when ``node`` is not given them."""

    def __init__(self, name: str, infer: Callable | None = None):
        self.name = name
        self.infer = infer
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []

    def input(self, name: str, type: TensorType) -> Value:
        v = Value(type, name=name)
        self.inputs.append(v)
        return v

    def constant(self, array) -> Value:
        array = np.asarray(array)
        # a C-ordered copy in native byte order (compiled code reads the raw bytes); keeps 0-d arrays 0-d
        array = np.array(array, dtype=array.dtype.newbyteorder("="), order="C")
        return self.node("constant", [], {"value": array}, [TensorType.of(array)])[0]

    def node(self, op: str, inputs: Sequence[Value], attrs: dict | None = None,
             out_types: Sequence[TensorType] | None = None, loc: str | None = None) -> list[Value]:
        attrs = dict(attrs or {})
        if out_types is None:
            if self.infer is None:
                raise ValueError("GraphBuilder.node needs out_types when the builder has no infer rule")
            out_types = self.infer(op, [v.type for v in inputs], attrs)
        n = Node(op, inputs, attrs, out_types, loc)
        self.nodes.append(n)
        return n.outputs

    def build(self, outputs: Sequence[Value]) -> Graph:
        return Graph(self.name, self.inputs, self.nodes, list(outputs))


# ----------------------------------------------------------------------------- verifier

def verify(graph: Graph, infer: Callable | None = None) -> None:
    """Check SSA (each value defined once, before use), topological order, that outputs
    are defined, and -- with ``infer(op, input_types, attrs)`` -- that every node's
    output types are what the op's type rule says."""
    defined: set[int] = set()
    names: set[str] = set()
    if not isinstance(graph.name, str) or not _NAME.fullmatch(graph.name):
        raise VerificationError(f"graph name {graph.name!r} is not made of letters, digits, '_' and '.'")
    for v in graph.inputs:
        if v.producer is not None:
            raise VerificationError(f"graph input {v.name} is produced by a node")
        if not v.name or v.name in names:
            raise VerificationError(f"graph input name {v.name!r} is empty or repeated")
        if not isinstance(v.name, str) or not _NAME.fullmatch(v.name):
            raise VerificationError(f"graph input name {v.name!r} is not made of letters, digits, '_' and '.'")
        names.add(v.name)
        defined.add(id(v))
    for i, n in enumerate(graph.nodes):
        for j, v in enumerate(n.inputs):
            if id(v) not in defined:
                raise VerificationError(f"node {i} ({n.op}) uses operand {j} before it is defined")
        for o in n.outputs:
            if id(o) in defined or o.producer is not n:
                raise VerificationError(f"node {i} ({n.op}) redefines a value")
            defined.add(id(o))
        if infer is not None:
            try:
                expected = list(infer(n.op, [v.type for v in n.inputs], n.attrs))
            except Exception as e:  # the rule's own message says what is wrong
                raise VerificationError(f"node {i} ({n.op}): {e}") from None
            got = [o.type for o in n.outputs]
            if expected != got:
                raise VerificationError(
                    f"node {i} ({n.op}) has output types {_types(got)} but its type rule gives {_types(expected)}")
        for key, body in n.attrs.items():
            if isinstance(body, Graph):
                try:
                    verify(body, infer)
                except VerificationError as e:
                    raise VerificationError(f"node {i} ({n.op}), its {key} @{body.name}: {e}") from None
    for v in graph.outputs:
        if id(v) not in defined:
            raise VerificationError(f"graph output {v!r} is not defined")


def _types(ts) -> str:
    return ", ".join(map(str, ts))


# ----------------------------------------------------------------------------- printer

_DENSE_INLINE_MAX = 64


def format_attr(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return _format_float(float(v))
    if isinstance(v, str):
        return json.dumps(v)
    if v is None:
        return "none"
    if isinstance(v, DType):
        return v.short
    if isinstance(v, np.ndarray):
        return _format_dense(v)
    if isinstance(v, Graph):
        return print_graph(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(format_attr(x) for x in v) + "]"
    raise TypeError(f"attribute value {v!r} of type {type(v).__name__} cannot be printed")


def _format_float(f: float) -> str:
    if np.isnan(f):
        return "nan"
    if np.isinf(f):
        return "inf" if f > 0 else "-inf"
    return repr(f)


def _nan_bits_canonical(a: np.ndarray) -> bool:
    """Whether every NaN in float array ``a`` has the bits that parsing ``nan`` gives back
    (a NaN with another payload or with the sign bit set prints only as hex)."""
    a = a.astype(a.dtype.newbyteorder("="), copy=False)
    nans = a[np.isnan(a)]
    if nans.size == 0:
        return True
    uint = np.dtype(f"u{a.dtype.itemsize}")
    return bool(np.all(nans.view(uint) == np.array(np.nan, dtype=a.dtype).view(uint)))


def _format_dense(a: np.ndarray) -> str:
    t = TensorType.of(a)
    if a.size <= _DENSE_INLINE_MAX and (not t.dtype.is_float or _nan_bits_canonical(a)):
        flat = a.reshape(-1)
        if t.dtype.is_float:
            # str() of a numpy float scalar is its shortest round-tripping decimal
            items = ["nan" if np.isnan(x) else ("inf" if x == np.inf else "-inf" if x == -np.inf else str(x))
                     for x in flat]
        elif t.dtype.is_bool:
            items = ["true" if x else "false" for x in flat]
        else:
            items = [str(int(x)) for x in flat]
        return f"dense<{t}: [{', '.join(items)}]>"
    data = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
    return f"dense<{t}: 0x{data.hex()}>"


def print_graph(graph: Graph, elide_constants: bool = False, groups=None) -> str:
    """The graph as text. With ``elide_constants``, constants above the inline size
    print only their type (used for structural hashing, not parseable). ``groups``,
    a list of (kernel name, nodes) in node order, wraps each group's nodes in a
    ``kernel @name { ... }`` block (the fused form; for reading, not parsing)."""
    group_at = {id(nodes[0]): (name, nodes) for name, nodes in groups or [] if nodes}
    group_end = {id(nodes[-1]) for _, nodes in groups or [] if nodes}
    grouped = {id(n) for _, nodes in groups or [] for n in nodes}
    names: dict[int, str] = {}
    taken = {v.name for v in graph.inputs}   # numbered results skip names the inputs use
    params = []
    for v in graph.inputs:
        names[id(v)] = "%" + v.name
        params.append(f"%{v.name}: {v.type}")
    lines = [f"graph @{graph.name}({', '.join(params)}) {{"]
    counter = 0
    for n in graph.nodes:
        outs = []
        for o in n.outputs:
            while str(counter) in taken:
                counter += 1
            names[id(o)] = f"%{counter}"
            outs.append(names[id(o)])
            counter += 1
        args = ", ".join(names[id(v)] for v in n.inputs)
        attrs = ""
        if n.attrs:
            items = []
            for k, v in n.attrs.items():
                if elide_constants and isinstance(v, np.ndarray) and v.size > _DENSE_INLINE_MAX:
                    items.append(f"{k}=dense<{TensorType.of(v)}: ...>")
                elif isinstance(v, Graph):   # a body, nested one level deeper
                    items.append(f"{k}=" + print_graph(v, elide_constants).replace("\n", "\n    "))
                else:
                    items.append(f"{k}={format_attr(v)}")
            attrs = " {" + ", ".join(items) + "}"
        types = ", ".join(str(o.type) for o in n.outputs)
        if id(n) in group_at:
            lines.append(f"  kernel @{group_at[id(n)][0]} {{")
        indent = "    " if id(n) in grouped else "  "
        lines.append(f"{indent}{', '.join(outs)} = {n.op}({args}){attrs} : {types}")
        if id(n) in group_end:
            lines.append("  }")
    outs = ", ".join(names[id(v)] for v in graph.outputs)
    lines.append("  return" + (" " + outs if outs else ""))
    lines.append("}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- parser

class _Parser(Parser):
    def __init__(self, text: str):
        super().__init__(text, GRAPH_TOKENS)

    def attr_value(self):
        k, v, line = self.peek()
        if v == "[" and k == "punct":
            self.next()
            items = []
            while not self.accept("]"):
                items.append(self.attr_value())
                if self.peek()[1] != "]":
                    self.expect(",")
            return tuple(items)
        if k == "ident" and v == "dense":
            return self.dense()
        if k == "ident" and v == "graph":
            return self.graph(nested=True)
        self.next()
        if k == "num":
            return _parse_number(v)
        if k == "str":
            try:
                return json.loads(v)
            except ValueError as e:
                raise ParseError(f"line {line}: bad string {v}: {e}") from None
        if k == "ident":
            if v in ("true", "false"):
                return v == "true"
            if v == "none":
                return None
            if v == "nan":
                return float("nan")
            if v in _DTYPES:
                return _DTYPES[v]
        raise ParseError(f"line {line}: bad attribute value {v or 'end of input'!r}")

    def dense(self) -> np.ndarray:
        self.expect("dense")
        self.expect("<")
        t = self.type()
        self.expect(":")
        k, v, line = self.peek()
        if k == "hex":
            self.next()
            if len(v) % 2:
                raise ParseError(f"line {line}: dense hex data has an odd number of digits")
            data = bytes.fromhex(v[2:])
            if len(data) != t.nbytes:
                raise ParseError(f"line {line}: dense {t} needs {t.nbytes} bytes, found {len(data)}")
            arr = np.frombuffer(data, dtype=t.dtype.np.newbyteorder("<")).astype(t.dtype.np).reshape(t.shape)
        else:
            self.expect("[")
            items = []
            while not self.accept("]"):
                items.append(self.dense_element(t))
                if self.peek()[1] != "]":
                    self.expect(",")
            if len(items) != t.size:
                raise ParseError(f"line {line}: dense {t} needs {t.size} elements, found {len(items)}")
            if t.dtype.is_float:
                arr = np.array(items, dtype=np.float64).astype(t.dtype.np)
            else:
                arr = np.array(items, dtype=t.dtype.np)
            arr = arr.reshape(t.shape)
        self.expect(">")
        return arr

    def dense_element(self, t: TensorType):
        k, v, line = self.next()
        dt = t.dtype
        if dt.is_float:
            if k == "num":
                return float(v)
            if k == "ident" and v == "nan":
                return float("nan")
        elif dt.is_bool:
            if k == "ident" and v in ("true", "false"):
                return v == "true"
        elif k == "num" and re.fullmatch(r"-?\d+", v):
            info = np.iinfo(dt.np)
            if not info.min <= int(v) <= info.max:
                raise ParseError(f"line {line}: dense element {v} is out of range for {dt}")
            return int(v)
        raise ParseError(f"line {line}: bad dense element {v or 'end of input'!r} for {dt}")

    def graph(self, nested: bool = False) -> Graph:
        self.expect("graph")
        name = self.expect(kind="gname")[1:]
        env: dict[str, Value] = {}
        inputs = []
        self.expect("(")
        while not self.accept(")"):
            line = self.peek()[2]
            vname = self.expect(kind="val")[1:]
            self.expect(":")
            v = Value(self.type(), name=vname)
            if vname in env:
                self.error(f"input %{vname} declared twice", line)
            env[vname] = v
            inputs.append(v)
            if self.peek()[1] != ")":
                self.expect(",")
        self.expect("{")
        nodes = []
        while True:
            if self.accept("return"):
                outs = []
                if self.peek()[1] != "}":
                    outs.append(self.use(env))
                    while self.accept(","):
                        outs.append(self.use(env))
                self.expect("}")
                if not nested:
                    self.expect(kind="eof")
                return Graph(name, inputs, nodes, outs)
            line = self.peek()[2]
            results = [self.expect(kind="val")[1:]]
            while self.accept(","):
                results.append(self.expect(kind="val")[1:])
            self.expect("=")
            op = self.expect(kind="ident")
            self.expect("(")
            args = []
            while not self.accept(")"):
                args.append(self.use(env))
                if self.peek()[1] != ")":
                    self.expect(",")
            attrs = {}
            if self.accept("{"):
                while not self.accept("}"):
                    key_line = self.peek()[2]
                    key = self.expect(kind="ident")
                    if key in attrs:
                        self.error(f"attribute {key!r} of {op} is given twice", key_line)
                    self.expect("=")
                    attrs[key] = self.attr_value()
                    if self.peek()[1] != "}":
                        self.expect(",")
            self.expect(":")
            types = [self.type()]
            while self.accept(","):
                types.append(self.type())
            if len(types) != len(results):
                self.error(f"{op} defines {len(results)} values but lists {len(types)} types", line)
            node = Node(op, args, attrs, types)
            for r, o in zip(results, node.outputs):
                if r in env:
                    self.error(f"%{r} is defined twice", line)
                env[r] = o
            nodes.append(node)

    def use(self, env) -> Value:
        k, v, line = self.next()
        if k != "val":
            raise ParseError(f"line {line}: expected a value, found {v or 'end of input'!r}")
        if v[1:] not in env:
            raise ParseError(f"line {line}: {v} is used before it is defined")
        return env[v[1:]]


def _parse_number(s: str):
    if s in ("inf", "-inf"):
        return float(s)
    if re.fullmatch(r"-?\d+", s):
        return int(s)
    return float(s)


def parse_graph(text: str) -> Graph:
    """Parse the text form printed by ``print_graph``."""
    return _Parser(text).graph()
