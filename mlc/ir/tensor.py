"""Tensor level: what a kernel computes, not how (TE style).

A ``Kernel`` has placeholder inputs and a list of ``Compute`` stages in
dependency order; each stage defines every element of its output by a scalar
expression over its index variables, optionally a ``Reduce`` over extra axes::

    contraction kernel @matmul(A: f32[32,784], B: f32[784,128]) -> f32[32,128] {
      out[i, j] = sum[k < 784] A[i, k] * B[k, j]
    }

The text form parses back (``parse``, ``parse_all``) to a kernel that prints the same,
and ``verify`` checks a kernel's rules. In the text, a kernel's ``kind`` prefixes
``kernel`` unless it is ``injective``; scalar constants are lines ``C = 0.5: f32[]``;
temporaries end with their type (``T0[i, j] = A[i, j] * 2.0 : f32[64,56]``), outputs
have theirs in the header, where an output not named ``out`` (one output) or ``out0``,
``out1``, ... is written ``name: type``; a reduce axis that shares a name with another
variable of its stage prints renamed (``k1``).
"""
from __future__ import annotations

from typing import Callable, Sequence

from .expr import Const, Expr, Load, Var, binop, cast, format_expr, maximum, minimum, walk
from .text import ParseError, Parser, VerifyError, unique_names
from .types import DType, TensorType

REDUCERS = ("sum", "prod", "max", "min")


class Tensor:
    """Anything a stage can read: ``t[i, j]`` builds a Load."""

    def __init__(self, name: str, shape: Sequence[int], dtype: DType):
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype

    @property
    def type(self) -> TensorType:
        return TensorType(self.shape, self.dtype)

    def __getitem__(self, idx) -> Expr:
        if not isinstance(idx, tuple):
            idx = (idx,)
        return Load(self, idx)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}: {self.type})"


class Placeholder(Tensor):
    """A kernel input."""


class ScalarConstant(Tensor):
    """A one-element constant folded into the code: reading it gives the literal."""

    def __init__(self, name: str, shape, dtype: DType, value):
        super().__init__(name, shape, dtype)
        self.value = value

    def __getitem__(self, idx) -> Expr:
        return Const(self.value, self.dtype)


class Reduce:
    """``combiner[r0 < n0, r1 < n1] body`` -- only ever the whole body of a stage."""

    def __init__(self, combiner: str, axes: Sequence[Var], extents: Sequence[int], body: Expr):
        assert combiner in REDUCERS, combiner
        self.combiner = combiner
        self.axes = list(axes)
        self.extents = [int(e) for e in extents]
        self.body = body
        self.dtype = body.dtype

    def __str__(self) -> str:
        return self.format()

    def format(self, names: dict | None = None) -> str:
        rng = ", ".join(f"{(names or {}).get(v, v.name)} < {n}" for v, n in zip(self.axes, self.extents))
        return f"{self.combiner}[{rng}] {format_expr(self.body, 0, names)}"


class Compute(Tensor):
    def __init__(self, name: str, shape, axes: Sequence[Var], body: "Expr | Reduce"):
        super().__init__(name, shape, body.dtype)
        self.axes = list(axes)
        self.body = body

    @property
    def is_reduction(self) -> bool:
        return isinstance(self.body, Reduce)

    def inputs(self) -> list[Tensor]:
        """Tensors this stage reads, in first-use order."""
        body = self.body.body if isinstance(self.body, Reduce) else self.body
        seen: list[Tensor] = []
        for e in walk(body):
            if isinstance(e, Load) and e.source not in seen:
                seen.append(e.source)
        return seen

    def __str__(self) -> str:
        return self.format()

    def format(self, typed: bool = False) -> str:
        """``name[i, j] = body``; ``typed`` (a temporary) appends `` : f32[4,8]``."""
        reduced = self.body.axes if isinstance(self.body, Reduce) else []
        names = unique_names((), self.axes + reduced)   # so that a reduce axis k and an axis k print apart
        idx = ", ".join(names.get(v, v.name) for v in self.axes)
        body = self.body.format(names) if isinstance(self.body, Reduce) else format_expr(self.body, 0, names)
        return f"{self.name}[{idx}] = {body}" + (f" : {self.type}" if typed else "")


_AXIS_NAMES = "ijklmnpqrstuvw"


def index_vars(rank: int, prefix: str = "") -> list[Var]:
    names = _AXIS_NAMES if rank <= len(_AXIS_NAMES) else [f"i{n}" for n in range(rank)]
    return [Var(prefix + names[d]) for d in range(rank)]


def compute(shape: Sequence[int], fn: Callable[..., "Expr | Reduce"], name: str = "T") -> Compute:
    """``compute((m, n), lambda i, j: A[i, j] + 1.0)``."""
    axes = index_vars(len(shape))
    return Compute(name, shape, axes, fn(*axes))


def reduce_axes(extents: Sequence[int]) -> list[Var]:
    return [Var(f"r{n}" if len(extents) > 1 else "k") for n in range(len(extents))]


def reduce(combiner: str, extents: Sequence[int], fn: Callable[..., Expr]) -> Reduce:
    """``reduce("sum", [k_extent], lambda k: A[i, k] * B[k, j])``."""
    axes = reduce_axes(extents)
    return Reduce(combiner, axes, extents, fn(*axes))


def combine(combiner: str, acc: Expr, x: Expr) -> Expr:
    """One step of a reduction: ``acc`` combined with ``x`` (booleans sum by "or" and
    multiply by "and")."""
    if combiner == "sum":
        return acc + x if not acc.dtype.is_bool else binop("or", acc, x)
    if combiner == "prod":
        return acc * x if not acc.dtype.is_bool else binop("and", acc, x)
    return maximum(acc, x) if combiner == "max" else minimum(acc, x)


def reduce_identity(combiner: str, dtype: DType) -> Const:
    import numpy as np
    if combiner == "sum":
        return Const(0, dtype)
    if combiner == "prod":
        return Const(1, dtype)
    if dtype.is_float:
        return Const(float("-inf") if combiner == "max" else float("inf"), dtype)
    if dtype.is_bool:
        return Const(combiner == "min", dtype)
    info = np.iinfo(dtype.np)
    return Const(info.min if combiner == "max" else info.max, dtype)


class Kernel:
    """One unit of generated code: placeholders in, ``outputs`` out, ``stages`` in order.
    Stages that are not outputs are kernel-private temporaries."""

    def __init__(self, name: str, inputs: Sequence[Tensor], stages: Sequence[Compute],
                 outputs: Sequence[Compute], kind: str = "injective"):
        self.name = name
        self.inputs = list(inputs)
        self.stages = list(stages)
        self.outputs = list(outputs)
        self.kind = kind

    @property
    def temporaries(self) -> list[Compute]:
        return [s for s in self.stages if s not in self.outputs]

    def __str__(self) -> str:
        ins = ", ".join(f"{t.name}: {t.type}" for t in self.inputs if not isinstance(t, ScalarConstant))
        outs = ", ".join(str(t.type) if t.name == output_name(n, len(self.outputs)) else f"{t.name}: {t.type}"
                         for n, t in enumerate(self.outputs))
        kind = "" if self.kind == "injective" else f"{self.kind} "
        lines = [f"{kind}kernel @{self.name}({ins}) -> {outs} {{"]
        for t in self.inputs:
            if isinstance(t, ScalarConstant):
                lines.append(f"  {t.name} = {t.value!r}: {t.type}")
        lines += [f"  {s.format(typed=not any(s is o for o in self.outputs))}" for s in self.stages]
        lines.append("}")
        return "\n".join(lines)


def output_name(n: int, count: int) -> str:
    """The name lowering gives output ``n`` of ``count`` (the header omits it)."""
    return "out" if count == 1 else f"out{n}"


def stages_of(outputs: Sequence[Compute]) -> list[Compute]:
    """All Compute stages reachable from ``outputs``, producers first."""
    order: list[Compute] = []
    seen: set[int] = set()

    def visit(t):
        if id(t) in seen or not isinstance(t, Compute):
            return
        seen.add(id(t))
        for src in t.inputs():
            visit(src)
        order.append(t)

    for o in outputs:
        visit(o)
    return order


# ----------------------------------------------------------------------------- verifier

KINDS = ("injective", "reduction", "contraction")


def verify(kernel: Kernel) -> None:
    """Check a kernel's rules (one pass over it): inputs are placeholders or scalar
    constants and names are unique; each stage has one index variable per dimension,
    reduce extents >= 0, a known combiner, the dtype of its body, uses only its
    own index variables and reduce axes, and reads only inputs and earlier stages with
    one index per dimension; every output is a stage. Raises VerifyError."""
    def fail(msg):
        raise VerifyError(f"kernel @{kernel.name}: {msg}")

    if kernel.kind not in KINDS:
        fail(f"kind {kernel.kind!r} is not one of {', '.join(KINDS)}")
    names: set[str] = set()
    readable: set[int] = set()

    def define(t, what):
        if not t.name or t.name in names:
            fail(f"{what} name {t.name!r} is empty or repeated")
        names.add(t.name)
        readable.add(id(t))

    for t in kernel.inputs:
        if not isinstance(t, (Placeholder, ScalarConstant)):
            fail(f"input {t.name} is a {type(t).__name__}, not a placeholder or a scalar constant")
        define(t, "input")
    for s in kernel.stages:
        if not isinstance(s, Compute):
            fail(f"stage {getattr(s, 'name', s)!r} is a {type(s).__name__}, not a Compute")
        if len(s.axes) != len(s.shape):
            fail(f"stage {s.name} has {len(s.axes)} index variables for its {len(s.shape)} dimensions")
        if any(n < 0 for n in s.shape):
            fail(f"stage {s.name} has a negative extent in its shape {list(s.shape)}")
        bound = {id(v) for v in s.axes}
        body = s.body
        if isinstance(body, Reduce):
            if body.combiner not in REDUCERS:
                fail(f"stage {s.name} reduces with {body.combiner!r}, not one of {', '.join(REDUCERS)}")
            if len(body.axes) != len(body.extents):
                fail(f"stage {s.name} has {len(body.axes)} reduce axes for {len(body.extents)} extents")
            for v, n in zip(body.axes, body.extents):
                if n < 0:   # 0: a reduction over no elements gives the combiner's identity
                    fail(f"stage {s.name} reduces over {v.name} < {n}: extents must be >= 0")
            bound |= {id(v) for v in body.axes}
            if body.dtype is not body.body.dtype:
                fail(f"stage {s.name}: the reduction has dtype {body.dtype} but its body {body.body.dtype}")
            body = body.body
        if len(bound) != len(s.axes) + (len(s.body.axes) if isinstance(s.body, Reduce) else 0):
            fail(f"stage {s.name} binds a variable twice")
        if s.dtype is not body.dtype:
            fail(f"stage {s.name} has dtype {s.dtype} but its body computes {body.dtype}")
        for x in walk(body):
            if isinstance(x, Var) and id(x) not in bound:
                fail(f"stage {s.name} uses variable {x.name}, which is not one of its index variables or reduce axes")
            if isinstance(x, Load):
                if id(x.source) not in readable:
                    fail(f"stage {s.name} reads {x.source.name}, which is not an input or an earlier stage")
                if len(x.indices) != len(x.source.shape):
                    fail(f"stage {s.name} reads {x.source.name} (rank {len(x.source.shape)}) with "
                         f"{len(x.indices)} indices")
        define(s, "stage")
    if not kernel.outputs:
        fail("has no outputs")
    stages = {id(s) for s in kernel.stages}
    for o in kernel.outputs:
        if id(o) not in stages:
            fail(f"output {o.name} is not computed by any stage")


# ----------------------------------------------------------------------------- parser

class _Parser(Parser):
    def kernels(self) -> list[Kernel]:
        out = [self.kernel()]
        while self.peek()[0] != "eof":
            out.append(self.kernel())
        return out

    def kernel(self) -> Kernel:
        kind = "injective"
        k, v, line = self.peek()
        if v == "collective":
            self.error("a collective is a call into the runtime, not a tensor-level kernel")
        if k == "ident" and v != "kernel":
            kind = self.next()[1]
            if kind not in KINDS:
                self.error(f"unknown kernel kind {kind!r} (expected one of {', '.join(KINDS)})", line)
        head = self.peek()[2]
        self.expect("kernel")
        name = self.expect(kind="gname")[1:]
        tensors: dict[str, Tensor] = {}
        inputs: list[Tensor] = []
        self.expect("(")
        while not self.accept(")"):
            inputs.append(self.declare(tensors, Placeholder))
            if self.peek()[1] != ")":
                self.expect(",")
        self.expect("->")
        out_types: dict[str, TensorType] = {}
        declared = []
        while True:
            line = self.peek()[2]
            oname = self.name("an output name") if self.peek(1)[1] == ":" else None
            if oname is not None:
                self.expect(":")
            declared.append((oname, self.type(), line))
            if not self.accept(","):
                break
        for n, (oname, t, line) in enumerate(declared):
            oname = oname or output_name(n, len(declared))
            if oname in out_types:
                self.error(f"output {oname} is declared twice", line)
            out_types[oname] = t
        self.expect("{")
        stages: list[Compute] = []
        while not self.accept("}"):
            if self.peek(1)[1] == "=":
                inputs.append(self.scalar_constant(tensors))
            else:
                stages.append(self.stage(tensors, out_types))
        outputs = []
        for oname in out_types:
            stage = next((s for s in stages if s.name == oname), None)
            if stage is None:
                self.error(f"output {oname} of kernel @{name} is not computed by any stage", head)
            outputs.append(stage)
        return Kernel(name, inputs, stages, outputs, kind)

    def declare(self, tensors: dict, cls) -> Tensor:
        line = self.peek()[2]
        name = self.name("a tensor name")
        self.expect(":")
        t = self.type()
        out = cls(name, t.shape, t.dtype)
        self.define(tensors, out, line)
        return out

    def define(self, tensors: dict, t: Tensor, line: int) -> None:
        if t.name in tensors:
            self.error(f"{t.name} is defined twice", line)
        tensors[t.name] = t

    def scalar_constant(self, tensors: dict) -> ScalarConstant:
        line = self.peek()[2]
        name = self.name("a constant name")
        self.expect("=")
        k, v, vline = self.next()
        if k == "num":
            value = int(v) if v.lstrip("-").isdigit() else float(v)
        elif k == "ident" and v in ("True", "False", "nan"):
            value = float(v) if v == "nan" else v == "True"
        else:
            raise ParseError(f"line {vline}: bad constant value {v or 'end of input'!r}")
        self.expect(":")
        t = self.type()
        if t.size != 1:
            self.error(f"scalar constant {name} has type {t}, not one element", line)
        c = ScalarConstant(name, t.shape, t.dtype, value)
        self.define(tensors, c, line)
        return c

    def stage(self, tensors: dict, out_types: dict) -> Compute:
        line = self.peek()[2]
        name = self.name("a stage name")
        self.expect("[")
        axes: dict[str, Var] = {}
        while not self.accept("]"):
            self.bind(axes, self.name("an index variable"))
            if self.peek()[1] != "]":
                self.expect(",")
        self.expect("=")
        k, v, _ = self.peek()
        if v in REDUCERS and self.peek(1)[1] == "[" and self.peek(3)[1] == "<":
            self.next()
            self.expect("[")
            variables = dict(axes)
            raxes, rext = [], []
            while not self.accept("]"):
                rname = self.name("a reduce axis")
                if rname in axes:
                    self.error(f"reduce axis {rname} of {name} has the name of an index variable")
                raxes.append(self.bind(variables, rname))
                self.expect("<")
                rext.append(self.integer("reduce extent", minimum=0))
                if self.peek()[1] != "]":
                    self.expect(",")
            body = Reduce(v, raxes, rext, self.expr(variables, tensors))
        else:
            body = self.expr(axes, tensors)
        if name in out_types:
            t = out_types[name]
        elif self.accept(":"):
            t = self.type()
        else:
            self.error(f"temporary {name} needs its type after its body ({name}[i, ...] = ... : f32[n, ...])", line)
        if len(t.shape) != len(axes) or t.dtype is not body.dtype:
            self.error(f"{name} has type {t}, but {len(axes)} index variables and a {body.dtype} body", line)
        stage = Compute(name, t.shape, list(axes.values()), body)
        self.define(tensors, stage, line)
        return stage

    def bind(self, variables: dict, name: str) -> Var:
        if name in variables:
            self.error(f"variable {name} is bound twice")
        variables[name] = Var(name)
        return variables[name]


def parse(text: str) -> Kernel:
    """The kernel printed as ``text`` (``str(kernel)``); ParseError (with the line) if malformed."""
    p = _Parser(text)
    kernel = p.kernel()
    p.expect(kind="eof")
    return kernel


def parse_all(text: str) -> list[Kernel]:
    """Every kernel of a text holding several, as ``Compiled.text("tensor")`` prints them
    (a collective there is a ParseError: it is a runtime call, not a kernel)."""
    return _Parser(text).kernels()


__all__ = ["Tensor", "Placeholder", "ScalarConstant", "Compute", "Reduce", "Kernel", "compute", "reduce",
           "combine", "reduce_identity", "stages_of", "index_vars", "cast", "verify", "parse", "parse_all",
           "ParseError", "VerifyError"]
