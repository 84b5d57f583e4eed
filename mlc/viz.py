"""Draw a fused graph as a Graphviz picture, to see what fusion did.

``to_dot(fused)`` gives DOT text, top to bottom:

* each op is a box labelled with its op name (and, small, a conv's or pool's
  kernel_shape / strides, and its constant operands, e.g. ``w: f32[64,3,7,7]``;
  constants are not drawn as nodes of their own, a resnet has hundreds);
* each kernel of more than one op is a filled cluster labelled with the kernel
  name, so one sees at a glance which ops became one kernel;
* graph inputs and outputs are ellipses (name and type);
* every edge is labelled with the tensor's type and size. An edge inside a kernel
  is dashed and grey: that value never leaves the kernel (it is inlined into its
  reader, or at most a kernel-private temporary). An edge between kernels is
  solid: a buffer written by one kernel and read back by another.

``write_graph(fused, "model.svg")`` renders it with Graphviz's ``dot`` when that is
installed, and otherwise writes the DOT text next to it (``model.dot``).
"""
from __future__ import annotations

import html
import os
import shlex
import shutil
import subprocess

from . import ops
from .ir.graph import Node, Value
from .passes.fuse import FusedGraph

# Light fill colours for kernel clusters, cycled so neighbouring kernels differ.
_FILLS = ("#e8f0fe", "#fef7e0", "#e6f4ea", "#fce8e6", "#f3e8fd", "#e0f7fa")

_RENDER_TIMEOUT_S = 120


def to_dot(fused: FusedGraph, title: str | None = None) -> str:
    """Graphviz DOT text of ``fused``: ops as boxes, multi-op kernels as clusters,
    dashed edges for values that stay inside a kernel. Deterministic: ids are
    ``in0.., n0.., out0..`` in graph order."""
    graph = fused.graph
    if title is None:
        title = f"{graph.name}: {len(fused.groups)} kernels"

    # Stable ids: ops numbered in graph order (constants are not drawn).
    op_nodes = [n for n in graph.nodes if n.op != "constant"]
    node_id = {id(n): f"n{k}" for k, n in enumerate(op_nodes)}
    input_id = {id(v): f"in{k}" for k, v in enumerate(graph.inputs)}
    kernel_of = {id(n): k for k, group in enumerate(fused.groups) for n in group}

    lines = [
        "digraph G {",
        "  rankdir=TB;",
        f"  label={_quote(title)}; labelloc=t; fontname=\"Helvetica\";",
        "  node [fontname=\"Helvetica\", fontsize=11];",
        "  edge [fontname=\"Helvetica\", fontsize=9];",
    ]

    for k, v in enumerate(graph.inputs):
        label = f"{v.name or f'input {k}'}\n{v.type}"
        lines.append(f"  in{k} [shape=ellipse, style=filled, fillcolor=\"#d9ead3\", label={_quote(label)}];")

    # Ops, kernel by kernel: a kernel of several ops is a cluster around them.
    names = fused.kernel_names()
    drawn: set[int] = set()
    for k, group in enumerate(fused.groups):
        if len(group) > 1:
            lines.append(f"  subgraph cluster_{k} {{")
            lines.append(f"    label={_quote(names[k])}; style=filled; color=grey60; "
                         f"fillcolor=\"{_FILLS[k % len(_FILLS)]}\";")
            lines += [f"    {_op_decl(n, node_id[id(n)])}" for n in group]
            lines.append("  }")
        else:
            lines += [f"  {_op_decl(n, node_id[id(n)])}" for n in group]
        drawn.update(id(n) for n in group)
    # An op in no group (not expected from fuse/unfused) is still drawn.
    lines += [f"  {_op_decl(n, node_id[id(n)])}" for n in op_nodes if id(n) not in drawn]

    for k, v in enumerate(graph.outputs):
        label = f"output {k}\n{v.type}"
        if v.producer is not None and v.producer.op == "constant":
            label += "\n(constant)"
        lines.append(f"  out{k} [shape=ellipse, style=filled, fillcolor=\"#f4cccc\", label={_quote(label)}];")

    def source(v: Value) -> str | None:
        """The drawn node a value comes from; None for a constant (not drawn)."""
        if v.producer is None:
            return input_id.get(id(v))
        return node_id.get(id(v.producer))

    # Edges: one per (value, reader), so add(x, x) draws one arrow.
    for n in op_nodes:
        seen: set[int] = set()
        for v in n.inputs:
            src = source(v)
            if src is None or id(v) in seen:
                continue
            seen.add(id(v))
            internal = (v.producer is not None and id(v.producer) in kernel_of
                        and kernel_of.get(id(v.producer)) == kernel_of.get(id(n)))
            lines.append(f"  {src} -> {node_id[id(n)]} [{_edge_attrs(v, internal)}];")
    for k, v in enumerate(graph.outputs):
        src = source(v)
        if src is not None:
            lines.append(f"  {src} -> out{k} [{_edge_attrs(v, False)}];")

    lines.append("}")
    return "\n".join(lines) + "\n"


def write_graph(fused: FusedGraph, path: str, title: str | None = None) -> tuple[str, str]:
    """Write the picture of ``fused`` to ``path`` (``.dot``, ``.svg`` or ``.png``).

    ``.svg`` / ``.png`` need Graphviz's ``dot`` on PATH; without it the DOT text is
    written to ``path`` with the suffix ``.dot`` instead. Returns (the path written,
    a one-line message for the user)."""
    path = os.fspath(path)
    stem, suffix = os.path.splitext(path)
    suffix = suffix.lower()
    if suffix not in (".dot", ".svg", ".png"):
        raise ValueError(f"cannot write a graph picture to {path!r}: "
                         f"the file name must end with .dot, .svg or .png")
    text = to_dot(fused, title)
    kernels = f"{len(fused.groups)} kernels"

    if suffix == ".dot":
        _write_text(path, text)
        return path, f"wrote the graph ({kernels}) as Graphviz DOT to {path}"

    fmt = suffix[1:]
    dot = shutil.which("dot")
    if dot is None:
        fallback = stem + ".dot"
        _write_text(fallback, text)
        hint = f"dot -T{fmt} {shlex.quote(fallback)} -o {shlex.quote(path)}"
        return fallback, (f"Graphviz's `dot` was not found on PATH, so wrote the graph ({kernels}) "
                          f"as DOT text to {fallback}; render it with: {hint}")

    try:
        result = subprocess.run([dot, f"-T{fmt}", "-o", path], input=text.encode("utf-8"),
                                capture_output=True, timeout=_RENDER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"Graphviz `dot` did not finish rendering {path} "
                           f"within {_RENDER_TIMEOUT_S} s") from None
    if result.returncode != 0:
        err = result.stderr.decode("utf-8", "replace").strip() or "(no error output)"
        raise RuntimeError(f"Graphviz `dot -T{fmt}` failed (exit status {result.returncode}) "
                           f"rendering {path}: {err}")
    return path, f"wrote the graph picture ({kernels}) to {path}"


# ----------------------------------------------------------------------------- helpers

def _quote(s: str) -> str:
    """A DOT double-quoted string. Backslashes are doubled first (in a label, a lone
    backslash starts an escape such as ``\\N``), then quotes escaped; a newline
    becomes DOT's centred line break ``\\n``."""
    s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


def _op_decl(n: Node, nid: str) -> str:
    """The declaration of an op's box. An HTML-like label, so the details can be
    set small under the op name; its text is HTML-escaped."""
    rows = [f"<B>{html.escape(n.op)}</B>"]
    details = []
    for attr, short in (("kernel_shape", "kernel"), ("strides", "stride")):
        if n.attrs.get(attr) is not None:
            details.append(f"{short} {_dims(n.attrs[attr])}")
    if details:
        rows.append(_small("  ".join(details)))
    for name, v in zip(_operand_names(n), n.inputs):
        if v.producer is not None and v.producer.op == "constant":
            text = f"{name}: {v.type}"
            value = v.producer.attrs.get("value")
            if value is not None and getattr(value, "size", 0) == 1:
                text += f" = {value.reshape(()).item()!r}"   # a scalar constant: show it
            rows.append(_small(text))
    return f"{nid} [shape=box, style=\"rounded,filled\", fillcolor=white, label=<{'<BR/>'.join(rows)}>];"


def _small(text: str) -> str:
    return f'<FONT POINT-SIZE="9">{html.escape(text)}</FONT>'


def _operand_names(n: Node) -> list[str]:
    """The op's parameter names for its inputs (``x``, ``w``, ``xs[2]``), from the
    op registry; ``in0``, ``in1``... for an op it does not know."""
    try:
        params = ops.get(n.op).params
    except KeyError:
        params = ()
    names = []
    for k in range(len(n.inputs)):
        if params and params[-1].startswith("*") and k >= len(params) - 1:
            names.append(f"{params[-1][1:]}[{k - len(params) + 1}]")
        elif k < len(params):
            names.append(params[k])
        else:
            names.append(f"in{k}")
    return names


def _dims(value) -> str:
    """``(3, 3)`` -> ``3x3``."""
    if isinstance(value, (tuple, list)):
        return "x".join(map(str, value))
    return str(value)


def _edge_attrs(v: Value, internal: bool) -> str:
    label = _quote(f"{v.type} {_size(v.type.nbytes)}")
    if internal:
        # stays inside the kernel: never written to memory
        return f"label={label}, style=dashed, color=grey60, fontcolor=grey45"
    return f"label={label}"


def _size(nbytes: int) -> str:
    """``802816`` -> ``784 KiB``; one decimal at most."""
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            break
        size /= 1024
    text = f"{size:.1f}".removesuffix(".0")
    return f"{text} {unit}"


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


__all__ = ["to_dot", "write_graph"]
