"""Mutated checkpoints (``mlc.checkpoint``): each mutant is refused with
``ParamsFormatError``, or loads a tree of the documented types that saves and loads
back identically.

Seeds are checkpoints of nested dicts, lists, tuples and None with every leaf type
(arrays, numpy scalars, big ints, floats with nan/inf/-0.0, bools, strings). A mutant
changes bytes (the checksum then fails) or, keeping the checksum valid as a faulty
writer would, the checkpoint structure in the header: the tree's JSON (node kinds,
keys, children, deep nesting), the leaf records (their kinds, values, tensor names,
the scalar flag), the format name and version, the user meta. Replay one case with
``mutant(seed, i)`` and ``check(data)``.
"""
from __future__ import annotations

import functools
import json
import os
import tempfile

import numpy as np

from . import FuzzResult
from .params_files import _byte_mutation, forge, pick, split

LEAF_VALUES = [{"int": "5"}, {"int": "1_000"}, {"int": " 7"}, {"int": 5}, {"int": 1.5}, {"int": "9" * 5000},
               {"float": "nan"}, {"float": "1e999"}, {"float": 2.5}, {"float": "0x10"}, {"float": " 1.5"},
               {"bool": 1}, {"bool": True}, {"str": 3}, {"str": "s"}, {"tensor": "w"}, {"tensor": "nope"},
               {"tensor": "w", "scalar": True}, {"tensor": "s", "scalar": True}, {"tensor": "s", "scalar": False},
               {"tensor": ["w"]}, {}, {"int": "1", "float": "1.0"}, {"complex": "1j"}, None, "*", []]
TREES = ["*", None, {"list": []}, {"tuple": ["*"]}, {"dict": []}, {"dict": [["k", "*"]]}, {"dict": [[1, "*"]]},
         {"dict": [["k", "*"], ["k", "*"]]}, {"dict": [["k"]]}, {"dict": {"k": "*"}}, {"set": ["*"]},
         {"list": "*"}, {"list": ["*"], "tuple": []}, [], 5, "**"]


@functools.lru_cache(maxsize=None)
def seeds() -> tuple[bytes, ...]:
    from mlc import checkpoint
    r = np.random.default_rng(0)
    trees = [
        ({"params": {"w": r.standard_normal((3, 4)).astype(np.float32), "b": np.zeros(4)},
          "step": 10 ** 30, "lr": 0.1 + 0.2, "flags": [True, False], "name": "run-α", "none": None}, {"note": "x"}),
        ([np.float32(1.5), np.int64(-3), np.bool_(True), (1, -0.0, float("nan"), float("inf")), {"e": ()}], {}),
        ({"layers": [{"k": np.arange(6).reshape(2, 3)}, {"k": np.ones((0, 2), np.int8)}], "s": np.array(7)}, {}),
        (np.arange(5, dtype=np.uint8), {}),
    ]
    out = []
    with tempfile.TemporaryDirectory() as d:
        for k, (tree, meta) in enumerate(trees):
            path = os.path.join(d, f"{k}.mlct")
            checkpoint.save(path, tree, **meta)
            with open(path, "rb") as f:
                out.append(f.read())
    return tuple(out)


def _deep_tree(n: int) -> bytes:
    return b'{"list": [' * n + b'"*"' + b"]}" * n


def _structure_mutation(ckpt: dict, r):
    """Mutate the checkpoint record in place; returns replacement JSON bytes for the tree
    when it is too deep for json.dumps, else None."""
    kind = r.integers(9)
    leaves = ckpt.get("leaves")
    if kind in (0, 1) and isinstance(leaves, list) and leaves:
        leaves[r.integers(len(leaves))] = json.loads(json.dumps(pick(r, LEAF_VALUES)))
    elif kind == 2 and isinstance(leaves, list):
        op = r.integers(3)
        if op == 0 and leaves:
            leaves.pop(r.integers(len(leaves)))
        elif op == 1 and leaves:
            leaves.append(leaves[r.integers(len(leaves))])
        else:
            leaves.reverse()
    elif kind in (3, 4):   # a subtree of the structure replaced
        slots, stack = [(ckpt, "tree")], [ckpt.get("tree")]
        while stack:   # every (container, index) holding a subtree
            node = stack.pop()
            if isinstance(node, dict) and len(node) == 1:
                (kind_name, items), = node.items()
                if isinstance(items, list):
                    for j, c in enumerate(items):
                        if kind_name == "dict" and isinstance(c, list) and len(c) == 2:
                            slots.append((c, 1))
                            stack.append(c[1])
                        else:
                            slots.append((items, j))
                            stack.append(c)
        container, index = pick(r, slots)
        container[index] = json.loads(json.dumps(pick(r, TREES)))
    elif kind == 5:
        return _deep_tree(pick(r, [30, 80, 200, 5000]))
    elif kind == 6:
        ckpt[pick(r, ["format", "version"])] = pick(r, ["mlc.checkpoint", "other", 1, 2, "1", None, True])
    elif kind == 7 and ckpt:
        del ckpt[pick(r, list(ckpt))]
    else:
        ckpt["leaves"] = pick(r, [None, {}, "x", [None]])
    return None


def mutant(seed: int, i: int) -> bytes:
    r = np.random.default_rng([seed, i])
    buf = seeds()[r.integers(len(seeds()))]
    if r.random() < 0.25:
        return _byte_mutation(buf, r)
    header, data = split(buf)
    meta = header["meta"]
    if r.random() < 0.1:   # the user meta
        meta["user"] = pick(r, [None, [], "x", {"k": [1, {"a": None}]}, 5])
        return forge(header, data)
    ckpt = meta["checkpoint"]
    for _ in range(r.integers(1, 3)):
        tree_json = _structure_mutation(ckpt, r)
        if tree_json is not None:   # spliced in by hand: json.dumps would recurse
            ckpt["tree"] = "@TREE@"
            text = json.dumps(header).encode()
            return forge(text.replace(b'"@TREE@"', tree_json), data)
    return forge(header, data)


def _assert_identical(a, b, path="root"):
    if type(a) is not type(b):
        raise AssertionError(f"{path}: {type(a).__name__} vs {type(b).__name__}")
    if isinstance(a, dict):
        if list(a) != list(b) or not all(type(k) is str for k in a):
            raise AssertionError(f"{path}: keys {list(a)} vs {list(b)}")
        for k in a:
            _assert_identical(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        if len(a) != len(b):
            raise AssertionError(f"{path}: {len(a)} vs {len(b)} items")
        for k, (x, y) in enumerate(zip(a, b)):
            _assert_identical(x, y, f"{path}/{k}")
    elif isinstance(a, (np.ndarray, np.generic)):
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            raise AssertionError(f"{path}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}")
    elif isinstance(a, float):
        if repr(a) != repr(b):
            raise AssertionError(f"{path}: {a!r} vs {b!r}")
    elif a is not None and type(a) not in (int, bool, str):
        raise AssertionError(f"{path}: a leaf of type {type(a).__name__}")
    elif a != b:
        raise AssertionError(f"{path}: {a!r} vs {b!r}")


def check(buf: bytes, folder: str) -> str:
    """'refused' or 'loaded'; raises AssertionError describing a failure."""
    from mlc import checkpoint
    from mlc.runtime.params import ParamsFormatError
    path = os.path.join(folder, "mutant.mlct")
    with open(path, "wb") as f:
        f.write(buf)
    try:
        tree, meta = checkpoint.load_with_meta(path)
    except ParamsFormatError:
        return "refused"
    except Exception as e:   # noqa: BLE001 -- what this fuzzer looks for
        raise AssertionError(f"load raised {type(e).__name__}: {e}") from e
    again_path = os.path.join(folder, "again.mlct")
    try:
        checkpoint.save(again_path, tree, **meta)
    except Exception as e:   # noqa: BLE001
        raise AssertionError(f"loaded, but saving it again raised {type(e).__name__}: {e}") from e
    again, meta2 = checkpoint.load_with_meta(again_path)
    _assert_identical(tree, again)
    if meta2 != meta:
        raise AssertionError(f"meta {meta!r} came back as {meta2!r}")
    # what was accepted is what save writes for the tree it loaded (tensor names aside)
    with open(again_path, "rb") as f:
        written = _structure(f.read())
    if _structure(buf) != written:
        raise AssertionError(f"accepted the structure {_structure(buf)}, which saves as {written}")
    return "loaded"


def _structure(buf: bytes):
    ckpt = split(buf)[0]["meta"]["checkpoint"]
    leaves = [{k: v for k, v in rec.items() if k != "tensor"} if "tensor" in rec else rec for rec in ckpt["leaves"]]
    return json.dumps([ckpt["tree"], leaves])


def fuzz(seed: int, iterations: int) -> FuzzResult:
    result = FuzzResult("checkpoints")
    with tempfile.TemporaryDirectory() as folder:
        for i in range(iterations):
            buf = mutant(seed, i)
            result.cases += 1
            try:
                outcome = check(buf, folder)
            except AssertionError as e:
                result.fail(f"seed {seed} case {i} (checkpoints.mutant({seed}, {i})): {str(e)[:400]}")
                continue
            result.notes[outcome] = result.notes.get(outcome, 0) + 1
    return result
