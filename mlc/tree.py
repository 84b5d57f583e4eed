"""Pytrees: nested dicts, lists and tuples whose leaves are arrays (or scalars).

Model parameters and optimizer state are plain pytrees, so transforms
(``mlc.grad``), compiled training steps and checkpoints all walk them the same
way: ``flatten`` gives the leaves in a fixed order and a ``TreeDef`` that
``unflatten`` uses to rebuild the same structure. Dict keys keep insertion
order; ``None`` is an empty subtree (no leaf).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np


class TreeDef:
    """The structure of a pytree without its leaves."""

    __slots__ = ("kind", "keys", "children", "_hash", "_extract")

    def __init__(self, kind: str, keys: tuple = (), children: tuple = ()):
        self.kind = kind            # "leaf", "none", "dict", "list" or "tuple"
        self.keys = keys            # dict keys, in order
        self.children = children   # child TreeDefs
        self._hash = None           # computed once: compiled functions look executables up by structure
        self._extract = None        # leaves_of's generated function, made on first use

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(c.num_leaves for c in self.children)

    def __eq__(self, other) -> bool:
        return (isinstance(other, TreeDef) and self.kind == other.kind and self.keys == other.keys
                and self.children == other.children)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash((self.kind, self.keys, self.children))
        return self._hash

    def leaves_of(self, tree: Any) -> list | None:
        """``flatten(tree)[0]`` when ``tree`` has exactly this structure, else None: checked
        and collected by straight-line code generated once per structure, without building
        ``tree``'s own TreeDef (what a compiled function does on every call with the
        structure it was compiled for)."""
        extract = self._extract
        if extract is None:
            extract = self._extract = _extractor(self)
        return extract(tree)

    def to_json(self, path: str = ""):
        """The structure as JSON (``docs/formats.md``, checkpoints): a leaf is ``"*"``,
        None ``null``, lists and tuples ``{"list": [...]}`` / ``{"tuple": [...]}``, a dict
        ``{"dict": [[key, child], ...]}`` (pairs: key order survives any JSON reader).
        Dict keys must be strings."""
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return None
        if self.kind == "dict":
            for k in self.keys:
                if not isinstance(k, str):
                    raise TypeError(f"dict keys must be strings, got {k!r} at {path or 'the root'}")
            return {"dict": [[k, c.to_json(f"{path}/{k}" if path else k)] for k, c in zip(self.keys, self.children)]}
        return {self.kind: [c.to_json(f"{path}/{i}" if path else str(i)) for i, c in enumerate(self.children)]}

    @staticmethod
    def from_json(j) -> "TreeDef":
        if j == "*":
            return TreeDef("leaf")
        if j is None:
            return TreeDef("none")
        if not (isinstance(j, dict) and len(j) == 1):
            raise ValueError(f"not a pytree structure: {j!r}")
        (kind, items), = j.items()
        if not isinstance(items, list):
            raise ValueError(f"not a pytree structure: {j!r}")
        if kind == "dict":
            if not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in items):
                raise ValueError(f"a dict's items must be [string key, child] pairs: {items!r}")
            if len({k for k, _ in items}) != len(items):
                raise ValueError(f"a dict's keys must differ: {[k for k, _ in items]!r}")
            return TreeDef("dict", tuple(k for k, _ in items), tuple(TreeDef.from_json(c) for _, c in items))
        if kind not in ("list", "tuple"):
            raise ValueError(f"unknown node kind {kind!r}")
        return TreeDef(kind, (), tuple(TreeDef.from_json(c) for c in items))

    def __repr__(self) -> str:
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        if self.kind == "dict":
            return "{" + ", ".join(f"{k!r}: {c!r}" for k, c in zip(self.keys, self.children)) + "}"
        inner = ", ".join(map(repr, self.children))
        return f"[{inner}]" if self.kind == "list" else f"({inner}{',' if len(self.children) == 1 else ''})"


def _is_leaf(t) -> bool:
    return not (t is None or isinstance(t, (dict, list)) or (isinstance(t, tuple) and not hasattr(t, "_fields")))


def _extractor(treedef: TreeDef):
    """A function ``tree -> leaves or None`` for ``treedef``: its checks and lookups as one
    straight-line body (no recursion, no TreeDef objects), generated from the structure."""
    lines, consts, leaves = [], {}, []
    counter = [0]

    def var() -> str:
        counter[0] += 1
        return f"v{counter[0]}"

    def emit(d: TreeDef, v: str) -> None:
        if d.kind == "leaf":
            lines.append(f"if type({v}) is not ndarray and not is_leaf({v}): return None")
            leaves.append(v)
        elif d.kind == "none":
            lines.append(f"if {v} is not None: return None")
        elif d.kind == "dict":
            k = f"k{len(consts)}"
            consts[k] = d.keys
            lines.append(f"if not isinstance({v}, dict) or tuple({v}) != {k}: return None")
            for j, c in enumerate(d.children):
                w = var()
                lines.append(f"{w} = {v}[{k}[{j}]]")
                emit(c, w)
        else:
            check = f"not isinstance({v}, list)" if d.kind == "list" else \
                f"not isinstance({v}, tuple) or hasattr({v}, '_fields')"
            lines.append(f"if {check} or len({v}) != {len(d.children)}: return None")
            for j, c in enumerate(d.children):
                w = var()
                lines.append(f"{w} = {v}[{j}]")
                emit(c, w)

    emit(treedef, "v0")
    body = "\n    ".join(lines + [f"return [{', '.join(leaves)}]"])
    namespace = {"is_leaf": _is_leaf, "ndarray": np.ndarray, **consts}
    exec(f"def extract(v0):\n    {body}\n", namespace)   # the source is made of names and indices only
    return namespace["extract"]


def flatten(tree: Any) -> tuple[list, TreeDef]:
    """(leaves in depth-first order, structure)."""
    leaves: list = []

    def walk(t) -> TreeDef:
        if t is None:
            return TreeDef("none")
        if isinstance(t, dict):
            keys = tuple(t)
            return TreeDef("dict", keys, tuple(walk(t[k]) for k in keys))
        if isinstance(t, (list, tuple)) and not hasattr(t, "_fields"):
            return TreeDef("list" if isinstance(t, list) else "tuple", (), tuple(walk(c) for c in t))
        leaves.append(t)
        return TreeDef("leaf")

    return leaves, walk(tree)


def unflatten(treedef: TreeDef, leaves) -> Any:
    """Rebuild a pytree of structure ``treedef`` from ``leaves``."""
    it = iter(leaves)

    def build(d: TreeDef):
        if d.kind == "leaf":
            return next(it)
        if d.kind == "none":
            return None
        children = [build(c) for c in d.children]
        if d.kind == "dict":
            return dict(zip(d.keys, children))
        return children if d.kind == "list" else tuple(children)

    out = build(treedef)
    if next(it, _END) is not _END:
        raise ValueError(f"unflatten: more leaves than the structure {treedef!r} holds")
    return out


_END = object()


def leaves(tree: Any) -> list:
    return flatten(tree)[0]


def tree_map(fn: Callable, tree: Any, *rest: Any) -> Any:
    """Apply ``fn`` leaf by leaf to ``tree`` (and trees of the same structure in ``rest``)."""
    ls, d = flatten(tree)
    others = []
    for r in rest:
        rl, rd = flatten(r)
        if rd != d:
            raise ValueError(f"tree_map: structures differ: {d!r} and {rd!r}")
        others.append(rl)
    return unflatten(d, [fn(*xs) for xs in zip(ls, *others)])


def key_paths(tree: Any) -> list[str]:
    """A readable path per leaf, in ``flatten`` order: ``"layers/0/w"``."""
    paths: list[str] = []

    def walk(t, prefix: str):
        if t is None:
            return
        if isinstance(t, dict):
            for k in t:
                walk(t[k], f"{prefix}/{k}" if prefix else str(k))
        elif isinstance(t, (list, tuple)) and not hasattr(t, "_fields"):
            for i, c in enumerate(t):
                walk(c, f"{prefix}/{i}" if prefix else str(i))
        else:
            paths.append(prefix or "value")

    walk(tree, "")
    return paths
