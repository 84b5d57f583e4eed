"""Every kernel and every loop function of three models, at every stage (as lowered,
after each tensor pass, as scheduled with accumulations and likely guards, after each
loop pass), prints as text that parses back to an object printing the same text,
built the same way (variables bound alike), and passes its verifier."""
import functools
import os

import numpy as np
import pytest

import mlc
from mlc.driver import Compiled, _in_place_aliases
from mlc.frontend.trace import trace_info
from mlc.ir import expr as E, loop as L, tensor as T
from mlc.passes.manager import PassManager
from mlc.target import Target

onnx = pytest.importorskip("onnx")
LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


class Recorder(PassManager):
    """Checks every stage as the pass manager reports it (before later passes rewrite it)."""

    def __init__(self):
        super().__init__(verify=True)
        self.checked = {"tensor": [], "loop": []}

    def record(self, name, level, ir):
        if level == "tensor":
            units = [c.kernel for c in ir.calls if isinstance(c.kernel, T.Kernel)]
        elif level == "loop":
            units = list(ir)
        else:
            return
        mod = T if level == "tensor" else L
        for u in units:
            text = str(u)
            back = mod.parse(text)
            assert str(back) == text, f"{name}: {u.name} does not round-trip"
            (same_kernel if level == "tensor" else same_func)(u, back)
            if level == "tensor":
                mod.verify(u)
            else:
                mod.verify(u, Target.get("host"))
            self.checked[level].append(name)
        if units:   # the module's text, as Compiled.text prints it, parses as a list
            assert [str(x) for x in mod.parse_all(str(ir))] == [str(u) for u in units]


# --- structural equality, variables compared by binding (names may repeat) ---

def same_expr(a, b, vmap):
    assert type(a) is type(b) and a.dtype is b.dtype, (a, b)
    if isinstance(a, E.Var):
        assert vmap.setdefault(a, b) is b, f"{a.name} bound to two variables"
    elif isinstance(a, E.Const):
        # an f32 literal may hold a double; the text keeps its f32 value (what codegen emits)
        assert np.array(a.value, a.dtype.np).tobytes() == np.array(b.value, b.dtype.np).tobytes()
    elif isinstance(a, E.Load):
        assert a.source.name == b.source.name
    else:
        assert getattr(a, "op", None) == getattr(b, "op", None) and getattr(a, "fn", None) == getattr(b, "fn", None)
    for x, y in zip(E.children(a), E.children(b), strict=True):
        same_expr(x, y, vmap)


def same_kernel(a, b):
    assert (a.name, a.kind) == (b.name, b.kind)
    # placeholders keep their order; the text lists scalar constants after them
    def inputs(k):
        consts = sorted((t.name, t.type, t.value) for t in k.inputs if isinstance(t, T.ScalarConstant))
        return [(t.name, t.type, type(t)) for t in k.inputs if not isinstance(t, T.ScalarConstant)], consts
    assert inputs(a) == inputs(b)
    assert [o.name for o in a.outputs] == [o.name for o in b.outputs]
    for s, t in zip(a.stages, b.stages, strict=True):
        assert (s.name, s.type) == (t.name, t.type)
        vmap = dict(zip(s.axes, t.axes, strict=True))
        if isinstance(s.body, T.Reduce):
            assert s.body.combiner == t.body.combiner and s.body.extents == t.body.extents
            vmap.update(zip(s.body.axes, t.body.axes, strict=True))
            same_expr(s.body.body, t.body.body, vmap)
        else:
            same_expr(s.body, t.body, vmap)
        assert len(set(vmap.values())) == len(vmap), f"{s.name}: two variables merged"


def flat(s):
    """A statement as a list of leaves (Seq and Alloc nesting differ: alloc scopes run to the block's end)."""
    if isinstance(s, L.Seq):
        return [x for y in s.stmts for x in flat(y)]
    if isinstance(s, L.Alloc):
        return [("alloc", s.buffer.name, s.buffer.type, s.buffer.scope)] + flat(s.body)
    return [s]


def same_stmt(a, b, vmap):
    xs, ys = flat(a), flat(b)
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        if isinstance(x, tuple):
            assert x == y
            continue
        assert type(x) is type(y)
        if isinstance(x, L.For):
            assert x.kind == y.kind
            same_expr(x.start, y.start, vmap)
            same_expr(x.extent, y.extent, vmap)
            vmap[x.var] = y.var
            same_stmt(x.body, y.body, vmap)
        elif isinstance(x, (L.Store, L.Accumulate)):
            assert x.buffer.name == y.buffer.name
            for i, j in zip(x.indices, y.indices, strict=True):
                same_expr(i, j, vmap)
            same_expr(x.value, y.value, vmap)
            if isinstance(x, L.Accumulate):
                assert x.combiner == y.combiner and [n for _, n in x.rindex] == [n for _, n in y.rindex]
                for (e, _), (f, _) in zip(x.rindex, y.rindex, strict=True):
                    same_expr(e, f, vmap)
        elif isinstance(x, L.If):
            assert x.likely == y.likely and (x.orelse is None) == (y.orelse is None)
            same_expr(x.cond, y.cond, vmap)
            same_stmt(x.then, y.then, vmap)
            if x.orelse is not None:
                same_stmt(x.orelse, y.orelse, vmap)
        elif isinstance(x, L.CallExtern):
            assert (x.name, x.descriptor) == (y.name, y.descriptor)
            assert [p and p.name for p in x.buffers] == [p and p.name for p in y.buffers]


def same_func(a, b):
    assert a.name == b.name
    for mine, theirs in ((a.inputs, b.inputs), (a.outputs, b.outputs), (a.scratch, b.scratch)):
        assert [(x.name, x.type, x.scope) for x in mine] == [(x.name, x.type, x.scope) for x in theirs]
    assert sorted(x.name for x in a.aliased) == sorted(x.name for x in b.aliased)
    same_stmt(a.body, b.body, {})


# --- the models ---

def resnet50():
    from mlc.frontend.onnx import from_onnx
    return from_onnx(onnx.load(os.path.join(LIGHT, "light_resnet50.onnx"))), None


def transformer():
    from mlc.examples import transformer_block, transformer_inputs
    traced = trace_info(functools.partial(transformer_block, heads=4),
                        transformer_inputs(seq=16, hidden=64, heads=4, ffn=128))
    return traced.graph, None


def train_step():
    from mlc import optim

    def loss_fn(p, x, t):
        return mlc.mean((mlc.tanh(x @ p["w"]) + p["b"] - t) ** 2)
    opt = optim.Adam(1e-2)
    p = {"w": np.linspace(-1, 1, 15).reshape(5, 3), "b": np.zeros(3)}
    step = optim.train_step(loss_fn, opt)
    r = np.random.default_rng(0)
    traced = trace_info(step.fn, (p, opt.init(p), r.standard_normal((16, 5)), r.standard_normal((16, 3))))
    return traced.graph, _in_place_aliases(traced, step.in_place)


@pytest.mark.parametrize("build", [resnet50, transformer, train_step], ids=lambda f: f.__name__)
def test_every_stage_round_trips_and_verifies(build):
    graph, aliases = build()
    pm = Recorder()
    Compiled(graph, Target.get("host"), pm, aliases)   # stops before LLVM
    stages = {level: list(dict.fromkeys(names)) for level, names in pm.checked.items()}
    assert stages == {"tensor": ["lower", "inline", "simplify_indices", "reindex_reductions"],
                      "loop": ["schedule", "partition", "lower_accumulate", "simplify_loops"]}
    assert pm.checked["tensor"].count("lower") == pm.checked["loop"].count("schedule") > 0
