"""A safe tensor container: named numpy arrays plus a JSON "meta" dict, no pickle.

The byte layout (``docs/formats.md`` has the table)::

    magic  b"MLCTENS\\0"        8 bytes
    version (1)                u32 little-endian
    flags (0)                  u32 little-endian
    header length              u64 little-endian
    header                     UTF-8 JSON: {"tensors": [...], "data_nbytes": N, "meta": {...}}
    zero padding               so the data section starts at a multiple of 64
    data section               each tensor at a 64-aligned offset, zero padding between
    trailer                    SHA-256 of every byte before it (32 bytes)

Reading never executes anything from the file: the header is JSON, the data is
raw little-endian bytes of a short list of plain dtypes, and every offset is
checked against the data section before it is used. ``encode``/``decode`` work
on bytes (a later feature embeds the blob into shared libraries);
``write_tensors``/``read_tensors`` are thin file wrappers, and the write is
atomic: a temporary file in the same folder, fsync, then ``os.replace``.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import secrets
import struct
from collections.abc import Iterator

import numpy as np

MAGIC = b"MLCTENS\0"
VERSION = 1
ALIGN = 64
_PREAMBLE = struct.Struct("<8sIIQ")   # magic, version, flags, header length
_TRAILER = 32                         # SHA-256 digest

# How deeply the header's JSON may nest: far more than any container mlc writes needs,
# and few enough levels that reading it never exhausts Python's stack.
MAX_DEPTH = 256

# Little-endian numpy type strings the format stores ("|" where byte order does not apply).
DTYPES = ("|b1", "|i1", "<i2", "<i4", "<i8", "|u1", "<f2", "<f4", "<f8", "<u2", "<u4", "<u8")


class ParamsFormatError(ValueError):
    """A file or buffer that is not a valid mlc tensor container."""


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _storage_dtype(dtype: np.dtype) -> np.dtype | None:
    """The little-endian dtype an array of ``dtype`` is stored as, or None if unsupported."""
    le = dtype.newbyteorder("<")
    return le if le.str in DTYPES else None


def layout(tensors: dict) -> tuple[list[np.ndarray], list[dict], int]:
    """(the arrays as stored, their header entries, the data section's length)."""
    if not isinstance(tensors, dict):
        raise TypeError(f"tensors must be a dict of name -> array, got {type(tensors).__name__}")
    arrays, entries, offset = [], [], 0
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be strings, got {name!r}")
        a = np.asarray(value)
        dt = _storage_dtype(a.dtype)
        if dt is None:
            raise ValueError(f"tensor {name!r}: unsupported dtype {a.dtype} "
                             "(supported: bool, int8/16/32/64, uint8/16/32/64, float16/32/64)")
        a = np.asarray(a, dtype=dt, order="C")
        offset = _align(offset)
        entries.append({"name": name, "dtype": dt.str, "shape": list(a.shape), "offset": offset,
                        "nbytes": a.nbytes})
        arrays.append(a)
        offset += a.nbytes
    return arrays, entries, offset


def _check_meta(meta) -> None:
    """JSON would write a non-string dict key as a string (reading back another key) and
    a deep structure could not be read back: both are refused, naming where."""
    stack = [(meta, "meta", 1)]
    while stack:
        v, path, depth = stack.pop()
        if not isinstance(v, (dict, list, tuple)):
            continue
        if depth > MAX_DEPTH - 1:   # the header object itself is one level
            raise ValueError(f"{path} nests deeper than {MAX_DEPTH - 1} levels, more than the format allows")
        if isinstance(v, dict):
            for k, c in v.items():
                if not isinstance(k, str):
                    raise TypeError(f"meta dict keys must be strings, got {k!r} at {path}")
                stack.append((c, f"{path}/{k}", depth + 1))
        else:
            stack.extend((c, f"{path}/{i}", depth + 1) for i, c in enumerate(v))


def _depth(v) -> int:
    """How deeply a parsed JSON value nests (a scalar is 0), without recursion."""
    deepest, stack = 0, [(v, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, dict):
            x = list(x.values())
        if isinstance(x, list):
            deepest = max(deepest, d)
            stack.extend((c, d + 1) for c in x)
    return deepest


def _header(entries: list[dict], data_nbytes: int, meta) -> bytes:
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    _check_meta(meta)
    try:   # strict JSON (no NaN/Infinity) so any JSON parser can read the header
        return json.dumps({"tensors": entries, "data_nbytes": data_nbytes, "meta": meta},
                          allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta must be strict-JSON serializable (no NaN/Infinity): {e}") from None


def table_prefix(tensors: dict) -> bytes:
    """The header's bytes before the ``meta`` value: equal for every container of these
    names, dtypes and shapes in this order, whatever the values and the meta. An
    exported model library compares a weights file's header with it."""
    _, entries, n = layout(tensors)
    header = _header(entries, n, {})
    assert header.endswith(b"{}}")
    return header[:-3]


def _chunks(tensors: dict, meta: dict | None) -> Iterator:
    """The encoded container as a sequence of buffers (the trailer last), so a file
    can be written without first joining every tensor into one bytes object."""
    arrays, entries, offset = layout(tensors)
    header = _header(entries, offset, {} if meta is None else meta)

    h = hashlib.sha256()

    def emit(buf):
        h.update(buf)
        return buf

    start = _PREAMBLE.size + len(header)
    yield emit(_PREAMBLE.pack(MAGIC, VERSION, 0, len(header)) + header + bytes(_align(start) - start))
    pos = 0
    for e, a in zip(entries, arrays):
        if e["offset"] > pos:
            yield emit(bytes(e["offset"] - pos))
        yield emit(a.reshape(-1).view(np.uint8))   # raw bytes, no copy
        pos = e["offset"] + e["nbytes"]
    yield h.digest()


def encode(tensors: dict[str, np.ndarray], meta: dict | None = None) -> bytes:
    """The container bytes for ``tensors`` (name -> array, order kept) and a JSON ``meta`` dict."""
    return b"".join(_chunks(tensors, meta))


def decode(buf, source: str = "<bytes>") -> tuple[dict[str, np.ndarray], dict]:
    """(tensors, meta) from container bytes. Arrays are independent, writable copies in
    native byte order. Raises ``ParamsFormatError`` naming ``source`` on any defect."""
    buf = memoryview(buf).cast("B")
    size = len(buf)

    def fail(msg):
        return ParamsFormatError(f"{source}: {msg}")

    if size == 0:
        raise fail("empty (0 bytes): not an mlc tensor file")
    if bytes(buf[:len(MAGIC)]) != MAGIC[:min(size, len(MAGIC))]:
        raise fail("not an mlc tensor file (bad magic)")
    if size < _PREAMBLE.size:
        raise fail(f"truncated: expected at least {_PREAMBLE.size} bytes, got {size}")
    _, version, flags, header_len = _PREAMBLE.unpack_from(buf)
    if version != VERSION:
        raise fail(f"unsupported format version {version} (this reader supports {VERSION})")
    if flags != 0:
        raise fail(f"unsupported flags 0x{flags:x} (format version {VERSION} defines none)")
    minimum = _PREAMBLE.size + header_len + _TRAILER
    if size < minimum:
        raise fail(f"truncated: the header length says at least {minimum} bytes, got {size}")

    header_bytes = bytes(buf[_PREAMBLE.size:_PREAMBLE.size + header_len])
    header, problem = _parse_header(header_bytes)   # (None, why) if not parseable
    data_start = _align(_PREAMBLE.size + header_len)
    if hashlib.sha256(buf[:size - _TRAILER]).digest() != bytes(buf[size - _TRAILER:]):
        # A truncated file fails the checksum too; its header says how long it should be.
        expected = None
        if header is not None and _is_count(header.get("data_nbytes")):
            expected = data_start + header["data_nbytes"] + _TRAILER
        if expected is not None and expected != size:
            what = "truncated" if size < expected else "has trailing bytes"
            raise fail(f"{what}: expected {expected} bytes, got {size}")
        raise fail("corrupted: SHA-256 checksum mismatch")

    # The checksum holds, so what follows catches files from a faulty writer, not bit rot.
    if header is None:
        raise fail(f"malformed header: {problem}")
    meta, entries, data_nbytes = header.get("meta"), header.get("tensors"), header.get("data_nbytes")
    if not isinstance(meta, dict) or not isinstance(entries, list) or not _is_count(data_nbytes):
        raise fail('malformed header: needs "tensors" (list), "data_nbytes" (int) and "meta" (object)')
    if data_start + data_nbytes + _TRAILER != size:
        raise fail(f"malformed header: data_nbytes={data_nbytes} does not match the file size {size}")

    tensors: dict[str, np.ndarray] = {}
    for i, e in enumerate(entries):
        name = e.get("name") if isinstance(e, dict) else None
        if not isinstance(name, str):
            raise fail(f"malformed header: tensor entry {i} has no string name")
        if name in tensors:
            raise fail(f"malformed header: duplicate tensor name {name!r}")
        dtype, shape, offset, nbytes = (e.get(k) for k in ("dtype", "shape", "offset", "nbytes"))
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise fail(f"tensor {name!r}: unsupported dtype {dtype!r} (supported: {', '.join(DTYPES)})")
        if not (isinstance(shape, list) and all(_is_count(d) for d in shape)
                and _is_count(offset) and _is_count(nbytes)):
            raise fail(f"malformed header: tensor {name!r} needs a shape of non-negative ints, "
                       "an int offset and an int nbytes")
        dt = np.dtype(dtype)
        count = math.prod(shape)
        if count * dt.itemsize != nbytes:
            raise fail(f"malformed header: tensor {name!r} of shape {shape} and dtype {dtype} "
                       f"needs {count * dt.itemsize} bytes, header says {nbytes}")
        if offset % ALIGN:
            raise fail(f"malformed header: tensor {name!r} offset {offset} is not {ALIGN}-byte aligned")
        if offset + nbytes > data_nbytes:
            raise fail(f"tensor {name!r} extends outside the data section "
                       f"(bytes {offset}..{offset + nbytes} of {data_nbytes})")
        raw = np.frombuffer(buf, dtype=dt, count=count, offset=data_start + offset)
        try:
            raw = raw.reshape(tuple(shape))
        except ValueError as e:   # an empty tensor may still name dimensions numpy cannot describe
            raise fail(f"malformed header: tensor {name!r} has shape {shape}, which numpy cannot hold ({e})") from None
        tensors[name] = raw.astype(dt.newbyteorder("="))   # astype copies
    return tensors, meta


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _parse_header(b: bytes) -> tuple[dict | None, str]:
    try:
        h = json.loads(b.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, "not a UTF-8 JSON object"
    except RecursionError:   # deeper than Python's parser can go, so deeper than MAX_DEPTH
        return None, f"JSON nested deeper than {MAX_DEPTH} levels"
    if not isinstance(h, dict):
        return None, "not a UTF-8 JSON object"
    if _depth(h) > MAX_DEPTH:
        return None, f"JSON nested deeper than {MAX_DEPTH} levels"
    return h, ""


def write_tensors(path, tensors: dict[str, np.ndarray], meta: dict | None = None) -> None:
    """Write ``tensors`` and ``meta`` to ``path`` atomically: an existing file is either kept
    whole or replaced whole, never left half-written."""
    chunks = _chunks(tensors, meta)
    first = next(chunks)   # validates tensors and meta before any file is touched
    write_atomic(path, itertools.chain([first], chunks))


def write_atomic(path, chunks) -> None:
    """Write the buffers ``chunks`` to ``path`` atomically: a temporary file in the same
    folder, flushed and fsynced, then ``os.replace``d over ``path`` (and the folder
    fsynced), so readers see the old file or the new one, never a partial one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # os.open with mode 0o666 lets the umask decide permissions, like a plain open().
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    """Make the rename itself durable (POSIX); not possible or needed everywhere."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_tensors(path) -> tuple[dict[str, np.ndarray], dict]:
    """(tensors, meta) from a file written by ``write_tensors``; ``ParamsFormatError`` names
    the file and the defect if it is not a valid container."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        buf = f.read()
    return decode(buf, source=path)
