"""The generated pages of the documentation site, built from the code at every build.

An MkDocs hook (``hooks:`` in mkdocs.yml): ``on_config`` adds the optional pages and the
tutorials to the navigation, ``on_files`` adds the generated pages, none of which is
written by hand or kept in the repository:

- ``reference/api/<module>.md``: every public name of mlc, mlc.nn, mlc.optim, mlc.dist,
  mlc.models, mlc.interop, mlc.data and mlc.checkpoint, rendered by mkdocstrings from the
  docstrings (the ``mlc.<op>`` functions from their op records);
- ``reference/ops.md``: one table over the op registry (signature, attributes, type rule,
  numpy reference, gradient, the ONNX ops imported onto it);
- ``reference/ir.md``: the text syntax of the graph, tensor and loop levels with real IR
  printed by mlc, the passes of each level from the pass manager, the layer table;
- ``reference/cli.md``: the ``mlc`` command from its argparse parser;
- ``reference/c_api.md``: the C API from ``mlc/runtime/c/mlc_model.h``;
- ``tutorials/<name>.md``: each tutorial's source, its docstring and comments as text.

``python docs/gen_ref.py OUT_DIR`` writes the same pages into a folder (to read them
without building the site).
"""
from __future__ import annotations

import argparse
import ast
from html import unescape as html_unescape
import contextlib
import importlib
import inspect
import io
import os
import re
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")

# Pages that other work adds to docs/: in the navigation when they exist.
OPTIONAL_GUIDES = [("Serving", "serving.md"), ("Interop: MLIR", "mlir.md"), ("Interop: TVM Relax", "relax.md")]
API_MODULES = ["mlc", "mlc.nn", "mlc.optim", "mlc.dist", "mlc.models", "mlc.interop", "mlc.data", "mlc.checkpoint"]


# ----------------------------------------------------------------------------- helpers

def _md_cell(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _code(s) -> str:
    s = str(s).replace("|", "\\|")
    return f"`{s}`" if "`" not in s else f"``{s}``"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")


def module_doc(mod) -> str:
    """A module's docstring as Markdown: mlc's module docstrings start their text at the
    margin and indent examples by four (a code block), so the indentation is kept; a
    reST ``::`` before an example becomes ``:``."""
    doc = (mod.__doc__ or "").strip("\n")
    return re.sub(r"::\n", ":\n", doc)


def public_names(modname: str) -> list[str]:
    """A module's public names: its ``__all__``, else what it defines (not what it imports)."""
    mod = importlib.import_module(modname)
    if hasattr(mod, "__all__"):
        return list(mod.__all__)
    names = []
    for n, v in vars(mod).items():
        if n.startswith("_") or inspect.ismodule(v):
            continue
        if getattr(v, "__module__", modname) != modname and (inspect.isclass(v) or inspect.isfunction(v)):
            continue   # imported from elsewhere (numpy, typing, ...)
        if not (inspect.isclass(v) or inspect.isfunction(v) or n.isupper()):
            continue
        names.append(n)
    return names


def interop_modules() -> list[str]:
    """mlc.interop's modules (each one public name: its functions load on first use)."""
    d = os.path.join(ROOT, "mlc", "interop")
    return sorted(f"mlc.interop.{f[:-3]}" for f in os.listdir(d) if f.endswith(".py") and not f.startswith("_"))


# ----------------------------------------------------------------------------- API reference

_GRIFFE = {}


def _static_kind(modname: str, name: str) -> str | None:
    """What griffe (mkdocstrings' reader, from the source without importing) finds at
    ``modname.name``: "function", "class", "attribute", or None when it is made at run time."""
    import griffe
    top = modname.split(".")[0]
    if top not in _GRIFFE:
        _GRIFFE[top] = griffe.load(top, resolve_aliases=False)
    try:
        obj = _GRIFFE[top][f"{modname}.{name}"[len(top) + 1:]]
        return obj.kind.value
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None

def api_page(modname: str) -> str:
    from mlc import ops
    mod = importlib.import_module(modname)
    doc = module_doc(mod)
    out = [f"# `{modname}`", "", doc, ""]
    opts = "    options:\n      show_root_heading: true\n      show_root_full_path: true\n      heading_level: 2\n"
    if modname == "mlc.interop":
        out += ["Each module of `mlc.interop` below; what it needs beyond mlc is imported when it is first used.", ""]
        for m in interop_modules():
            out += [f"::: {m}", opts.replace("heading_level: 2", "heading_level: 2\n      show_submodules: false"), ""]
        return "\n".join(out)
    names = public_names(modname)
    op_names = [n for n in names if modname == "mlc" and n in ops.REGISTRY and callable(getattr(mod, n))
                and getattr(getattr(mod, n), "__module__", "") == "mlc"]
    rest = [n for n in names if n not in op_names]
    if op_names:
        out += [f"The {len(op_names)} op functions (`mlc.add`, `mlc.conv`, ...) are listed after the other "
                "names, each with its signature and docstring from its op record; [the op table](../ops.md) "
                "shows all of them side by side.", ""]
    out += ["## Contents", ""]
    out += [", ".join(f"[`{n}`](#{modname}.{n})" for n in rest), ""]
    for n in rest:
        v = getattr(mod, n)
        if inspect.ismodule(v):
            page = v.__name__.split(".")[-1]
            if v.__name__ in API_MODULES:
                out += [f'## `{modname}.{n}` {{ #{modname}.{n} }}', "",
                        f"The module [`{v.__name__}`]({page}.md): {(inspect.getdoc(v) or '').splitlines()[0]}", ""]
            else:
                out += [f"::: {v.__name__}", opts, ""]
        elif not (inspect.isclass(v) or inspect.isfunction(v) or inspect.ismethod(v)):
            # a constant or an instance (mlc.float32): its value
            out += [f'## `{modname}.{n}` {{ #{modname}.{n} }}', "", f"`{modname}.{n} = {v!r}`", ""]
            d = inspect.getdoc(type(v)) if not isinstance(v, (int, float, str)) else None
            if d:
                out += [f"An instance of `{type(v).__module__}.{type(v).__qualname__}`: {d.splitlines()[0]}", ""]
        elif _static_kind(modname, n) in ("function", "class"):
            out += [f"::: {modname}.{n}", opts, ""]
        else:   # made at import time (mlc.nn.relu is the op function): its signature and docstring
            try:
                sig = str(inspect.signature(v))
            except (TypeError, ValueError):
                sig = "(...)"
            out += [f'## `{modname}.{n}` {{ #{modname}.{n} }}', "", "```python", f"{modname}.{n}{sig}", "```", "",
                    inspect.getdoc(v) or "", ""]
    if op_names:
        out += ["## Ops", ""]
        for n in sorted(op_names):
            fn = getattr(mod, n)
            out += [f'### `mlc.{n}` {{ #mlc.{n} }}', "", "```python", f"mlc.{n}{inspect.signature(fn)}", "```", "",
                    textwrap.indent(inspect.getdoc(fn) or "", ""), ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- op reference

def _onnx_converters():
    """ONNX op type -> the mlc ops its converter emits, read from the converters' source:
    the first argument of every ``op(...)`` call (a string, a table looked up by the node's
    op type, a conditional, or a variable assigned one of these), calls of
    ``scan``/``while_loop``/``cond``, and the same in the module's helper functions they call.
    Branches under ``if n.op_type == "X"`` (or a variable holding the op type) count only for
    X. Static: what a helper emits counts for every op type that calls it."""
    from mlc import ops
    from mlc.frontend import onnx as onnx_frontend
    from mlc.frontend import onnx_control
    known = set(ops.REGISTRY)
    result: dict[str, set] = {}
    for module in (onnx_frontend, onnx_control):
        tree = ast.parse(inspect.getsource(module))
        funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        tables = {}
        for n in tree.body:
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Dict) and len(n.targets) == 1 \
                    and isinstance(n.targets[0], ast.Name):
                try:
                    tables[n.targets[0].id] = ast.literal_eval(n.value)
                except ValueError:
                    pass

        def is_op_type(e, kind_vars) -> bool:
            return (isinstance(e, ast.Attribute) and e.attr == "op_type") or \
                (isinstance(e, ast.Name) and e.id in kind_vars)

        def test_value(t, onnx_op, kind_vars):
            """True/False when ``t`` compares the op type with constants, else None."""
            if isinstance(t, ast.Compare) and len(t.ops) == 1 and is_op_type(t.left, kind_vars):
                try:
                    c = ast.literal_eval(t.comparators[0])
                except ValueError:
                    return None
                o = t.ops[0]
                if isinstance(o, ast.Eq):
                    return onnx_op == c
                if isinstance(o, ast.NotEq):
                    return onnx_op != c
                if isinstance(o, ast.In):
                    return onnx_op in c
                if isinstance(o, ast.NotIn):
                    return onnx_op not in c
            return None

        def values(e, env, onnx_op, kind_vars, depth=0) -> set:
            """The strings ``e`` may hold (op names only)."""
            if depth > 8:
                return set()
            if isinstance(e, ast.Constant) and isinstance(e.value, str):
                return {e.value} & known
            if isinstance(e, ast.IfExp):
                v = test_value(e.test, onnx_op, kind_vars)
                parts = [e.body] if v is True else [e.orelse] if v is False else [e.body, e.orelse]
                return set().union(*(values(p, env, onnx_op, kind_vars, depth + 1) for p in parts))
            if isinstance(e, ast.Subscript):
                table = None
                if isinstance(e.value, ast.Dict):
                    try:
                        table = ast.literal_eval(e.value)
                    except ValueError:
                        table = None
                elif isinstance(e.value, ast.Name) and e.value.id in tables:
                    table = tables[e.value.id]
                if isinstance(table, dict):
                    keyed = is_op_type(e.slice, kind_vars)
                    vals = [table[onnx_op]] if keyed and onnx_op in table else list(table.values())
                    out = set()
                    for v in vals:
                        v = v[0] if isinstance(v, tuple) and v else v
                        if isinstance(v, str) and v in known:
                            out.add(v)
                    return out
            if isinstance(e, ast.Name) and e.id in env:
                return set().union(*(values(v, env, onnx_op, kind_vars, depth + 1) for v in env[e.id]))
            return set()

        memo: dict[tuple, set] = {}

        def emitted(fn_name: str, onnx_op: str, seen: frozenset) -> set:
            key = (fn_name, onnx_op)
            if key in memo:
                return memo[key]
            fn_node = funcs[fn_name]
            env: dict[str, list] = {}
            kind_vars: set = set()
            for a in ast.walk(fn_node):   # what each local name is assigned (a tuple unpack: its first part)
                if isinstance(a, ast.Assign) and len(a.targets) == 1:
                    t = a.targets[0]
                    if isinstance(t, ast.Name):
                        if is_op_type(a.value, set()):
                            kind_vars.add(t.id)
                        env.setdefault(t.id, []).append(a.value)
                    elif isinstance(t, ast.Tuple) and t.elts and isinstance(t.elts[0], ast.Name):
                        env.setdefault(t.elts[0].id, []).append(a.value)
            found = set()

            def visit(node):
                if isinstance(node, ast.If):
                    v = test_value(node.test, onnx_op, kind_vars)
                    if v is not True:
                        for s in node.orelse:
                            visit(s)
                    if v is not False:
                        for s in node.body:
                            visit(s)
                    if v is None:
                        visit(node.test)
                    return
                if isinstance(node, ast.IfExp):
                    v = test_value(node.test, onnx_op, kind_vars)
                    for part in ([node.body] if v is True else [node.orelse] if v is False
                                 else [node.test, node.body, node.orelse]):
                        visit(part)
                    return
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                    f = node.func.id
                    if f == "op" and node.args:
                        found.update(values(node.args[0], env, onnx_op, kind_vars))
                    elif f in ("scan", "while_loop", "cond"):
                        found.add(f)
                    elif f in funcs and f not in seen:
                        found.update(emitted(f, onnx_op, seen | {f}))
                for child in ast.iter_child_nodes(node):
                    visit(child)

            for s in fn_node.body:
                visit(s)
            memo[key] = found
            return found

        for n in tree.body:
            if not isinstance(n, ast.FunctionDef):
                continue
            for d in n.decorator_list:
                if isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id == "converter":
                    types = []
                    for a in d.args:
                        if isinstance(a, ast.Constant):
                            types.append(a.value)
                        elif isinstance(a, ast.Starred) and isinstance(a.value, ast.Name) and a.value.id in tables:
                            types += list(tables[a.value.id])
                    for t in types:
                        result[t] = emitted(n.name, t, frozenset({n.name}))
    for t in onnx_frontend.CONVERTERS:   # registered some other way: what it emits is not read
        result.setdefault(t, set())
    return result


def onnx_map() -> dict[str, list[str]]:
    """mlc op -> the ONNX op types whose converters emit it."""
    by_op: dict[str, list[str]] = {}
    for t, emitted in sorted(_onnx_converters().items()):
        for o in emitted:
            by_op.setdefault(o, []).append(t)
    return by_op


def _reference_name(ref) -> str:
    mod = getattr(ref, "__module__", None) or ""
    name = getattr(ref, "__qualname__", None) or getattr(ref, "__name__", None) or type(ref).__name__
    if isinstance(ref, __import__("numpy").ufunc) or mod == "numpy" or mod.startswith("numpy."):
        return f"numpy.{getattr(ref, '__name__', name)}"
    return f"{mod}.{name}" if mod else name


def type_rule(op) -> str:
    """A summary of the op's type rule from its record: the facts the passes read, and the
    rule run on small float32 inputs (for the ops whose defaults make a valid call)."""
    import numpy as np
    from mlc.ir.types import TensorType
    facts = []
    if op.elementwise:
        facts.append("elementwise under numpy broadcasting")
    if op.view:
        facts.append("a view of its input")
    if op.identity_when_same_type:
        facts.append("a no-op when the result type equals the input's")
    if op.in_place:
        facts.append("may write over its input")
    example = ""
    if not op.variadic and op.kind not in ("control", "collective"):
        for shapes in ([(2, 3)] * len(op.params), [(2, 3), (3, 4)] + [(2, 3)] * (len(op.params) - 2)):
            try:
                types = [TensorType.of(np.zeros(s, np.float32)) for s in shapes[:len(op.params)]]
                outs = op.output_types(types, op.canonical_attrs(types, {}))
            except Exception:   # noqa: BLE001 - attributes without defaults, or other shapes needed
                continue
            example = f"{', '.join(map(str, types))} → {', '.join(map(str, outs))}"
            break
    s = "; ".join(facts)
    if example:
        s = f"{s}; e.g. {example}" if s else f"e.g. {example}"
    return s or "see the description"


def ops_page() -> str:
    from mlc import ops
    from mlc.frontend.api import signature_of
    onnx = onnx_map()
    rows = []
    for name in sorted(ops.REGISTRY):
        o = ops.REGISTRY[name]
        sig = f"{name}{signature_of(o)}"
        attrs = ", ".join(f"{k}={v!r}" for k, v in o.attrs.items()) or "—"
        cell = _code(sig) if name == "constant" else f"[{_code(sig)}](api/mlc.md#mlc.{name})"
        rows.append(f"| <span id=\"op-{name}\"></span>{cell} | {o.kind} | {_md_cell(attrs)} | "
                    f"{_md_cell(type_rule(o))} | {_code(_reference_name(o.reference))} | "
                    f"{'yes' if o.vjp is not None else 'no'} | "
                    f"{', '.join(onnx.get(name, [])) or '—'} | {_md_cell(o.doc)} |")
    n_grad = sum(o.vjp is not None for o in ops.REGISTRY.values())
    from mlc.frontend.onnx import CONVERTERS
    return "\n".join([
        "---", "hide:", "  - navigation", "  - toc", "---", "",   # the table takes the page's width
        "# Op reference", "",
        f"All {len(ops.REGISTRY)} ops of the registry (`mlc/ops/`), {n_grad} with a gradient rule, and the "
        f"{len(CONVERTERS)} ONNX op types the importer converts. This page is generated from the op records at "
        "every build (`docs/gen_ref.py`): the signature is the one `help(mlc.<op>)` shows, the type rule is "
        "run on small float32 inputs where the attributes' defaults allow, and the ONNX column lists the op "
        "types whose converters (`mlc/frontend/onnx.py`, `onnx_control.py`) emit the op, read from the "
        "converters' source (an over-approximation where a converter's code after an early return is shared "
        "by several op types); ops ONNX defines as functions import as their function body and are not listed.",
        "", "| op | kind | attributes | type rule | numpy reference | gradient | ONNX | description |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows, ""])


# ----------------------------------------------------------------------------- IR reference

def _ir_examples():
    import numpy as np
    import mlc
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 128)).astype(np.float32)
    w = rng.standard_normal((128, 64)).astype(np.float32)
    b = np.arange(64, dtype=np.float32)

    def mlp(x, w, b):
        return mlc.softmax(mlc.relu(x @ w + b), axis=-1)

    def cumulative(xs):
        return mlc.scan(lambda c, x: (c + x, c * 2.0), np.zeros(4, np.float32), xs)

    exe = mlc.compile(mlp, x, w, b)
    return {
        "graph": str(mlc.trace(mlp, x, w, b)),
        "graph_constant": str(mlc.trace(lambda x: x * np.array([1.0, 2.0, 3.0, 4.0], np.float32) + 1.0,
                                        np.ones((2, 4), np.float32))),
        "graph_scan": str(mlc.trace(cumulative, np.ones((3, 4), np.float32))),
        "fused": exe.ir("fused"),
        "tensor": exe.ir("tensor"),
        "loop": exe.ir("loop"),
    }


def _constructs(text: str, table) -> list[str]:
    rows = []
    lines = text.splitlines()
    for name, pattern, what in table:
        hit = next((ln.strip() for ln in lines if re.search(pattern, ln)), None)
        rows.append(f"| {name} | {what} | {_code(hit) if hit else '(not in this example)'} |")
    return rows


def _design_section(start: str) -> str:
    """The part of docs/design.md from the line that starts with ``start`` to the next heading."""
    text = open(os.path.join(DOCS, "design.md")).read()
    i = text.index(start)
    j = text.find("\n## ", i)
    return text[i:j if j >= 0 else len(text)].strip()


def layer_diagram() -> str:
    """The layers of pyproject.toml's import-linter contract (what ``lint-imports`` enforces),
    top to bottom: a module imports only from its own row and the rows below."""
    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    m = re.search(r'type = "layers"\s*layers = \[(.*?)\]', text, re.S)
    rows = re.findall(r'"([^"]+)"', m.group(1)) if m else []
    if not rows:
        return ""
    rows = [r.replace("mlc.", "") for r in rows]
    width = max(len(r) for r in rows) + 2
    out = []
    for i, r in enumerate(rows):
        out += ["+" + "-" * width + "+", "|" + r.center(width) + "|", "+" + "-" * width + "+"]
        if i < len(rows) - 1:
            out.append(" " * (width // 2) + "|")
            out.append(" " * (width // 2) + "v")
    return "\n".join(out)


def ir_page() -> str:
    from mlc.ir import graph, loop, tensor
    from mlc.passes import manager
    ex = _ir_examples()
    out = ["# IR reference", "",
           "mlc compiles through three levels, each printed as text, parsed back to the same text "
           "(`parse`) and checked (`verify`). Every example on this page is printed by mlc at build time "
           "from the program below (`docs/gen_ref.py`).", "",
           "```python",
           "def mlp(x, w, b):                      # x: f32[64,128], w: f32[128,64], b: f32[64]",
           "    return mlc.softmax(mlc.relu(x @ w + b), axis=-1)",
           "",
           "print(mlc.trace(mlp, x, w, b))         # graph",
           "exe = mlc.compile(mlp, x, w, b)",
           "print(exe.ir(\"fused\"), exe.ir(\"tensor\"), exe.ir(\"loop\"))",
           "```", "",
           "## The architecture", "",
           "The layers, from pyproject.toml's import-linter contract (`lint-imports` checks it in `make test`; "
           "`:` separates modules of a row that may import each other, `|` those that may not):", "",
           "```text", layer_diagram(), "```", "",
           "From [the design](../design.md), §2:", "",
           _design_section("Data flows one way"), "",
           "## Graph level (`mlc.ir.graph`)", "", module_doc(graph), "",
           "```", ex["graph"], "```", "",
           "A constant (small constants print as `dense<...>`):", "", "```", ex["graph_constant"], "```", "",
           "A control-flow node with its body printed nested (`mlc.scan`):", "", "```", ex["graph_scan"], "```", "",
           "After fusion (`exe.ir(\"fused\")`) the graph groups its nodes into kernels:", "",
           "```", ex["fused"], "```", "",
           "| construct | meaning | example |", "| --- | --- | --- |"]
    g_all = "\n".join([ex["graph"], ex["graph_constant"], ex["graph_scan"], ex["fused"]])
    out += _constructs(g_all, [
        ("graph header", r"^graph @", "name, typed inputs"),
        ("node", r"^\s+%\d+ = \w+\(", "SSA result = op(operands) : type"),
        ("attributes", r"\{\w+=", "`{name=value, ...}` after the operands"),
        ("constant", r"dense<", "a constant node's value"),
        ("nested body", r"body=graph", "a graph-valued attribute of scan, while_loop, cond"),
        ("kernel group", r"^\s+kernel @", "the nodes fused into one kernel"),
        ("return", r"^\s+return ", "the graph's results"),
    ])
    out += ["", "## Tensor level (`mlc.ir.tensor`)", "", module_doc(tensor), "",
            "```", ex["tensor"], "```", "", "| construct | meaning | example |", "| --- | --- | --- |"]
    out += _constructs(ex["tensor"], [
        ("kernel header", r"kernel @", "kind, name, placeholder inputs -> outputs"),
        ("compute stage", r"^\s+\w+\[[^\]]*\] = (?!sum\[|max\[|min\[|prod\[)", "every element by a scalar expression"),
        ("reduction", r"= (sum|max|min|prod)\[", "a reduce over extra axes (`sum[k < n]`)"),
        ("temporary", r"\] : f\d+\[", "an intermediate stage with its type"),
        ("scalar constant", r"^\s+\w+ = [-\d.e]+ ?: ", "a named scalar"),
    ])
    out += ["", "## Loop level (`mlc.ir.loop`)", "", module_doc(loop), "",
            "```", ex["loop"], "```", "", "| construct | meaning | example |", "| --- | --- | --- |"]
    out += _constructs(ex["loop"], [
        ("func header", r"^func @", "buffers: inputs, outputs, scratch"),
        ("buffer roles", r"// outputs", "which params are outputs, scratch, in place"),
        ("serial loop", r"^\s+for \w+ in", "`for i in [lo, hi)`"),
        ("parallel loop", r"^\s+parallel \w+ in", "iterations over libgomp threads"),
        ("vector loop", r"^\s+vector \w+ in", "the body as LLVM vector code"),
        ("unrolled loop", r"^\s+unroll \w+ in", "unrolled by codegen"),
        ("alloc", r"^\s+alloc ", "a local buffer for the rest of its block"),
        ("store", r"^\s+\w+\[[^\]]*\] = ", "write one element"),
        ("condition", r"^\s+if ", "`if cond { } else { }`"),
        ("runtime call", r"^\s+call ", "a call into the runtime (JSON descriptor)"),
    ])
    out += ["", "## Passes", "",
            "From the pass manager's registry (`mlc/passes/manager.py`). Every pass is timed "
            "(`mlc compile --time-passes`), dumped (`--dump-ir DIR`), verified under `MLC_VERIFY=1` and can "
            "be switched off by name (`--disable-pass NAME`) unless code generation needs it.", "",
            module_doc(manager).split("\n\n", 1)[-1], "",
            "| pass | level | what it does | can be disabled | optimization levels |",
            "| --- | --- | --- | --- | --- |"]
    for p in manager.ALL_PASSES.values():
        levels = [str(k) for k, v in manager.PIPELINES.items() if p.name in v] if p.level == "graph" \
            else ["all"]
        out.append(f"| `{p.name}` | {p.level} | {_md_cell(p.doc)} | {'no' if p.required else 'yes'} | "
                   f"{', '.join('-O' + x if x != 'all' else x for x in levels) or 'none'} |")
    out += ["", "The graph pipeline of each level, in order:", ""]
    for k, names in manager.PIPELINES.items():
        out.append(f"- `-O{k}`: {', '.join(f'`{n}`' for n in names) or 'no graph pass (one kernel per op)'}"
                   + (" then fusion" if k >= manager.FUSION_LEVEL else ""))
    out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- CLI reference

def cli_parser():
    """The ``mlc`` command's ArgumentParser, as ``mlc.cli.main`` builds it (stopped before it parses)."""
    import argparse as ap
    from mlc import cli

    class Built(Exception):
        pass

    original = ap.ArgumentParser.parse_args

    def capture(self, *a, **k):
        raise Built(self)
    ap.ArgumentParser.parse_args = capture
    try:
        cli.main([])
    except Built as e:
        return e.args[0]
    finally:
        ap.ArgumentParser.parse_args = original
    raise RuntimeError("mlc.cli.main did not build a parser")


def cli_page() -> str:
    import argparse as ap
    p = cli_parser()
    out = ["# Command line: `mlc`", "",
           "Generated from the command's argparse definitions (`mlc/cli.py`) at every build.", "",
           p.description or "", "", "```", p.format_usage().strip(), "```", ""]
    sub = next(a for a in p._actions if isinstance(a, ap._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    out += ["| command | what it does |", "| --- | --- |"]
    out += [f"| [`mlc {n}`](#mlc-{n}) | {_md_cell(helps.get(n, ''))} |" for n in sub.choices]
    out.append("")
    for name, sp in sub.choices.items():
        out += [f"## `mlc {name}` {{ #mlc-{name} }}", "", helps.get(name, "") or "", "",
                "```", sp.format_usage().strip(), "```", "",
                "| argument | default | description |", "| --- | --- | --- |"]
        for a in sp._actions:
            if isinstance(a, ap._HelpAction):
                continue
            flag = ", ".join(a.option_strings) if a.option_strings else a.metavar or a.dest
            if a.option_strings and a.nargs != 0:
                flag += f" {a.metavar or a.dest.upper()}"
            if a.choices:
                flag += f" {{{','.join(map(str, a.choices))}}}"
            default = "" if a.default in (None, ap.SUPPRESS, False) or a.required else repr(a.default)
            if a.dest == "api_key":
                default = "$MLC_SERVE_API_KEY"   # read from the environment at build time: never printed
            out.append(f"| {_code(flag)} | {_md_cell(default)} | {_md_cell(a.help or '')} |")
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- C API reference

def c_api_page() -> str:
    path = os.path.join(ROOT, "mlc", "runtime", "c", "mlc_model.h")
    src = open(path).read()
    head = re.match(r"/\*(.*?)\*/", src, re.S)
    intro = "\n".join(ln.strip()[2:] if ln.strip().startswith("* ") else ln.strip().lstrip("*")
                      for ln in head.group(1).splitlines()).strip() if head else ""
    # the example in the header's comment is indented by four: a code block
    body = src[head.end():] if head else src
    out = ["# C API: `mlc_model.h`", "",
           "Generated from `mlc/runtime/c/mlc_model.h` at every build: every exported model library "
           "(`mlc compile MODEL -o model.so`, [Deploying from C](../deploy.md)) has exactly these "
           "functions.", "", _header_comment_md(intro), ""]
    # types
    out += ["## Types", ""]
    for m in re.finditer(r"(?:/\*((?:(?!\*/).)*)\*/\s*)?(typedef\s+(?:enum|struct)\s+\w+\s*\{.*?\}\s*\w+;)", body, re.S):
        comment, decl = m.group(1), m.group(2)
        name = re.search(r"\}\s*(\w+);", decl).group(1)
        out += [f"### `{name}`", ""]
        if comment:
            out += [" ".join(comment.split()), ""]
        out += ["```c", decl, "```", ""]
    for m in re.finditer(r"^typedef struct (\w+) (\w+);", body, re.M):
        out += [f"### `{m.group(2)}`", "", "An opaque handle to a created model.", "", "```c", m.group(0), "```", ""]
    out += ["## Constants", ""]
    for m in re.finditer(r"(?:/\*((?:(?!\*/).)*)\*/\s*)?#define\s+(MLC_[A-Z_]+)\s+(\S+)", body, re.S):
        if m.group(2).endswith("_H") or m.group(2) == "MLC_API":
            continue
        out += [f"- `{m.group(2)} = {m.group(3)}`" + (f": {' '.join(m.group(1).split())}" if m.group(1) else "")]
    out += ["", "## Functions", ""]
    # a function: optional comment block(s) just above, then MLC_API ... ;
    pending = []
    for chunk in re.finditer(r"/\*(.*?)\*/|(?m:^(MLC_API[^;]*;))|\n\s*\n", body, re.S):
        if chunk.group(1) is not None:
            pending.append(" ".join(ln.strip().lstrip("*").strip() for ln in chunk.group(1).splitlines()).strip())
        elif chunk.group(2):
            decl = " ".join(chunk.group(2).split()).replace("MLC_API ", "")
            fname = re.search(r"(\w+)\s*\(", decl).group(1)
            out += [f"### `{fname}` {{ #{fname} }}", "", "```c", decl, "```", ""]
            if pending:
                out += [" ".join(pending), ""]
            pending = []
        else:
            pending = []   # a blank line ends a comment that belongs to no function
    return "\n".join(out)


def _header_comment_md(text: str) -> str:
    lines, out, in_code = text.splitlines(), [], False
    for ln in lines:
        if ln.startswith("- ") and out and out[-1].strip() and not out[-1].startswith(("- ", "  ")):
            out.append("")   # a list after a paragraph needs a blank line in Markdown
        if ln.startswith("    ") and ln.strip():
            if not in_code:
                out += ["", "```c"]
                in_code = True
            out.append(ln[4:])
            continue
        if in_code and ln.strip():
            out += ["```", ""]
            in_code = False
        out.append(ln)
    if in_code:
        out.append("```")
    return "\n".join(out)


# ----------------------------------------------------------------------------- tutorials

def tutorials() -> list[str]:
    d = os.path.join(ROOT, "tutorials")
    return sorted(f for f in os.listdir(d) if f.endswith(".py") and f[0].isdigit())


def tutorial_title(fname: str) -> str:
    doc = ast.get_docstring(ast.parse(open(os.path.join(ROOT, "tutorials", fname)).read())) or fname
    first = doc.splitlines()[0].rstrip(".")
    title = first.split(":", 1)[1].strip() if first.lower().startswith("tutorial") and ":" in first else first
    return title[:1].upper() + title[1:]


RUN_TUTORIALS = "MLC_DOCS_RUN_TUTORIALS"   # =1: run each tutorial at build time, show its output and pictures


def run_tutorial(fname: str) -> tuple[str, dict[str, bytes]]:
    """Run a tutorial as a user would; its output and the pictures it writes (.png in its
    --out folder, for the tutorials that take one)."""
    import subprocess
    import tempfile
    path = os.path.join(ROOT, "tutorials", fname)
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, path] + (["--out", out] if '"--out"' in open(path).read() else [])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=out,
                           env=dict(os.environ, PYTHONPATH=ROOT, MPLBACKEND="Agg"))
        text = r.stdout + (f"\n(exit status {r.returncode})\n{r.stderr[-2000:]}" if r.returncode else "")
        pics = {f: open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out)) if f.endswith(".png")}
    return text, pics


def tutorial_pictures(fname: str) -> tuple[dict[str, bytes], list[str]]:
    """Pictures drawn at every build for a tutorial (cheap ones), and markdown to show
    what could not be drawn here: for the first tutorial, its model's roofline and its
    fused graph (SVG with Graphviz's dot, else the DOT text)."""
    if not fname.startswith("01_"):
        return {}, []
    import tempfile
    import numpy as np
    import mlc
    from mlc.driver import Compiled
    from mlc.viz import write_graph
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 64)).astype(np.float32)
    w1 = (rng.standard_normal((64, 32)) * 0.1).astype(np.float32)
    b1 = np.zeros(32, dtype=np.float32)
    w2 = (rng.standard_normal((32, 10)) * 0.1).astype(np.float32)

    def mlp(x, w1, b1, w2):
        h = mlc.relu(x @ w1 + b1)
        return mlc.softmax(h @ w2, axis=-1)

    pics, md = {}, []
    with tempfile.TemporaryDirectory() as d:
        try:
            mlc.compile(mlp, x, w1, b1, w2).profile(x, w1, b1, w2, runs=5).roofline(os.path.join(d, "roofline.png"))
            pics["roofline.png"] = open(os.path.join(d, "roofline.png"), "rb").read()
        except ImportError as e:   # matplotlib is missing
            md += [f"(The roofline picture is not drawn in this build: {e}.)", ""]
        fused = Compiled(mlc.trace(mlp, x, w1, b1, w2), mlc.Target.host()).fused
        written, _ = write_graph(fused, os.path.join(d, "fused_graph.svg"), title="mlp -O2")
        if written.endswith(".svg"):
            pics["fused_graph.svg"] = open(written, "rb").read()
        else:
            md += ["The fused graph (`mlc inspect --graph`) as Graphviz DOT text (Graphviz's `dot` was not "
                   "found when this site was built, so it is not drawn):", "", "```dot", open(written).read().strip(),
                   "```", ""]
    return pics, md


def _prose(lines: list[str]) -> str:
    """A comment block as a paragraph; "1. Data" stays a numbered step, not a list restarting at 1."""
    return re.sub(r"^(\d+)\. ", r"\1\\. ", " ".join(lines))


def tutorial_page(fname: str, output: str | None = None, pictures=(), extra_md=()) -> str:
    """The tutorial's source as a page: its docstring and its comment blocks as text, its code
    as code blocks, in order; then its output (when it was run) and its pictures."""
    src = open(os.path.join(ROOT, "tutorials", fname)).read()
    tree = ast.parse(src)
    doc = ast.get_docstring(tree, clean=False) or ""   # uncleaned: the usage line keeps its indent (code)
    lines = src.splitlines()
    start = tree.body[0].end_lineno if doc else 0
    first, _, rest = doc.strip("\n").partition("\n")
    how = ("run when this site was built; its output and pictures are below" if output is not None else
           f"shown as its source with its comments as text (`{RUN_TUTORIALS}=1 make docs` also runs it and "
           "shows its output)")
    out = [f"# {tutorial_title(fname)}", "",
           f"`tutorials/{fname}`, {how}. The test suite runs it end to end (`tests/test_tutorials.py`).", "",
           rest.strip("\n"), ""]
    block: list[str] = []
    prose: list[str] = []

    def flush_code():
        while block and not block[-1].strip():
            block.pop()
        while block and not block[0].strip():
            block.pop(0)
        if block:
            out.extend(["```python", *block, "```", ""])
        block.clear()

    for ln in lines[start:]:
        s = ln.strip()
        if ln.startswith("#") and not ln.startswith("#!"):   # a top-level comment: prose
            if block:
                flush_code()
            prose.append(s.lstrip("#").strip())
            continue
        if prose:
            out.extend([_prose(prose), ""])
            prose = []
        block.append(ln)
    if prose:
        out.extend([_prose(prose), ""])
    flush_code()
    if output is not None:
        out += ["## Output", "", "```text", output.rstrip(), "```", ""]
    if pictures or extra_md:
        out += ["## Pictures", ""]
        for p in pictures:
            out += [f"![{p}](images/{fname[:-3]}/{p})", ""]
        out += list(extra_md)
    return "\n".join(out)


def tutorials_index() -> str:
    out = ["# Tutorials", "", "Runnable programs in `tutorials/`, each run end to end by the test suite "
           "(`python tutorials/NAME.py`). The pages show their source with the comments as text.", ""]
    for f in tutorials():
        out.append(f"- [{tutorial_title(f)}]({f[:-3]}.md) — `tutorials/{f}`")
    out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- the pages

def pages() -> dict[str, str]:
    """src path under docs/ -> markdown (or a picture's bytes), for every generated file."""
    with contextlib.redirect_stdout(io.StringIO()):
        out = {f"reference/api/{m.split('.')[-1]}.md": api_page(m) for m in API_MODULES}
        out["reference/ops.md"] = ops_page()
        out["reference/ir.md"] = ir_page()
        out["reference/cli.md"] = cli_page()
        out["reference/c_api.md"] = c_api_page()
        out["tutorials/index.md"] = tutorials_index()
        run = os.environ.get(RUN_TUTORIALS, "").strip() not in ("", "0")
        for f in tutorials():
            pics, md = tutorial_pictures(f)
            output = None
            if run:
                output, ran = run_tutorial(f)
                pics.update(ran)
            for name, data in pics.items():
                out[f"tutorials/images/{f[:-3]}/{name}"] = data
            out[f"tutorials/{f[:-3]}.md"] = tutorial_page(f, output, sorted(pics), md)
    return out


# MkDocs hook events

def on_config(config, **kwargs):
    nav = config["nav"]
    for section in nav:
        if isinstance(section, dict) and "Guides" in section:
            guides = section["Guides"]
            listed = {next(iter(g.values())) if isinstance(g, dict) else g for g in guides}
            for title, page in OPTIONAL_GUIDES:
                path = os.path.join(config["docs_dir"], page)
                if os.path.exists(path) and page not in listed:
                    h1 = next((ln[2:].strip() for ln in open(path) if ln.startswith("# ")), None)
                    guides.append({h1.replace("`", "") if h1 else title: page})
        if isinstance(section, dict) and "Tutorials" in section:
            section["Tutorials"] = [{"Overview": "tutorials/index.md"}] + [
                {tutorial_title(f): f"tutorials/{f[:-3]}.md"} for f in tutorials()]
    return config


_AUTOREF = re.compile(r'<autoref [^>]*?\bidentifier="([^"]*)"[^>]*>(.*?)</autoref>', re.S)


def on_page_content(html, page, config, files, **kwargs):
    """Docstrings index pytrees (``params["layer2"][0]``), which Markdown reads as reference
    links: a cross-reference whose target is not a Python name is put back as the text."""
    return _AUTOREF.sub(lambda m: m.group(0) if re.fullmatch(r"[A-Za-z_][\w.]*", m.group(1))
                        else f"[{m.group(2)}][{html_unescape(m.group(1))}]", html)


def on_files(files, config, **kwargs):
    from mkdocs.structure.files import File
    for src, text in pages().items():
        old = files.get_file_from_path(src)
        if old is not None:
            files.remove(old)
        files.append(File.generated(config, src, content=text))
    return files


if __name__ == "__main__":
    ap_ = argparse.ArgumentParser(description="write the generated pages into a folder")
    ap_.add_argument("out")
    args = ap_.parse_args()
    generated = pages()
    for src, content in generated.items():
        path = os.path.join(args.out, src)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content if isinstance(content, bytes) else content.encode())
    print(f"{len(generated)} files in {args.out}", file=sys.stderr)
