"""What the IR levels share for their text forms and their verifiers: the error
classes, the tokenizer, a recursive-descent parser base (tokens, expectations, types)
and the parser of scalar expressions (``expr.format_expr``'s form) used by the tensor
and the loop levels.

Expression text: ``i * 4 + j``, ``max(a, b)``, ``exp(x)``, ``select(c, a, b)``,
``f32(x)`` (a cast), ``A[i, k]`` (a load); literals are int64 (``3``), float32
(``1.5``, ``inf``, ``nan``), bool (``true``) or carry their dtype, glued on
(``3:i32``, ``0.5:f64``, ``1.0:f16``); ``-x`` negates (``neg(3)`` negates a literal, since
``-3`` is the literal minus three).
"""
from __future__ import annotations

import re

from .expr import BINARY_OPS, UNARY_FUNCS, BinOp, Call, Cast, Const, Expr, Load, Select, PREC
from .types import ALL_DTYPES, DType, TensorType, bool_, float32, int64


class ParseError(Exception):
    """Malformed IR text; the message starts with ``line N:``."""


class VerificationError(Exception):
    """An IR object breaks a rule of its level."""


class VerifyError(VerificationError):
    """A tensor-level kernel or a loop-level function breaks a rule; the message names
    the kernel or function and what is wrong."""


# the graph level's tokens (``%value``, ``dense<...>``, hex data)
GRAPH_TOKENS = re.compile(r"""
    (?P<ws>\s+)
  | (?P<hex>0x[0-9a-fA-F]*)
  | (?P<num>-?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\d+|inf)(?![A-Za-z_]))
  | (?P<val>%[A-Za-z0-9_.]+)
  | (?P<gname>@[A-Za-z0-9_.]+)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>\.\.\.|[()\[\]{}<>,:=])
""", re.VERBOSE)

# the tensor and loop levels' tokens: expression operators instead of graph values
TOKENS = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>-?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\d+|inf)(?![A-Za-z0-9_]))
  | (?P<gname>@[A-Za-z0-9_.]+)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>->|//|<=|>=|==|!=|&&|\|\||>>|\+=|\*=|[()\[\]{}<>,:;=+\-*/%^])
""", re.VERBOSE)


def tokenize(text: str, pattern: re.Pattern = TOKENS, comments: bool = False):
    """(kind, text, line) tokens ending with ("eof", "", line), and each token's offset
    in ``text``. With ``comments``, a line whose first token starts with ``//`` is one
    ("comment", rest of the line) token (elsewhere ``//`` is floor division)."""
    pos, line, line_start = 0, 1, True
    out, offsets = [], []
    while pos < len(text):
        if comments and line_start and text.startswith("//", pos):
            end = text.find("\n", pos)
            end = len(text) if end < 0 else end
            out.append(("comment", text[pos + 2:end].strip(), line))
            offsets.append(pos)
            pos, line_start = end, False
            continue
        m = pattern.match(text, pos)
        if not m:
            raise ParseError(f"line {line}: unexpected character {text[pos]!r}")
        kind = m.lastgroup
        if kind != "ws":
            out.append((kind, m.group(), line))
            offsets.append(pos)
            line_start = False
        elif "\n" in m.group():
            line_start = True
        line += m.group().count("\n")
        pos = m.end()
    out.append(("eof", "", line))
    offsets.append(len(text))
    return out, offsets


# the dtype spellings the text forms accept: the IR's (f32) and numpy's names (float32)
DTYPES = {d.short: d for d in ALL_DTYPES} | {d.name: d for d in ALL_DTYPES}


class Parser:
    """Tokens with one-token lookahead, and the pieces every level's text shares."""

    def __init__(self, text: str, pattern: re.Pattern = TOKENS, comments: bool = False):
        self.text = text
        self.toks, self.offsets = tokenize(text, pattern, comments)
        self.i = 0

    def peek(self, ahead: int = 0):
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def next(self):
        t = self.toks[self.i]
        if t[0] != "eof":
            self.i += 1
        return t

    def expect(self, value: str | None = None, kind: str | None = None):
        k, v, line = self.next()
        if (value is not None and v != value) or (kind is not None and k != kind):
            want = value if value is not None else kind
            raise ParseError(f"line {line}: expected {want!r}, found {v or 'end of input'!r}")
        return v

    def accept(self, value: str) -> bool:
        if self.peek()[1] == value and self.peek()[0] != "str":
            self.i += 1
            return True
        return False

    def error(self, msg: str, line: int | None = None):
        raise ParseError(f"line {self.peek()[2] if line is None else line}: {msg}")

    def dtype(self) -> DType:
        k, v, line = self.next()
        if k != "ident" or v not in DTYPES:
            raise ParseError(f"line {line}: unknown dtype {v or 'end of input'!r} "
                             f"(expected one of {', '.join(d.short for d in ALL_DTYPES)})")
        return DTYPES[v]

    def type(self) -> TensorType:
        dt = self.dtype()
        self.expect("[")
        dims = []
        while not self.accept("]"):
            dims.append(self.integer("dimension", minimum=0))
            if self.peek()[1] != "]":
                self.expect(",")
        return TensorType(dims, dt)

    def integer(self, what: str, minimum: int | None = None) -> int:
        k, v, line = self.next()
        if k != "num" or not re.fullmatch(r"-?\d+", v) or (minimum is not None and int(v) < minimum):
            bound = f" >= {minimum}" if minimum is not None else ""
            raise ParseError(f"line {line}: bad {what} {v or 'end of input'!r} (expected an integer{bound})")
        return int(v)

    def name(self, what: str = "a name") -> str:
        k, v, line = self.next()
        if k != "ident":
            raise ParseError(f"line {line}: expected {what}, found {v or 'end of input'!r}")
        return v

    # ------------------------------------------------------------------ expressions

    def expr(self, variables: dict, tensors: dict, min_prec: int = 0) -> Expr:
        """An expression over ``variables`` (name -> Var) and loads of ``tensors``
        (name -> anything with name, shape and dtype). Infix operators associate to
        the left, as ``format_expr`` prints them."""
        lhs = self.unary(variables, tensors)
        while True:
            k, v, line = self.peek()
            op = _INFIX.get(v) if k == "punct" else None
            if op is None or PREC[op] < min_prec:
                return lhs
            self.next()
            rhs = self.expr(variables, tensors, PREC[op] + 1)
            lhs = _build(line, BinOp, op, lhs, rhs)

    def unary(self, variables: dict, tensors: dict) -> Expr:
        k, v, line = self.peek()
        if k == "punct" and v == "-":
            self.next()
            return Call("neg", [self.unary(variables, tensors)])
        return self.primary(variables, tensors)

    def primary(self, variables: dict, tensors: dict) -> Expr:
        k, v, line = self.next()
        if k == "punct" and v == "(":
            e = self.expr(variables, tensors)
            self.expect(")")
            return e
        if k == "num" or (k == "ident" and v == "nan"):
            return self.literal(v, line)
        if k != "ident":
            raise ParseError(f"line {line}: expected an expression, found {v or 'end of input'!r}")
        if v in ("true", "false"):
            return Const(v == "true", bool_)
        if self.accept("("):
            args = [self.expr(variables, tensors)]
            while self.accept(","):
                args.append(self.expr(variables, tensors))
            self.expect(")")
            return self.call(v, args, line)
        if self.accept("["):
            if v not in tensors:
                raise ParseError(f"line {line}: load from {v}, which is not defined here")
            indices = []
            while not self.accept("]"):
                indices.append(self.expr(variables, tensors))
                if self.peek()[1] != "]":
                    self.expect(",")
            return _build(line, Load, tensors[v], indices)
        if v not in variables:
            raise ParseError(f"line {line}: variable {v} is not defined here")
        return variables[v]

    def literal(self, v: str, line: int) -> Const:
        dt = None
        glued = self.offsets[self.i] == self.offsets[self.i - 1] + len(v)   # "0.5:f64", not "0.5 : f32[4]"
        if glued and self.peek()[1] == ":" and self.peek(1)[0] == "ident" and self.peek(1)[1] in DTYPES:
            self.next()
            dt = self.dtype()
        is_int = re.fullmatch(r"-?\d+", v) is not None
        if dt is None:
            dt = int64 if is_int else float32
        if is_int != (dt.is_int or dt.is_bool) or dt.is_bool:
            raise ParseError(f"line {line}: literal {v} cannot have dtype {dt}")
        return Const(int(v) if is_int else float(v), dt)

    def call(self, fn: str, args: list, line: int) -> Expr:
        arity = 3 if fn == "select" else 2 if fn in _CALL_BINOPS else 1 if fn in UNARY_FUNCS or fn in DTYPES else None
        if arity is None:
            raise ParseError(f"line {line}: unknown function {fn}")
        if len(args) != arity:
            raise ParseError(f"line {line}: {fn} takes {arity} operand{'s' if arity > 1 else ''}, found {len(args)}")
        if fn == "select":
            return _build(line, Select, *args)
        if fn in _CALL_BINOPS:
            return _build(line, BinOp, fn, *args)
        if fn in DTYPES:
            return Cast(DTYPES[fn], args[0])
        return Call(fn, args)


_INFIX = {sym: op for op, sym in BINARY_OPS.items() if sym is not None}
_CALL_BINOPS = {op for op, sym in BINARY_OPS.items() if sym is None}


def _build(line: int, cls, *args):
    """``cls(*args)``, its type errors (mismatched dtypes, index count) as ParseErrors."""
    try:
        return cls(*args)
    except (TypeError, IndexError) as e:
        raise ParseError(f"line {line}: {e}") from None


def unique_names(taken, variables) -> dict:
    """Print names for ``variables`` that differ from ``taken`` and from each other
    (``k`` becomes ``k1``, ...): a map for ``format_expr``, empty when nothing clashes."""
    used = set(taken)
    names = {}
    for v in variables:
        name, n = v.name, 1
        while name in used:
            name, n = f"{v.name}{n}", n + 1
        used.add(name)
        if name != v.name:
            names[v] = name
    return names
