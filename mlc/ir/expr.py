"""Scalar expressions shared by the tensor and loop levels.

Index arithmetic is int64. ``Load`` reads an element of anything with ``name``,
``shape`` and ``dtype`` (a tensor-level stage or a loop-level Buffer).
Python operators build expressions, so ``i * 4 + j`` is an ``Expr``.
"""
from __future__ import annotations

from typing import Sequence

from .types import DType, bool_, int64, float64, promote

# binary operators: name -> printed symbol (infix) or None (printed as a call)
BINARY_OPS = {
    "add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "mod": "%",
    "max": None, "min": None, "pow": None,
    "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=",
    "and": "&&", "or": "||",
    "xor": "^", "shr": ">>",   # integer bit operations; shr is a logical (unsigned) shift
    # integer bit operations, printed as calls; sar is an arithmetic (signed) shift right
    "bitand": None, "bitor": None, "shl": None, "sar": None,
}
COMPARISONS = {"lt", "le", "gt", "ge", "eq", "ne"}
# unary math functions understood by codegen
UNARY_FUNCS = {"neg", "abs", "exp", "log", "sqrt", "tanh", "sin", "cos", "erf", "not", "floor", "ceil", "round",
               "acos", "asin", "atan"}


class Expr:
    dtype: DType

    def _wrap(self, other) -> "Expr":
        return as_expr(other, self.dtype)

    def __add__(self, o): return binop("add", self, self._wrap(o))
    def __radd__(self, o): return binop("add", self._wrap(o), self)
    def __sub__(self, o): return binop("sub", self, self._wrap(o))
    def __rsub__(self, o): return binop("sub", self._wrap(o), self)
    def __mul__(self, o): return binop("mul", self, self._wrap(o))
    def __rmul__(self, o): return binop("mul", self._wrap(o), self)
    def __truediv__(self, o): return binop("div", self, self._wrap(o))
    def __floordiv__(self, o): return binop("floordiv", self, self._wrap(o))
    def __mod__(self, o): return binop("mod", self, self._wrap(o))
    def __neg__(self): return Call("neg", [self])

    def __str__(self) -> str:
        return format_expr(self)

    __repr__ = __str__


class Const(Expr):
    __slots__ = ("value", "dtype")

    def __init__(self, value, dtype: DType = int64):
        self.dtype = dtype
        if dtype.is_float:
            self.value = float(value)
        elif dtype.is_bool:
            self.value = bool(value)
        else:
            self.value = int(value)


class Var(Expr):
    """A loop or index variable (int64). Identity matters, names are for printing."""
    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: DType = int64):
        self.name = name
        self.dtype = dtype


class BinOp(Expr):
    __slots__ = ("op", "a", "b", "dtype")

    def __init__(self, op: str, a: Expr, b: Expr):
        assert op in BINARY_OPS, op
        if a.dtype is not b.dtype:
            raise TypeError(f"{op}: operand dtypes differ ({a.dtype} vs {b.dtype})")
        self.op, self.a, self.b = op, a, b
        self.dtype = bool_ if op in COMPARISONS else a.dtype


class Call(Expr):
    """A unary math function (exp, log, ...) or ``not``; the result has the operand's dtype."""
    __slots__ = ("fn", "args", "dtype")

    def __init__(self, fn: str, args: Sequence[Expr]):
        assert fn in UNARY_FUNCS, fn
        self.fn, self.args = fn, list(args)
        self.dtype = self.args[0].dtype


class Select(Expr):
    __slots__ = ("cond", "a", "b", "dtype")

    def __init__(self, cond: Expr, a: Expr, b: Expr):
        if not cond.dtype.is_bool or a.dtype is not b.dtype:
            raise TypeError(f"select({cond.dtype}, {a.dtype}, {b.dtype})")
        self.cond, self.a, self.b = cond, a, b
        self.dtype = a.dtype


class Cast(Expr):
    __slots__ = ("value", "dtype")

    def __init__(self, dtype: DType, value: Expr):
        self.dtype, self.value = dtype, value


class Load(Expr):
    __slots__ = ("source", "indices", "dtype")

    def __init__(self, source, indices: Sequence[Expr]):
        indices = [as_expr(i) for i in indices]
        if len(indices) != len(source.shape):
            raise IndexError(f"{source.name} has rank {len(source.shape)}, indexed with {len(indices)} indices")
        self.source, self.indices, self.dtype = source, indices, source.dtype


def as_expr(x, dtype: DType = int64) -> Expr:
    if isinstance(x, Expr):
        return x
    if isinstance(x, bool):
        return Const(x, bool_)
    if isinstance(x, float) and not dtype.is_float:
        return Const(x, float64)
    return Const(x, dtype)


def cast(dtype: DType, e: Expr) -> Expr:
    if e.dtype is dtype:
        return e
    if isinstance(e, Const):
        return Const(e.value, dtype) if not (dtype.is_int and e.dtype.is_float) else Const(int(e.value), dtype)
    return Cast(dtype, e)


def binop(op: str, a, b) -> Expr:
    """Build ``a op b`` with light constant folding of index arithmetic."""
    a, b = as_expr(a), as_expr(b)
    if a.dtype is not b.dtype:
        dt = promote(a.dtype, b.dtype)
        a, b = cast(dt, a), cast(dt, b)
    if isinstance(a, Const) and isinstance(b, Const) and a.dtype.is_int and op in ("add", "sub", "mul"):
        return Const({"add": a.value + b.value, "sub": a.value - b.value, "mul": a.value * b.value}[op], a.dtype)
    if a.dtype.is_int:
        if op == "add":
            if _is(b, 0): return a
            if _is(a, 0): return b
        if op == "sub" and _is(b, 0): return a
        if op == "mul":
            if _is(b, 1): return a
            if _is(a, 1): return b
            if _is(a, 0) or _is(b, 0): return Const(0, a.dtype)
        if op in ("floordiv",) and _is(b, 1): return a
        if op == "mod" and _is(b, 1): return Const(0, a.dtype)
    return BinOp(op, a, b)


def _is(e: Expr, v) -> bool:
    return isinstance(e, Const) and e.value == v


def maximum(a, b): return binop("max", a, b)
def minimum(a, b): return binop("min", a, b)
def call(fn: str, x: Expr) -> Expr: return Call(fn, [x])


def select(cond: Expr, a: Expr, b: Expr) -> Expr:
    return Select(cond, a, b)


# ----------------------------------------------------------------------------- utilities

def children(e: Expr) -> list[Expr]:
    if isinstance(e, BinOp):
        return [e.a, e.b]
    if isinstance(e, Call):
        return list(e.args)
    if isinstance(e, Select):
        return [e.cond, e.a, e.b]
    if isinstance(e, Cast):
        return [e.value]
    if isinstance(e, Load):
        return list(e.indices)
    return []


def walk(e: Expr):
    yield e
    for c in children(e):
        yield from walk(c)


def substitute(e: Expr, vmap: dict, smap: dict | None = None, loads: dict | None = None) -> Expr:
    """Replace Vars (by identity, ``vmap``), Load sources (``smap``), and whole Loads of
    a source (``loads``: source -> function of the substituted indices giving the new expression)."""
    def sub(x):
        return substitute(x, vmap, smap, loads)

    if isinstance(e, Var):
        return vmap.get(e, e)
    if isinstance(e, Const):
        return e
    if isinstance(e, BinOp):
        return binop(e.op, sub(e.a), sub(e.b))
    if isinstance(e, Call):
        return Call(e.fn, [sub(a) for a in e.args])
    if isinstance(e, Select):
        return Select(*(sub(x) for x in (e.cond, e.a, e.b)))
    if isinstance(e, Cast):
        return cast(e.dtype, sub(e.value))
    if isinstance(e, Load):
        indices = [sub(i) for i in e.indices]
        if loads and e.source in loads:
            return loads[e.source](indices)
        return Load(smap.get(e.source, e.source) if smap else e.source, indices)
    raise TypeError(f"unknown expression {type(e).__name__}")


def linear_coefficient(e: Expr, var: Var):
    """The integer c with e = c*var + (terms free of var), or None if e is not affine in var."""
    if isinstance(e, Var):
        return 1 if e is var else 0
    if isinstance(e, Const):
        return 0
    if isinstance(e, BinOp) and e.op in ("add", "sub"):
        ca, cb = linear_coefficient(e.a, var), linear_coefficient(e.b, var)
        if ca is None or cb is None:
            return None
        return ca + cb if e.op == "add" else ca - cb
    if isinstance(e, BinOp) and e.op == "mul":
        ca, cb = linear_coefficient(e.a, var), linear_coefficient(e.b, var)
        if ca == 0 and cb == 0:
            return 0
        if ca is not None and cb == 0 and isinstance(e.b, Const):
            return ca * e.b.value
        if cb is not None and ca == 0 and isinstance(e.a, Const):
            return cb * e.a.value
        return None
    return 0 if not uses_var(e, var) else None


def uses_var(e: Expr, var: Var) -> bool:
    return any(x is var for x in walk(e))


def affine_expr(coeffs: dict, const: int = 0) -> Expr:
    e: Expr = Const(const)
    for v, c in coeffs.items():
        if c:
            e = e + (v * c if c != 1 else v)
    return e


def affine(e: Expr):
    """({var: coefficient}, constant) for an affine integer expression, else None: the
    linear form of ``linear_atoms`` when every atom is a variable."""
    lin = linear_atoms(e)
    if lin is None or not all(isinstance(atom, Var) for atom, _ in lin[0].values()):
        return None
    return {atom: c for atom, c in lin[0].values() if c}, lin[1]


def simplify_index(e: Expr, ranges: dict) -> Expr:
    """``e`` with the index arithmetic of its loads simplified (``simplify_int``)."""
    if isinstance(e, Load):
        return Load(e.source, [simplify_int(i, ranges) for i in e.indices])
    if isinstance(e, BinOp):
        if e.op in COMPARISONS and e.a.dtype is int64:   # bounds checks on indices
            a, b = simplify_int(e.a, ranges), simplify_int(e.b, ranges)
        else:
            a, b = simplify_index(e.a, ranges), simplify_index(e.b, ranges)
        return binop(e.op, a, b) if (a is not e.a or b is not e.b) else e
    if isinstance(e, Select):
        return Select(*(simplify_index(x, ranges) for x in (e.cond, e.a, e.b)))
    if isinstance(e, Call):
        return Call(e.fn, [simplify_index(x, ranges) for x in e.args])
    if isinstance(e, Cast):
        return cast(e.dtype, simplify_index(e.value, ranges))
    return e


def simplify_int(e: Expr, ranges: dict) -> Expr:
    """Simplify an index expression (what reshapes leave behind) using the ranges of
    its variables (``ranges``: Var -> (lo, hi) inclusive):

    * ``x // f`` and ``x % f``: the terms of x whose coefficients are multiples of f
      move to the quotient (or vanish from the remainder), and an operand known to
      lie in [0, f) gives 0 (or itself);
    * ``x // a // b`` is ``x // (a * b)``;
    * ``(x // a) * a + x % a`` is ``x``;
    * a variable whose range is one value is that value.

    Each rule is applied only where the ranges show the operands are non-negative, so
    floor and truncating division agree."""
    if isinstance(e, Var):
        r = ranges.get(e)
        return Const(r[0]) if r is not None and r[0] == r[1] else e
    if isinstance(e, Load):
        return simplify_index(e, ranges)
    if isinstance(e, BinOp) and e.dtype is int64:
        a, b = simplify_int(e.a, ranges), simplify_int(e.b, ranges)
        if e.op in ("floordiv", "mod") and isinstance(b, Const) and b.value > 0:
            out = _simplify_divmod(e.op, a, int(b.value), ranges)
            if out is not None:
                return out
        out = binop(e.op, a, b) if (a is not e.a or b is not e.b) else e
        if e.op in ("add", "sub", "mul") and out.dtype is int64:
            lin = linear_atoms(out)
            if lin is not None:
                return _from_atoms(*_merge_divmod(*lin))
        return out
    return simplify_index(e, ranges)


def linear_atoms(e: Expr):
    """e as ({key: (atom, coefficient)}, constant): a linear combination of atoms
    (variables, or any non-linear subexpression such as x // 7), or None."""
    if isinstance(e, Const):
        return ({}, int(e.value)) if e.dtype.is_int else None
    if isinstance(e, BinOp) and e.op in ("add", "sub"):
        x, y = linear_atoms(e.a), linear_atoms(e.b)
        if x is None or y is None:
            return None
        sign = 1 if e.op == "add" else -1
        terms = dict(x[0])
        for k, (atom, c) in y[0].items():
            terms[k] = (atom, terms.get(k, (atom, 0))[1] + sign * c)
        return terms, x[1] + sign * y[1]
    if isinstance(e, BinOp) and e.op == "mul" and (isinstance(e.a, Const) or isinstance(e.b, Const)):
        k, other = (e.a.value, e.b) if isinstance(e.a, Const) else (e.b.value, e.a)
        x = linear_atoms(other)
        if x is None:
            return None
        return {key: (atom, c * int(k)) for key, (atom, c) in x[0].items()}, x[1] * int(k)
    return {structural_key(e): (e, 1)}, 0


def structural_key(e: Expr):
    """A structural key: equal for equal expressions, variables by identity (two
    variables may share a name)."""
    if isinstance(e, Var):
        return ("var", id(e))
    if isinstance(e, Const):
        return ("const", e.value, e.dtype.name)
    if isinstance(e, Load):
        return ("load", id(e.source), *(structural_key(i) for i in e.indices))
    if isinstance(e, BinOp):
        return (e.op, structural_key(e.a), structural_key(e.b))
    if isinstance(e, Call):
        return ("call", e.fn, *(structural_key(a) for a in e.args))
    if isinstance(e, Select):
        return ("select", structural_key(e.cond), structural_key(e.a), structural_key(e.b))
    if isinstance(e, Cast):
        return ("cast", e.dtype.name, structural_key(e.value))
    return ("?", id(e))


def _from_atoms(terms: dict, const: int) -> Expr:
    out: Expr = Const(const)
    for atom, c in terms.values():
        if c:
            out = out + (atom if c == 1 else atom * c)
    return out


def offset_form(indices, shape):
    """The flat element offset of ``indices`` into a row-major ``shape`` as ({key: (atom,
    coefficient)}, constant), with each pair ``(x // a) * a + x % a`` (what a reshape leaves
    behind) merged back into ``x`` -- an identity under floor and truncating division alike;
    None when an index is not a linear combination of atoms."""
    terms: dict = {}
    const, stride = 0, 1
    for i, n in zip(reversed(indices), reversed(shape)):
        form = linear_atoms(i)
        if form is None:
            return None
        for k, (atom, c) in form[0].items():
            terms[k] = (atom, terms.get(k, (atom, 0))[1] + c * stride)
        const += form[1] * stride
        stride *= n
    terms, const = _merge_divmod(terms, const)
    return {k: (atom, c) for k, (atom, c) in terms.items() if c}, const


def offset_stride(indices, shape, var: Var):
    """The coefficient of ``var`` in ``offset_form(indices, shape)``: 0 when the offset does
    not depend on it, None when it is not linear in it."""
    form = offset_form(indices, shape)
    if form is None:
        return 0 if not any(uses_var(i, var) for i in indices) else None
    c = 0
    for atom, k in form[0].values():
        if atom is var:
            c += k
        elif uses_var(atom, var):
            return None
    return c


def _merge_divmod(terms: dict, const: int):
    """c * a * (x // a) + c * (x % a) -> c * x."""
    for key, (atom, c) in list(terms.items()):
        if key not in terms or not (isinstance(atom, BinOp) and atom.op == "floordiv" and isinstance(atom.b, Const)):
            continue
        a = int(atom.b.value)
        mod_key = ("mod", structural_key(atom.a), structural_key(atom.b))
        if mod_key in terms and c % a == 0 and terms[mod_key][1] * a == c and c:
            k = c // a
            del terms[key], terms[mod_key]
            inner = linear_atoms(atom.a)
            if inner is None:
                inner = ({structural_key(atom.a): (atom.a, 1)}, 0)
            for ik, (iatom, ic) in inner[0].items():
                terms[ik] = (iatom, terms.get(ik, (iatom, 0))[1] + k * ic)
            const += k * inner[1]
    return terms, const


def index_range(e: Expr, ranges: dict):
    """(lo, hi) of an integer index expression, or None when unknown."""
    if isinstance(e, Const):
        return (int(e.value), int(e.value)) if e.dtype.is_int else None
    if isinstance(e, Var):
        return ranges.get(e)
    if isinstance(e, BinOp):
        x = index_range(e.a, ranges)
        if e.op in ("floordiv", "mod") and isinstance(e.b, Const) and e.b.value > 0:
            f = int(e.b.value)
            if x is None or x[0] < 0:
                return None
            if e.op == "floordiv":
                return x[0] // f, x[1] // f
            return x if x[1] < f else (0, f - 1)
        y = index_range(e.b, ranges)
        if x is None or y is None:
            return None
        if e.op == "add":
            return x[0] + y[0], x[1] + y[1]
        if e.op == "sub":
            return x[0] - y[1], x[1] - y[0]
        if e.op == "mul":
            p = [x[0] * y[0], x[0] * y[1], x[1] * y[0], x[1] * y[1]]
            return min(p), max(p)
        if e.op in ("min", "max"):
            f = min if e.op == "min" else max
            return f(x[0], y[0]), f(x[1], y[1])
    return None


def _simplify_divmod(op: str, a: Expr, f: int, ranges: dict) -> Expr | None:
    rng = index_range(a, ranges)
    if rng is None or rng[0] < 0:
        return None
    if rng[1] < f:
        return Const(0) if op == "floordiv" else a
    if op == "floordiv" and isinstance(a, BinOp) and a.op == "floordiv" and isinstance(a.b, Const) and a.b.value > 0:
        return _simplify_divmod("floordiv", a.a, int(a.b.value) * f, ranges) or binop(
            "floordiv", a.a, Const(int(a.b.value) * f))
    lin = linear_atoms(a)
    if lin is None:
        return None
    terms, c0 = lin
    whole = {k: (atom, c // f) for k, (atom, c) in terms.items() if c % f == 0}
    rest = {k: (atom, c) for k, (atom, c) in terms.items() if c % f != 0}
    if not whole and 0 <= c0 < f:
        return None
    if any(index_range(atom, ranges) is None or index_range(atom, ranges)[0] < 0 for atom, _ in terms.values()) \
            or any(c < 0 for _, c in terms.values()):
        return None
    r = _from_atoms(rest, c0 % f)
    if op == "mod":
        return r if index_range(r, ranges)[1] < f else binop("mod", r, Const(f))
    q = _from_atoms(whole, c0 // f)
    rr = index_range(r, ranges)
    if rr[1] < f:
        return q
    inner = _simplify_divmod("floordiv", r, f, ranges) or binop("floordiv", r, Const(f))
    return q + inner


# ----------------------------------------------------------------------------- printer

# infix precedence (higher binds tighter); the parser (ir/text.py) reads with the same table
PREC = {"or": 1, "and": 2, "lt": 3, "le": 3, "gt": 3, "ge": 3, "eq": 3, "ne": 3,
        "xor": 3, "shr": 4, "add": 4, "sub": 4, "mul": 5, "div": 5, "floordiv": 5, "mod": 5}


def format_expr(e: Expr, prec: int = 0, names: dict | None = None) -> str:
    """``e`` as text (``ir/text.py`` parses it back). ``names`` (Var -> name) overrides
    the names of some variables, so variables that share a name print apart."""
    def fmt(x, p=0):
        return format_expr(x, p, names)

    if isinstance(e, Var):
        return names.get(e, e.name) if names else e.name
    if isinstance(e, Const):
        if e.dtype.is_bool:
            return "true" if e.value else "false"
        if e.dtype.is_float:
            if e.dtype.bits == 64:
                return f"{e.value!r}:f64"
            s = str(e.dtype.np.type(e.value))   # shortest text that reads back as this f32/f16
            s = s if any(c in s for c in ".eni") else s + ".0"
            return s if e.dtype.bits == 32 else f"{s}:{e.dtype.short}"
        return str(e.value) if e.dtype is int64 else f"{e.value}:{e.dtype.short}"
    if isinstance(e, BinOp):
        sym = BINARY_OPS[e.op]
        if sym is None:
            return f"{e.op}({fmt(e.a)}, {fmt(e.b)})"
        p = PREC[e.op]
        s = f"{fmt(e.a, p)} {sym} {fmt(e.b, p + 1)}"
        return f"({s})" if p < prec else s
    if isinstance(e, Call):
        if e.fn == "neg" and not isinstance(e.args[0], Const):   # -3 would read as the literal
            return f"-{fmt(e.args[0], 9)}"
        return f"{e.fn}({', '.join(fmt(a) for a in e.args)})"
    if isinstance(e, Select):
        return f"select({fmt(e.cond)}, {fmt(e.a)}, {fmt(e.b)})"
    if isinstance(e, Cast):
        return f"{e.dtype.short}({fmt(e.value)})"
    if isinstance(e, Load):
        return f"{e.source.name}[{', '.join(fmt(i) for i in e.indices)}]"
    raise TypeError(type(e).__name__)
