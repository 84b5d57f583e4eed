"""Compiled graphs on disk: what an Executable needs of a compilation, stored under a key
of the graph (its text, its constants' bytes) and of everything else the code depends on
(the driver composes it: target, opt level, mlc's exact sources, the tuning database's
records). A graph compiled before -- by another Python function tracing to the same
graph, or another process -- is then loaded without running the passes, the lowering,
the scheduling, the memory planning or code generation again.

An entry (``encode``) holds the linked object code, the lowered graph's constants and a
description (output types, workspace, statistics, a digest of the loop level it was built
from). It is kept in the object cache (``runtime.cache``), whose checksum covers the key:
a damaged entry, or one renamed under another key, is detected, removed and compiled
again; an entry whose checksum holds but that does not decode is compiled again too.
"""
from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import os
import struct
import threading
import warnings

import numpy as np

from ..ir.graph import Graph, print_graph, walk_nodes
from ..ir.types import TensorType, dtype as to_dtype
from . import cache

FORMAT = "mlc-compiled-graph"
VERSION = 1
# compiled graphs loaded from the cache / not found there (compiled) / of those, entries found damaged
COUNTS = {"hits": 0, "misses": 0, "damaged": 0}


@dataclasses.dataclass
class Entry:
    """What a cached compilation restores: the object code, the lowered constants (the
    Executable's params), the output types, the workspace size, the statistics, and a
    digest of the loop level (checked when the levels are rebuilt for printing)."""
    object_code: bytes
    params: list[np.ndarray]
    output_types: list[TensorType]
    workspace_bytes: int
    stats: dict
    loop_digest: str


_SOURCE: list[str] = []
_SOURCE_LOCK = threading.Lock()


def source_hash() -> str:
    """``cache.source_hash()`` (mlc's sources, by content), remembered in the cache under
    the sources' names, sizes and modification times, as Python's bytecode cache does:
    reading every source again takes longer than loading a small compiled graph."""
    with _SOURCE_LOCK:
        if not _SOURCE:
            h = hashlib.sha256()
            for _, path in cache.source_files():
                st = os.stat(path)
                h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
            key = cache.key_of("source-stamp", h.hexdigest())
            found = cache.load(key)
            text = found.decode("ascii", "replace") if found is not None else ""
            if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
                text = cache.source_hash()
                cache.store(key, text.encode())
            _SOURCE.append(text)
        return _SOURCE[0]


def graph_text(graph: Graph) -> str:
    """The graph as the key sees it: its text under a fixed name (a function of another
    name tracing to the same graph shares the entry), constants by type only, their bytes
    hashed (``constants_digest``)."""
    return print_graph(Graph("g", graph.inputs, graph.nodes, graph.outputs), elide_constants=True)


def constants_digest(graph: Graph) -> str:
    """A hash of every constant's dtype, shape and bytes, in node order (control-flow
    bodies' constants included)."""
    h = hashlib.sha256()
    for n in walk_nodes(graph):
        for v in n.attrs.values():
            if isinstance(v, np.ndarray):
                a = np.ascontiguousarray(v)
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(memoryview(a).cast("B") if a.size else b"")
    return h.hexdigest()


_MAGIC = b"MLCGRAPH"
_PREAMBLE = struct.Struct("<8sQ")   # magic, header length
_ALIGN = 64
_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
           "float64"}


def encode(entry: Entry) -> bytes:
    """The entry's bytes: magic, header length, JSON header, then each array and the
    object code at 64-byte aligned offsets of the data that follows the header."""
    return b"".join(encode_pieces(entry))


def encode_pieces(entry: Entry) -> list:
    """``encode``'s bytes as pieces to write one after the other; the arrays' pieces are
    views of their memory, not copies."""
    chunks, at, arrays = [], 0, []
    for p in entry.params:
        a = np.ascontiguousarray(p)
        if a.dtype.name not in _DTYPES:
            raise ValueError(f"a constant of dtype {a.dtype}")
        if not a.dtype.isnative:
            a = a.astype(a.dtype.newbyteorder("="))
        arrays.append({"dtype": a.dtype.name, "shape": list(a.shape), "offset": at, "nbytes": a.nbytes})
        chunks.append(memoryview(a.reshape(-1)).cast("B") if a.size else b"")
        at += a.nbytes
        chunks.append(bytes(-at % _ALIGN))
        at += -at % _ALIGN
    meta = {"format": FORMAT, "version": VERSION, "params": arrays,
            "object": {"offset": at, "nbytes": len(entry.object_code)},
            "outputs": [[t.dtype.name, list(t.shape)] for t in entry.output_types],
            "workspace_bytes": entry.workspace_bytes, "stats": entry.stats, "loop_digest": entry.loop_digest}
    chunks.append(entry.object_code)
    header = json.dumps(meta).encode()
    header += b" " * (-(len(header) + _PREAMBLE.size) % _ALIGN)
    return [_PREAMBLE.pack(_MAGIC, len(header)) + header, *chunks]


def decode(blob: bytes) -> Entry:
    """An entry from its bytes (the params are read-only views of ``blob``); ValueError
    naming what is wrong."""
    if len(blob) < _PREAMBLE.size:
        raise ValueError("too short")
    magic, header_len = _PREAMBLE.unpack_from(blob)
    if magic != _MAGIC or header_len > len(blob) - _PREAMBLE.size:
        raise ValueError("not a compiled graph")
    meta = json.loads(blob[_PREAMBLE.size:_PREAMBLE.size + header_len].decode("utf-8"))
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}")
    base = _PREAMBLE.size + header_len
    size = len(blob) - base

    def span(d: dict) -> tuple[int, int]:
        offset, nbytes = d["offset"], d["nbytes"]
        if not (isinstance(offset, int) and isinstance(nbytes, int) and 0 <= offset <= offset + nbytes <= size):
            raise ValueError(f"an array outside the data ({offset}, {nbytes})")
        return base + offset, nbytes

    params = []
    for d in meta["params"]:
        if d["dtype"] not in _DTYPES:
            raise ValueError(f"dtype {d['dtype']!r}")
        offset, nbytes = span(d)
        dt, shape = np.dtype(d["dtype"]), tuple(int(n) for n in d["shape"])
        if nbytes != dt.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{nbytes} bytes for {d['dtype']}{list(shape)}")
        params.append(np.frombuffer(blob, dt, nbytes // dt.itemsize, offset).reshape(shape))
    offset, nbytes = span(meta["object"])
    outputs = []
    for dt, shape in meta["outputs"]:
        if dt not in _DTYPES:
            raise ValueError(f"dtype {dt!r}")
        outputs.append(TensorType(tuple(int(n) for n in shape), to_dtype(dt)))
    return Entry(bytes(blob[offset:offset + nbytes]), params, outputs, int(meta["workspace_bytes"]),
                 dict(meta["stats"]), str(meta["loop_digest"]))


def load(key: str) -> Entry | None:
    """The entry stored under ``key``, or None (a miss, or a damaged entry: removed)."""
    wait_for_stores()
    blob = cache.load(key)   # checks the entry's checksum against the key
    if blob is None:
        COUNTS["misses"] += 1
        return None
    try:
        entry = decode(blob)
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        # an entry whose checksum passed but that this mlc did not write
        COUNTS["damaged"] += 1
        COUNTS["misses"] += 1
        warnings.warn(f"mlc compiled-graph cache entry {key[:16]} is not readable ({e}); the graph is compiled "
                      "again", RuntimeWarning)
        return None
    COUNTS["hits"] += 1
    return entry


_PENDING: list[threading.Thread] = []   # stores still writing (store(background=True))
_PENDING_LOCK = threading.Lock()


def store(key: str, entry: Entry, background: bool = False) -> None:
    """Store ``entry`` under ``key``. In the background, the write (hashing and writing the
    constants, 100 MB for ResNet-50) overlaps the first call instead of delaying the
    compile's return; the next ``load`` and the interpreter's exit wait for it."""
    try:
        pieces = encode_pieces(entry)
    except ValueError:   # a constant this format does not hold: the graph compiles each time
        return
    if not background:
        cache.store(key, pieces)
        return
    t = threading.Thread(target=cache.store, args=(key, pieces), name="mlc-cache-store", daemon=True)
    with _PENDING_LOCK:
        _PENDING.append(t)
    t.start()


def wait_for_stores() -> None:
    """Return once every background store has written its entry."""
    with _PENDING_LOCK:
        pending = list(_PENDING)
        _PENDING.clear()
    for t in pending:
        t.join()


atexit.register(wait_for_stores)
