"""Mutated compile-cache entries: a damaged entry, or one copied or renamed under another
key, is never served -- ``cache.load`` returns nothing (and warns) or exactly what was
stored under that key.

Entries with random payloads are stored under random keys; a mutant truncates an
entry, flips bits in it, appends bytes, replaces it with another key's entry, with an
entry of the previous format or with an empty file. Every few cases the same happens to
the entries of real compiled functions, which must then compile again and give numpy's
answer. Replay one case with ``mutant(seed, i, entries)``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings

import numpy as np

from . import FuzzResult

KINDS = ("truncate", "flip", "append", "swap", "old_format", "empty")
END_TO_END_EVERY = 40   # one case in this many mutates the entry of a real compiled function


def mutant(seed: int, i: int, entries: dict[str, bytes]) -> tuple[str, str, bytes]:
    """Case ``i``: (kind, the key whose entry is replaced, the bytes written in its place)."""
    rng = np.random.default_rng([seed, i])
    keys = sorted(entries)
    key = keys[int(rng.integers(len(keys)))]
    blob = entries[key]
    kind = KINDS[int(rng.integers(len(KINDS)))]
    if kind == "truncate":
        blob = blob[:int(rng.integers(len(blob)))]
    elif kind == "flip":
        b = bytearray(blob)
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        blob = bytes(b)
    elif kind == "append":
        blob = blob + bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
    elif kind == "swap":   # a whole valid entry, of another key
        others = [k for k in keys if k != key]
        blob = entries[others[int(rng.integers(len(others)))]]
    elif kind == "old_format":   # checksummed without the key
        payload = blob[40:]
        blob = b"MLCOBJ01" + hashlib.sha256(payload).digest() + payload
    else:
        blob = b""
    return kind, key, blob


def _entry_path(folder: str, key: str) -> str:
    return os.path.join(folder, key[:2], key + ".o")


def fuzz(seed: int, iterations: int) -> FuzzResult:
    import mlc
    from mlc.runtime import cache
    result = FuzzResult("cache_entries")
    counts = {"refused": 0, "served": 0, "recompiled": 0}
    folder = tempfile.mkdtemp(prefix="mlc-fuzz-cache-")
    saved = os.environ.get("MLC_CACHE_DIR")
    saved_graphs = os.environ.get("MLC_GRAPH_CACHE")
    os.environ["MLC_CACHE_DIR"] = folder
    os.environ["MLC_GRAPH_CACHE"] = "off"   # kernel entries only: a function compiled again loads its kernel's
    try:
        rng = np.random.default_rng(seed)
        payloads = {cache.key_of("fuzz", str(seed), str(k)): bytes(rng.integers(0, 256, int(rng.integers(0, 2000)),
                                                                                dtype=np.uint8))
                    for k in range(8)}
        for key, payload in payloads.items():
            cache.store(key, payload)
        entries = {}
        for key in payloads:
            with open(_entry_path(folder, key), "rb") as f:
                entries[key] = f.read()

        # real compiled functions: the entry each one writes
        x = np.linspace(-1, 1, 33, dtype=np.float32)
        functions = [(lambda x: x + 1.0, x + 1), (lambda x: x * 10.0, x * 10), (lambda x: mlc.tanh(x), np.tanh(x))]
        compiled = {}
        def entry_keys() -> set:   # every entry, whichever key-prefix folder it went to
            return {n[:-2] for sub in os.listdir(folder) if os.path.isdir(os.path.join(folder, sub))
                    for n in os.listdir(os.path.join(folder, sub)) if n.endswith(".o")}
        for fn, want in functions:
            before = entry_keys()
            mlc.compile(fn, x)
            new = entry_keys() - before
            if len(new) != 1 or next(iter(new)) in compiled:
                raise RuntimeError(f"each function must write one new cache entry; {fn} wrote {len(new)}")
            compiled[new.pop()] = (fn, want)
        code_entries = {}
        for key in compiled:
            with open(_entry_path(folder, key), "rb") as f:
                code_entries[key] = f.read()

        for i in range(iterations):
            end_to_end = i % END_TO_END_EVERY == END_TO_END_EVERY - 1
            kind, key, blob = mutant(seed, i, code_entries if end_to_end else entries)
            path = _entry_path(folder, key)
            with open(path, "wb") as f:
                f.write(blob)
            where = f"seed {seed} case {i} ({kind}{', compiled' if end_to_end else ''})"
            result.cases += 1
            result.notes[kind] = result.notes.get(kind, 0) + 1
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if end_to_end:
                    fn, want = compiled[key]
                    try:
                        got = mlc.compile(fn, x)(x)
                    except Exception as e:
                        result.fail(f"{where}: compiling over the damaged entry failed: {type(e).__name__}: {e}")
                        got = None
                    if got is not None and not np.allclose(got, want, rtol=1e-5, atol=1e-6):
                        result.fail(f"{where}: wrong result after the entry was damaged")
                    counts["recompiled"] += 1
                    served = blob == code_entries[key]
                else:
                    try:
                        out = cache.load(key)
                    except Exception as e:
                        result.fail(f"{where}: cache.load raised {type(e).__name__}: {e}")
                        out = None
                    served = out is not None
                    if served and out != payloads[key]:
                        result.fail(f"{where}: served {len(out)} bytes that were not stored under this key")
            warned = any("is corrupted" in str(w.message) for w in caught)
            unchanged = blob == (code_entries if end_to_end else entries)[key]
            if unchanged:
                counts["served"] += 1
            else:
                counts["refused"] += 1
                if not end_to_end and served:
                    result.fail(f"{where}: a changed entry was served")
                if not warned and blob:
                    result.fail(f"{where}: a damaged entry was dropped without a warning")
                if os.path.exists(path) and not end_to_end:
                    result.fail(f"{where}: the damaged entry was left in place")
            # restore the entry for the next case
            with open(path, "wb") as f:
                f.write((code_entries if end_to_end else entries)[key])
        result.notes.update(counts)
    finally:
        if saved is None:
            os.environ.pop("MLC_CACHE_DIR", None)
        else:
            os.environ["MLC_CACHE_DIR"] = saved
        if saved_graphs is None:
            os.environ.pop("MLC_GRAPH_CACHE", None)
        else:
            os.environ["MLC_GRAPH_CACHE"] = saved_graphs
        shutil.rmtree(folder, ignore_errors=True)
    return result
