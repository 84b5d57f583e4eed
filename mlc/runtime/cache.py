"""On-disk cache of compiled object code, keyed by a content hash.

An entry is ``MAGIC + sha256(payload) + payload``; a truncated or altered entry
fails the check, is removed, and is rebuilt -- never loaded. Writes go through a
temporary file and an atomic rename, so concurrent processes never see half an
entry. The folder is ``$MLC_CACHE_DIR`` (default ``~/.cache/mlc``);
``MLC_CACHE_DIR=off`` disables the cache.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings

MAGIC = b"MLCOBJ01"
_HEADER = len(MAGIC) + 32


def cache_dir() -> str | None:
    d = os.environ.get("MLC_CACHE_DIR")
    if d is not None and d.strip().lower() in ("off", "0", "none", ""):
        return None
    return d or os.path.join(os.path.expanduser("~"), ".cache", "mlc")


def key_of(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def _path(key: str) -> str | None:
    d = cache_dir()
    return os.path.join(d, key[:2], key + ".o") if d else None


def load(key: str) -> bytes | None:
    path = _path(key)
    if path is None or not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError:
        return None
    payload = blob[_HEADER:]
    if blob[:len(MAGIC)] != MAGIC or hashlib.sha256(payload).digest() != blob[len(MAGIC):_HEADER]:
        warnings.warn(f"mlc cache entry {path} is corrupted; it is removed and rebuilt", RuntimeWarning)
        try:
            os.remove(path)
        except OSError:
            pass
        return None
    return payload


def store(key: str, payload: bytes) -> None:
    path = _path(key)
    if path is None:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + hashlib.sha256(payload).digest() + payload)
        os.replace(tmp, path)
    except OSError as e:   # a read-only or full disk costs the cache, not the compile
        warnings.warn(f"mlc could not write its cache entry {path}: {e}", RuntimeWarning)


def entry_path(key: str) -> str | None:
    return _path(key)
