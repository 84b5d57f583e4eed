"""Graph -> graph passes that simplify: type inference, constant folding, dead-code
elimination and common-subexpression elimination (algebraic simplification is the
rule tables of ``graph_rules.py``).

Every pass builds a new graph (the input graph is never changed) through
``rebuild``, which walks the nodes in order and lets a rule replace each one.
Ops are pure, so a node whose results nobody reads can go, two nodes with the
same op, inputs and attributes compute the same thing, and a node whose inputs
are all constants can be evaluated now with the op's numpy reference.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np

from .. import ops
from ..ir.graph import Graph, GraphBuilder, Node, Value, format_attr, print_graph

# A folded constant larger than this is kept only when it replaces its inputs (they
# have no other reader), so folding never duplicates weights.
FOLD_MAX_BYTES = 1 << 16

Rule = Callable[[Node, list, GraphBuilder], "list[Value] | None"]


def rebuild(graph: Graph, rule: Rule | None = None, reinfer: bool = False) -> Graph:
    """A new graph: each node goes through ``rule(node, new_inputs, builder)``, which
    returns the values that replace its outputs, or None to keep the node (with its
    inputs remapped). With ``reinfer``, kept nodes get their types from the op rules."""
    b = GraphBuilder(graph.name, ops.infer)
    vmap: dict[Value, Value] = {v: b.input(v.name, v.type) for v in graph.inputs}
    for n in graph.nodes:
        ins = [vmap[v] for v in n.inputs]
        outs = rule(n, ins, b) if rule is not None else None
        if outs is None:
            types = None if reinfer and n.op != "constant" else [o.type for o in n.outputs]
            outs = b.node(n.op, ins, n.attrs, types, n.loc)
        for old, new in zip(n.outputs, outs):
            if old.type != new.type:
                raise RuntimeError(f"rewriting {n.op} changed its result type from {old.type} to {new.type}")
        vmap.update(zip(n.outputs, outs))
    return b.build([vmap[v] for v in graph.outputs])


def emit(b: GraphBuilder, op: str, inputs: list[Value], loc: str | None = None, **attrs) -> Value:
    """Append ``op`` with canonical attributes and inferred types; its single result."""
    attrs = ops.get(op).canonical_attrs([v.type for v in inputs], attrs)
    return b.node(op, inputs, attrs, loc=loc)[0]


def constant_value(v: Value) -> np.ndarray | None:
    return v.producer.attrs["value"] if v.producer is not None and v.producer.op == "constant" else None


# ----------------------------------------------------------------------------- passes

def infer_types(graph: Graph) -> Graph:
    """Every node's result types recomputed from its op's type rule."""
    return rebuild(graph, reinfer=True)


def eliminate_dead_code(graph: Graph) -> Graph:
    """Drop nodes none of whose results reach a graph output. Collectives stay: they
    communicate with other processes, which wait for them."""
    live = {id(v) for v in graph.outputs}
    keep = set()
    for n in reversed(graph.nodes):
        if any(id(o) in live for o in n.outputs) or ops.communicates(n.op):
            keep.add(id(n))
            live.update(id(v) for v in n.inputs)
    return Graph(graph.name, graph.inputs, [n for n in graph.nodes if id(n) in keep], graph.outputs).copy()


def _attr_key(attrs: dict) -> str:
    items = []
    for k, v in sorted(attrs.items()):
        if isinstance(v, np.ndarray):
            digest = hashlib.sha1(np.ascontiguousarray(v).tobytes()).hexdigest()
            items.append(f"{k}={v.dtype.str}{v.shape}:{digest}")
        else:
            items.append(f"{k}={format_attr(v)}")
    return ",".join(items)


def _scan_key(n: Node, outputs: int) -> tuple:
    """What a scan computes for its first ``outputs`` results: its operands, attributes
    and the body returning only those (under a fixed name)."""
    body = n.attrs["body"]
    attrs = {k: v for k, v in n.attrs.items() if k != "body"}
    text = print_graph(Graph("body", body.inputs, body.nodes, body.outputs[:outputs]))
    return tuple(id(v) for v in n.inputs), _attr_key(attrs), text


def _extended_scans(graph: Graph) -> dict[int, Node]:
    """id(scan) -> a later scan on the same operands whose results begin with all of its
    results: the forward loop a gradient runs again to save the carries each step
    started from (``ops/control.py``), which can replace the first one."""
    first: dict[tuple, Node] = {}
    extended: dict[int, Node] = {}
    for n in graph.nodes:
        if n.op != "scan":
            continue
        for j in range(len(n.outputs) - 1, n.attrs["num_carry"] - 1, -1):
            earlier = first.get(_scan_key(n, j))
            if earlier is not None and id(earlier) not in extended:
                extended[id(earlier)] = n
                break
        first.setdefault(_scan_key(n, len(n.outputs)), n)
    return extended


def eliminate_common_subexpressions(graph: Graph) -> Graph:
    """Nodes with the same op, inputs and attributes (constants: the same bytes) merged
    into the first of them; a scan whose results a later scan of the same operands also
    computes (and more) runs once, as the later one, at the first one's place."""
    seen: dict[tuple, list[Value]] = {}
    extended = _extended_scans(graph)
    merged: dict[int, list[Value]] = {}   # id(later scan) -> its results, emitted early

    def rule(n: Node, ins, b):
        if ops.communicates(n.op):   # two sends of one value are two messages
            return None
        if id(n) in merged:
            return merged[id(n)]
        if id(n) in extended:
            later = extended[id(n)]
            outs = b.node(later.op, ins, later.attrs, [o.type for o in later.outputs], later.loc)
            merged[id(later)] = outs
            return outs[:len(n.outputs)]
        key = (n.op, tuple(id(v) for v in ins), _attr_key(n.attrs))
        if key in seen:
            return seen[key]
        outs = b.node(n.op, ins, n.attrs, [o.type for o in n.outputs], n.loc)
        seen[key] = outs
        return outs

    return rebuild(graph, rule)


def fold_constants(graph: Graph, max_bytes: int = FOLD_MAX_BYTES) -> Graph:
    """Evaluate nodes whose inputs are all constants with the op's numpy reference.
    A result over ``max_bytes`` is folded only when its constant inputs have no other
    reader and it is no larger than they are, so the folded array replaces them rather
    than sitting beside them (and a broadcast is never expanded into a big constant).
    Repeats until nothing folds (folding one reader can leave a constant with one)."""
    while True:
        folded, graph = _fold_once(graph, max_bytes)
        if not folded:
            return graph


def _fold_once(graph: Graph, max_bytes: int) -> tuple[int, Graph]:
    users = graph.users()
    outputs = {id(v) for v in graph.outputs}
    folded = 0

    def rule(n: Node, ins, b):
        nonlocal folded
        if n.op == "constant" or not n.inputs or ops.communicates(n.op):
            return None
        values = [constant_value(v) for v in ins]
        if any(x is None for x in values):
            return None
        size = sum(o.type.nbytes for o in n.outputs)
        sole_reader = all(len(users.get(v, [])) == 1 and id(v) not in outputs for v in n.inputs)
        replaces = sole_reader and size <= sum(v.type.nbytes for v in n.inputs)
        if size > max_bytes and not replaces:
            return None
        with np.errstate(all="ignore"):
            result = ops.get(n.op).reference(*values, **n.attrs)
        results = result if isinstance(result, (tuple, list)) else (result,)
        folded += 1
        return [b.constant(np.asarray(r).astype(o.dtype.np, copy=False).reshape(o.shape))
                for r, o in zip(results, n.outputs)]

    out = eliminate_dead_code(rebuild(graph, rule))
    return folded, out


def hoist_loop_invariants(graph: Graph) -> Graph:
    """Loop-invariant code motion: a node of a ``scan`` or ``while_loop`` body whose
    operands are all the loop's constants (what the body reads from outside, and
    constants) is computed once before the loop, its result passed in as another
    constant -- a weight transposed for the recurrent product, a mask built from a
    length. (``cond`` branches keep theirs: hoisting would compute what the branch not
    taken needs.) Bodies nested inside are left to their own compile."""
    def rule(n: Node, ins, b):
        if n.op not in ("scan", "while_loop"):
            return None
        fixed = n.attrs["num_carry"] + n.attrs.get("num_xs", 0)   # carries and xs change every step
        bodies = {key: g for key, g in n.attrs.items() if isinstance(g, Graph)}
        plans = {key: _invariants(g, fixed) for key, g in bodies.items()}
        if not any(hoisted for hoisted, _ in plans.values()):
            return None
        outer: list[Value] = []          # the new constant operands, in order
        extra: dict[str, list] = {}      # body key -> its values that become those operands
        for key, g in bodies.items():
            hoisted, needed = plans[key]
            vmap = {v: ins[fixed + j] for j, v in enumerate(g.inputs[fixed:])}
            for node in g.nodes:
                if node.op == "constant" and any(o in needed or any(o in h.inputs for h in hoisted)
                                                 for o in node.outputs):
                    vmap[node.output] = b.constant(node.attrs["value"])
            for node in hoisted:
                outs = b.node(node.op, [vmap[v] for v in node.inputs], node.attrs, [o.type for o in node.outputs],
                              node.loc)
                vmap.update(zip(node.outputs, outs))
            extra[key] = needed
            outer += [vmap[v] for v in needed]
        attrs = dict(n.attrs)
        offsets, total = {}, 0
        for key in bodies:
            offsets[key] = total
            total += len(extra[key])
        for key, g in bodies.items():   # every body takes every new operand (unused where not its own)
            attrs[key] = _with_hoisted(g, plans[key][0], extra, key, offsets)
        return b.node(n.op, list(ins) + outer, attrs, [o.type for o in n.outputs], n.loc)

    return rebuild(graph, rule)


def _invariants(g: Graph, fixed: int) -> tuple[list[Node], list[Value]]:
    """The body's nodes computable before the loop (not constants themselves, nor
    collectives or nested control flow), and those of their results the rest reads."""
    invariant = set(g.inputs[fixed:])
    hoisted = []
    for node in g.nodes:
        if node.op == "constant":
            invariant.update(node.outputs)
        elif node.inputs and all(v in invariant for v in node.inputs) and ops.get(node.op).kind not in (
                "collective", "control", "opaque"):
            hoisted.append(node)
            invariant.update(node.outputs)
    produced = {o for h in hoisted for o in h.outputs}
    kept = [node for node in g.nodes if node not in hoisted]
    needed = list(dict.fromkeys([v for node in kept for v in node.inputs if v in produced]
                                + [v for v in g.outputs if v in produced]))
    return hoisted, needed


def _with_hoisted(g: Graph, hoisted: list[Node], extra: dict, key: str, offsets: dict) -> Graph:
    """``g`` without ``hoisted``, taking the loop's new operands (all bodies' hoisted
    results, ``extra``) after its own inputs; its own ones replace what it computed."""
    b = GraphBuilder(g.name, ops.infer)
    vmap = {v: b.input(v.name, v.type) for v in g.inputs}
    taken = {v.name for v in g.inputs}
    for other, values in extra.items():
        for j, v in enumerate(values):
            name = f"hoisted{offsets[other] + j}"
            while name in taken:
                name += "_"
            taken.add(name)
            new = b.input(name, v.type)
            if other == key:
                vmap[v] = new
    skip = set(map(id, hoisted))
    for node in g.nodes:
        if id(node) in skip:
            continue
        outs = b.node(node.op, [vmap[v] for v in node.inputs], node.attrs, [o.type for o in node.outputs], node.loc)
        vmap.update(zip(node.outputs, outs))
    return b.build([vmap[v] for v in g.outputs])
