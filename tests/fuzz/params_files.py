"""Mutated tensor containers (``mlc.runtime.params``, the format of params files and
checkpoints): each mutant is refused with ``ParamsFormatError``, or loads exactly what
its bytes say.

Seeds are containers of several dtypes and shapes (0-d, empty, big-endian sources)
with a JSON meta. A mutant changes bytes (truncate, flip bits, splice, delete,
insert, append; the checksum then fails) or, keeping the checksum valid as a faulty
writer would, the preamble (version, flags, header length), the header's JSON
(dtypes, shapes, offsets, sizes, names, entries, deep nesting, not JSON) or the data.
An accepted mutant is read again independently of the reader -- every tensor equal
to the bytes its entry points at -- and must encode and decode to the same tensors.
Replay one case with ``mutant(seed, i)`` and ``check(data)``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import struct

import numpy as np

from . import FuzzResult

INTERESTING = [0, 1, -1, 2, 3, 7, 8, 63, 64, 65, 2 ** 31, 2 ** 32, 2 ** 62, 2 ** 63, 2 ** 64, 2 ** 70, 1.5, True,
               None, "3", [], [1]]
PREAMBLE = struct.Struct("<8sIIQ")


@functools.lru_cache(maxsize=None)
def seeds() -> tuple[bytes, ...]:
    from mlc.runtime.params import encode
    r = np.random.default_rng(0)
    return (
        encode({"w": r.standard_normal((3, 4)).astype(np.float32), "b": np.arange(5, dtype=">i8"),
                "s": np.array(2.5), "e": np.zeros((0, 3), np.float16)}, {"epoch": 3, "name": "α"}),
        encode({"mask": r.random(7) < 0.5, "u": np.arange(9, dtype=np.uint8).reshape(3, 3),
                "i16": np.array([-1, 2], np.int16), "i8": np.array([-128, 127], np.int8)}, {}),
        encode({}, {"only": ["meta", {"deep": [1, 2.5, None]}]}),
        encode({"x": np.arange(100, dtype=np.float64)}, None),
    )


def forge(header, data: bytes, version: int = 1, flags: int = 0, header_len=None) -> bytes:
    """Container bytes with a valid checksum around any header and data."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    head = PREAMBLE.pack(b"MLCTENS\0", version, flags, len(h) if header_len is None else header_len) + h
    head += bytes(-len(head) % 64)
    body = head + data
    return body + hashlib.sha256(body).digest()


def split(buf: bytes) -> tuple[dict, bytes]:
    """(header, data section) of a valid container."""
    _, _, _, hlen = PREAMBLE.unpack_from(buf)
    start = -(-(PREAMBLE.size + hlen) // 64) * 64
    return json.loads(buf[PREAMBLE.size:PREAMBLE.size + hlen]), buf[start:-32]


def _byte_mutation(b: bytes, r) -> bytes:
    b = bytearray(b)
    kind = r.integers(6)
    if kind == 0:
        return bytes(b[:r.integers(len(b))])
    if kind == 1:
        for _ in range(r.integers(1, 5)):
            b[r.integers(len(b))] ^= 1 << int(r.integers(8))
        return bytes(b)
    if kind == 2:
        other = seeds()[r.integers(len(seeds()))]
        i, j = sorted(r.integers(len(other), size=2))
        at = r.integers(len(b))
        return bytes(b[:at] + other[i:j] + b[at + (j - i):])
    if kind == 3:
        i = r.integers(len(b))
        return bytes(b[:i] + b[i + r.integers(1, 64):])
    if kind == 4:
        i = r.integers(len(b) + 1)
        return bytes(b[:i] + r.integers(256, size=r.integers(1, 16)).astype(np.uint8).tobytes() + b[i:])
    return bytes(b) + r.integers(256, size=r.integers(1, 100)).astype(np.uint8).tobytes()


def pick(r, seq):
    """One element of ``seq``, as the Python object it is (numpy's choice would convert it)."""
    return seq[int(r.integers(len(seq)))]


def _header_mutation(header: dict, data: bytes, r) -> tuple[object, bytes]:
    entries = header.get("tensors")
    entries = entries if isinstance(entries, list) and all(isinstance(e, dict) for e in entries) else []
    kind = r.integers(12)
    if kind < 5 and entries:   # one field of one entry
        e = entries[r.integers(len(entries))]
        key = str(pick(r, ["dtype", "shape", "offset", "nbytes", "name"]))
        if key == "dtype":
            e[key] = str(pick(r, ["<f4", "<f8", ">f4", "|b1", "<i8", "<u2", "<c8", "|O", "|V8", "<M8", "f4", "<f2",
                                   "|u1", "<U2"]))
        elif key == "shape" and e["shape"] and r.random() < 0.6:
            e["shape"][r.integers(len(e["shape"]))] = pick(r, INTERESTING)
        elif key == "shape":
            e["shape"] = [] if r.random() < 0.3 else e["shape"] + [pick(r, [0, 1, 2])]
        else:
            e[key] = pick(r, INTERESTING + [f"{e.get('name')}x", "w", "b"])
    elif kind == 5 and entries:   # drop, duplicate or reorder entries
        op = r.integers(3)
        if op == 0:
            entries.pop(r.integers(len(entries)))
        elif op == 1:
            entries.append(dict(entries[r.integers(len(entries))]))
        else:
            entries.reverse()
    elif kind == 6:
        header["data_nbytes"] = pick(r, INTERESTING + [len(data) + 64, max(len(data) - 64, 0)])
    elif kind == 7:
        header[str(pick(r, ["tensors", "meta", "data_nbytes"]))] = pick(r, [None, 5, "x", [], {}])
    elif kind == 8:
        n = pick(r, [10, 250, 260, 2000, 100000])   # written by hand: json.dumps would recurse
        rest = {k: v for k, v in header.items() if k != "meta"}
        return json.dumps(rest)[:-1].encode() + b', "meta": {"deep": ' + b"[" * n + b"]" * n + b"}}", data
    elif kind == 9:   # the data itself (checksum kept valid): different values, or a different length
        d = bytearray(data)
        if d and r.random() < 0.7:
            d[r.integers(len(d))] ^= 0xFF
        else:
            d += bytes(int(pick(r, [1, 64])))
        data = bytes(d)
    elif kind == 10:   # not JSON, or not an object
        return bytes(pick(r, [b"{", b"[]", b"null", b"\xff\xfe{}", b'{"a": NaN}', b"1e999", b"{}"])), data
    elif header:
        del header[pick(r, list(header))]
    return header, data


def mutant(seed: int, i: int) -> bytes:
    r = np.random.default_rng([seed, i])
    buf = seeds()[r.integers(len(seeds()))]
    kind = r.integers(4)
    if kind == 0:
        return _byte_mutation(buf, r)
    header, data = split(buf)
    if kind == 1:   # the preamble
        field = r.integers(3)
        h = json.dumps(header).encode()
        if field == 0:
            return forge(h, data, version=int(pick(r, [0, 2, 2 ** 32 - 1])))
        if field == 1:
            return forge(h, data, flags=int(pick(r, [1, 2 ** 31])))
        return forge(h, data, header_len=int(pick(r, [0, len(h) - 1, len(h) + 1, 2 ** 40, 2 ** 64 - 1])))
    for _ in range(r.integers(1, 3)):
        header, data = _header_mutation(header, data, r)
        if isinstance(header, bytes):
            break
    return forge(header, data)


def _independent_read(buf: bytes) -> dict:
    """The tensors the bytes describe, read by the documented layout (not by the reader)."""
    header, data = split(buf)
    out = {}
    for e in header["tensors"]:
        dt = np.dtype(e["dtype"])
        raw = data[e["offset"]:e["offset"] + e["nbytes"]]
        out[e["name"]] = np.frombuffer(raw, dt).reshape(e["shape"]).astype(dt.newbyteorder("="))
    return out, header["meta"]


def check(buf: bytes) -> str:
    """'refused' or 'loaded'; raises AssertionError describing a failure."""
    from mlc.runtime.params import ParamsFormatError, decode, encode
    try:
        tensors, meta = decode(buf, "mutant")
    except ParamsFormatError:
        return "refused"
    except Exception as e:   # noqa: BLE001 -- what this fuzzer looks for
        raise AssertionError(f"decode raised {type(e).__name__}: {e}") from e
    want, want_meta = _independent_read(buf)
    if list(tensors) != list(want) or meta != want_meta:
        raise AssertionError(f"loaded names {list(tensors)} / meta {meta!r}, the file says {list(want)} / {want_meta!r}")
    for name, a in tensors.items():
        b = want[name]
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            raise AssertionError(f"tensor {name!r}: loaded {a.dtype}{a.shape}, the file says {b.dtype}{b.shape}")
        if not a.flags.writeable or not a.flags.owndata and a.base is None:
            raise AssertionError(f"tensor {name!r} is not an independent writable array")
    again, meta2 = decode(encode(tensors, meta))
    if list(again) != list(tensors) or meta2 != meta or any(
            again[k].tobytes() != tensors[k].tobytes() or again[k].dtype != tensors[k].dtype for k in tensors):
        raise AssertionError("what loaded does not encode and decode to itself")
    return "loaded"


def fuzz(seed: int, iterations: int) -> FuzzResult:
    result = FuzzResult("params_files")
    for i in range(iterations):
        buf = mutant(seed, i)
        result.cases += 1
        try:
            outcome = check(buf)
        except AssertionError as e:
            result.fail(f"seed {seed} case {i} (params_files.mutant({seed}, {i})): {str(e)[:400]}")
            continue
        result.notes[outcome] = result.notes.get(outcome, 0) + 1
    return result
