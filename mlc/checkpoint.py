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

``save_safetensors`` / ``load_safetensors`` exchange arrays with other frameworks
in the safetensors format (Hugging Face's): a pytree of arrays goes out under
dotted names ("layers.0.w"), a flat name -> array dict comes back.
"""
from __future__ import annotations

import os
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


# ----------------------------------------------------------------------------- safetensors

def _safetensors():
    try:
        import safetensors.numpy as st
    except ImportError as e:   # a core dependency: only a broken install lacks it
        raise ImportError("mlc.checkpoint's safetensors functions need the 'safetensors' package "
                          "(pip install safetensors)") from e
    return st


def safetensors_names(tree: Any) -> list[str]:
    """The safetensors name of each leaf of ``tree``, in ``flatten`` order: the
    ``mlc.tree.key_paths`` path with dots, as PyTorch names its state dicts
    ("layers.0.w"); the keys of a flat dict are kept as they are."""
    return [p.replace("/", ".") for p in key_paths(tree)]


def save_safetensors(path, tree: Any, metadata: dict[str, str] | None = None) -> None:
    """Write the arrays of ``tree`` (a pytree of numpy arrays; numpy scalars are stored
    as 0-d arrays) to ``path`` in the safetensors format, atomically. Each leaf is
    named by ``safetensors_names`` ("blocks.0.attn.wq"); ``metadata`` is str -> str
    stored in the header. ``load_safetensors`` reads the flat name -> array dict back."""
    st = _safetensors()
    _check_tree(tree)
    leaves, _ = flatten(tree)
    tensors: dict[str, np.ndarray] = {}
    for name, leaf in zip(safetensors_names(tree), leaves):
        if isinstance(leaf, np.generic):
            leaf = np.asarray(leaf)
        if not isinstance(leaf, np.ndarray):
            raise TypeError(f"save_safetensors: leaf {name!r} is a {type(leaf).__name__}, not a numpy array "
                            "(safetensors stores arrays only)")
        if leaf.dtype.kind not in "biuf":
            raise TypeError(f"save_safetensors: leaf {name!r} has dtype {leaf.dtype}, which safetensors "
                            "cannot store (bool, integers and floats only)")
        if name in tensors:   # {"a.b": x, "a": {"b": y}}
            raise ValueError(f"save_safetensors: two leaves share the name {name!r}; rename a key so names "
                             "are unique")
        # the library writes the raw buffer, strides ignored (and ascontiguousarray makes 0-d arrays 1-d)
        tensors[name] = leaf if leaf.flags.c_contiguous else leaf.copy(order="C")
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("save_safetensors: metadata must map str to str")
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        st.save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_safetensors(path) -> dict[str, np.ndarray]:
    """The name -> array dict stored in the safetensors file ``path`` (fresh, writable,
    C-contiguous arrays)."""
    st = _safetensors()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such safetensors file: {path}")
    try:
        tensors = st.load_file(path)
    except Exception as e:   # safetensors raises its own SafetensorError (and others) for bad files
        raise ParamsFormatError(f"{path}: not a valid safetensors file: {e}") from None
    return {k: np.array(v) for k, v in tensors.items()}
