"""The graph rewrite engine: named rules, each matching one op, applied to a fixed point.

A rule is a name, the op of the nodes it looks at, and a function

    apply(node, ins, b, single_use) -> list[Value] | None

that returns the values replacing ``node``'s results (built on the GraphBuilder ``b``
from the node's rewritten inputs ``ins``), or None when it does not apply.
``single_use(v)`` says whether a value of the graph being swept has one reader and is
no graph output (a rule may then absorb its producer). ``node`` belongs to that graph;
the producers of ``ins`` are in the graph being built, already rewritten.

``rewrite`` sweeps the nodes in order, trying the rules of each node's op in table
order (the first that applies wins), drops what became dead, and sweeps again until
a sweep changes nothing. Every rule must make progress (its replacement is not
matched again forever); a table that never settles is an error naming its rules.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from ..ir.graph import Graph, GraphBuilder, Node, Value
from .simplify import eliminate_dead_code, rebuild

MAX_SWEEPS = 100


@dataclass(frozen=True)
class Rule:
    name: str
    op: str
    apply: Callable[[Node, list, GraphBuilder, Callable[[Value], bool]], "list[Value] | None"]


def rewrite(graph: Graph, rules: Sequence[Rule], hits: Counter | None = None) -> Graph:
    """``graph`` with ``rules`` applied until none applies; ``hits`` (if given) counts
    the replacements made per rule name."""
    by_op: dict[str, list[Rule]] = {}
    for r in rules:
        by_op.setdefault(r.op, []).append(r)
    for _ in range(MAX_SWEEPS):
        users = graph.users()
        outputs = {id(v) for v in graph.outputs}
        swept: Counter = Counter()

        def single_use(v: Value) -> bool:
            return len(users.get(v, [])) == 1 and id(v) not in outputs

        def rule(n: Node, ins, b):
            for r in by_op.get(n.op, ()):
                out = r.apply(n, ins, b, single_use)
                if out is not None:
                    swept[r.name] += 1
                    return out
            return None

        graph = eliminate_dead_code(rebuild(graph, rule))
        if hits is not None:
            hits.update(swept)
        if not swept:
            return graph
    raise RuntimeError(f"graph rewrites did not settle after {MAX_SWEEPS} sweeps; still applying: "
                       f"{', '.join(sorted(swept))}")
