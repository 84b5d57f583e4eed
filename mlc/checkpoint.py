"""Checkpoints: a pytree of arrays and scalars saved to (and restored from) one file.

The file is an mlc tensor container (``mlc.runtime.params``, no pickle). Every
array leaf (and numpy scalar) is a tensor named by its ``mlc.tree.key_paths``
path ("layers/0/w"); the tree structure and the Python scalar leaves live in
the container's JSON meta, so ``load`` rebuilds the exact pytree: dict key
order, list vs tuple, ``None`` subtrees, and ``int``/``float``/``bool``/``str``
types. Python floats round-trip bit-exactly (stored as ``repr``, which also
covers nan/inf), ints at any size. A numpy Generator's ``bit_generator.state``
(nested dicts of str and int) is a valid tree, so RNG state checkpoints too.

    mlc.checkpoint.save("step100.mlct", {"params": params, "opt": opt_state, "step": 100}, lr=1e-3)
    state = mlc.checkpoint.load("step100.mlct")
    state, meta = mlc.checkpoint.load_with_meta("step100.mlct")   # meta == {"lr": 0.001}
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .runtime.params import ParamsFormatError, read_tensors, write_tensors
from .tree import TreeDef, flatten, key_paths, unflatten

FORMAT = "mlc.checkpoint"
VERSION = 1
# Dicts, lists and tuples nest at most this deep: the structure is stored as JSON, whose
# readers (and mlc's own) limit nesting.
MAX_DEPTH = 64


def _check_tree(tree) -> None:
    """Refuse, before anything is written, keys JSON would change and nesting too deep to
    read back; the error names the path."""
    stack = [(tree, "", 0)]
    while stack:
        t, path, depth = stack.pop()
        if isinstance(t, dict):
            children = list(t.items())
            for k, _ in children:
                if not isinstance(k, str):
                    raise TypeError(f"dict keys must be strings, got {k!r} at {path or 'the root'}")
        elif isinstance(t, (list, tuple)) and not hasattr(t, "_fields"):
            children = [(str(i), c) for i, c in enumerate(t)]
        else:
            continue
        if depth >= MAX_DEPTH:
            raise ValueError(f"checkpoint: the tree nests deeper than {MAX_DEPTH} levels (at {path}); "
                             "store such data as an array or a string")
        stack.extend((c, f"{path}/{k}" if path else k, depth + 1) for k, c in children)


def save(path, tree: Any, **meta) -> None:
    """Save ``tree`` (dicts with str keys, lists, tuples, None; leaves are numpy arrays, numpy
    scalars or Python int/float/bool/str) to ``path`` atomically. ``meta`` is extra
    JSON-serializable information returned by ``load_with_meta``."""
    _check_tree(tree)
    leaves, treedef = flatten(tree)
    tensors: dict[str, np.ndarray] = {}
    records = []
    for name, leaf in zip(key_paths(tree), leaves):
        if isinstance(leaf, (np.ndarray, np.generic)):
            if name in tensors:   # e.g. {"a/b": x, "a": {"b": y}}
                raise ValueError(f"checkpoint: two array leaves share the path {name!r}; "
                                 "rename a key so paths are unique")
            tensors[name] = leaf
            records.append({"tensor": name, "scalar": True} if isinstance(leaf, np.generic)
                           else {"tensor": name})
        else:
            records.append(_scalar_record(name, leaf))
    ckpt = {"format": FORMAT, "version": VERSION, "tree": treedef.to_json(), "leaves": records}
    write_tensors(path, tensors, {"checkpoint": ckpt, "user": meta})


def _nesting(treedef: TreeDef) -> int:
    """How many dicts, lists and tuples deep ``treedef`` goes."""
    deepest, stack = 0, [(treedef, 0)]
    while stack:
        t, depth = stack.pop()
        if t.kind in ("dict", "list", "tuple"):
            deepest = max(deepest, depth + 1)
            stack.extend((c, depth + 1) for c in t.children)
    return deepest


def _scalar_record(name: str, v) -> dict:
    # Exact types only: a subclass (IntEnum, a str subclass) would come back as its base type.
    t = type(v)
    if t is bool:
        return {"bool": v}
    if t is int:
        return {"int": str(v)}     # a string: JSON readers other than Python's lose big ints
    if t is float:
        return {"float": repr(v)}  # repr round-trips exactly, nan/inf included
    if t is str:
        return {"str": v}
    raise TypeError(f"checkpoint: leaf {name!r} has unsupported type {t.__name__} "
                    "(use numpy arrays, numpy scalars, int, float, bool or str)")


def _leaf(rec: dict, tensors: dict):
    (key, value), *rest = rec.items()
    if key == "tensor":
        a = tensors.pop(value)   # popped: one array per leaf, so no two leaves share one
        if rest == [("scalar", True)] and a.ndim == 0:
            return a[()]   # the numpy scalar
        if rest:
            raise ValueError(f"unexpected leaf record {rec!r} for a tensor of shape {a.shape}")
        return a
    if rest:
        raise ValueError(f"unexpected leaf record {rec!r}")
    # exactly as _scalar_record writes them: int() and float() alone would also take
    # " 7", "1_000", 1.5 or "1e999" and load something no save wrote
    if key == "bool" and isinstance(value, bool):
        return value
    if key == "int" and isinstance(value, str) and str(int(value)) == value:
        return int(value)
    if key == "float" and isinstance(value, str) and repr(float(value)) == value:
        return float(value)
    if key == "str" and isinstance(value, str):
        return value
    raise ValueError(f"unknown leaf record {rec!r}")


def load_with_meta(path) -> tuple[Any, dict]:
    """(tree, meta) from a checkpoint written by ``save``; arrays are fresh writable copies."""
    tensors, header_meta = read_tensors(path)
    ckpt = header_meta.get("checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ParamsFormatError(f"{path}: an mlc tensor file but not a checkpoint (no checkpoint structure)")
    if ckpt.get("version") != VERSION:
        raise ParamsFormatError(f"{path}: unsupported checkpoint version {ckpt.get('version')!r} "
                                f"(this reader supports {VERSION})")
    try:
        treedef = TreeDef.from_json(ckpt["tree"])
        if _nesting(treedef) > MAX_DEPTH:   # save refuses such a tree: so does load
            raise ValueError(f"the tree nests deeper than {MAX_DEPTH} levels")
        leaves = [_leaf(r, tensors) for r in ckpt["leaves"]]
        tree = unflatten(treedef, leaves)
    except (KeyError, TypeError, ValueError, AttributeError, StopIteration) as e:
        # (unflatten raises StopIteration when the leaves run out)
        raise ParamsFormatError(f"{path}: malformed checkpoint structure: {e!r}") from None
    if tensors:
        raise ParamsFormatError(f"{path}: malformed checkpoint structure: tensor(s) {', '.join(map(repr, tensors))} "
                                "belong to no leaf")
    user = header_meta.get("user", {})
    if not isinstance(user, dict):
        raise ParamsFormatError(f"{path}: malformed checkpoint structure: the user meta is not an object")
    return tree, user


def load(path) -> Any:
    """The tree saved in ``path`` (see ``save``)."""
    return load_with_meta(path)[0]
