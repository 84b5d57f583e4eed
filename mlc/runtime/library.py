"""Model libraries exported ahead of time: the trailer that makes them verifiable, and
``mlc.load`` that runs one from Python through its C API.

An exported library (``mlc compile MODEL -o model.so``, ``Executable.export``) is an
ordinary ELF shared library followed by a trailer (``docs/formats.md``)::

    ELF shared library           the model's code, the C API (runtime.c), embedded weights
    metadata                     UTF-8 JSON: signature, target, versions, sizes
    trailer version (1)          u32 little-endian
    metadata length              u64 little-endian
    SHA-256                      of every byte before it
    magic b"MLC_LIB\\0"           8 bytes

The loader never dlopens a file whose checksum fails or that was built for another
architecture: a damaged library could crash the process while being mapped.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import struct
import weakref

from ..ir.types import TensorType, dtype as to_dtype
from ..tree import TreeDef
from .executable import Executable, Signature

MAGIC = b"MLC_LIB\0"
TRAILER_VERSION = 1
ABI_VERSION = 1
_TAIL = struct.Struct("<IQ32s8s")   # trailer version, metadata length, SHA-256, magic
SKIP_LIBRARY_CHECK = 1              # mlc_model_create flag: this loader verified the file itself

# mlc_dtype codes of the C API (mlc_model.h), by mlc dtype name
DTYPE_CODES = {"bool": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "uint8": 6, "float16": 7, "float32": 8,
               "float64": 9}


class LibraryError(ValueError):
    """A file that is not a valid mlc model library, or one that cannot run here."""


def trailer(metadata: dict, digest_of_prefix: "hashlib._Hash") -> bytes:
    """The bytes to append to a linked library whose bytes so far are hashed in
    ``digest_of_prefix`` (updated in place)."""
    meta = json.dumps(metadata, allow_nan=False, ensure_ascii=False).encode("utf-8")
    head = meta + struct.pack("<IQ", TRAILER_VERSION, len(meta))
    digest_of_prefix.update(head)
    return head + digest_of_prefix.digest() + MAGIC


def read_metadata(path, verify: bool = True) -> dict:
    """The metadata of a model library, after checking its trailer and (``verify``) the
    SHA-256 of the whole file; ``LibraryError`` says what is wrong."""
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise LibraryError(f"cannot open model library {path}: {e.strerror}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size < _TAIL.size:
            raise LibraryError(f"{path}: not an mlc model library ({size} bytes, too short)")
        f.seek(size - _TAIL.size)
        version, meta_len, digest, magic = _TAIL.unpack(f.read(_TAIL.size))
        if magic != MAGIC:
            with open(path, "rb") as g:
                elf = g.read(4) == b"\x7fELF"
            raise LibraryError(f"{path}: no mlc trailer: " + (
                "the library was modified after export (stripped?) or not written by mlc" if elf else
                "not an mlc model library"))
        if version != TRAILER_VERSION:
            raise LibraryError(f"{path}: unsupported trailer version {version} (this mlc reads {TRAILER_VERSION})")
        if meta_len > size - _TAIL.size:
            raise LibraryError(f"{path}: corrupted trailer (metadata length {meta_len} exceeds the file)")
        if verify:
            f.seek(0)
            h = hashlib.sha256()
            left = size - 40   # the digest and the magic are not hashed
            while left:
                chunk = f.read(min(left, 1 << 22))
                if not chunk:
                    raise LibraryError(f"{path}: short read while verifying")
                h.update(chunk)
                left -= len(chunk)
            if h.digest() != digest:
                raise LibraryError(f"{path} is corrupted: SHA-256 checksum mismatch (damaged or modified after "
                                   "export); export it again")
        f.seek(size - _TAIL.size - meta_len)
        raw = f.read(meta_len)
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise LibraryError(f"{path}: corrupted metadata (not UTF-8 JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != "mlc-model-library":
        raise LibraryError(f"{path}: the trailer's metadata is not an mlc model description")
    return meta


def _types(entries) -> list[TensorType]:
    return [TensorType(tuple(e["shape"]), to_dtype(e["dtype"])) for e in entries]


class _LibraryCode:
    """The C API of a loaded library in the shape ``Executable`` calls: ``entry`` runs
    through ``mlc_model_run_unchecked`` (the Executable checked the arguments), with the
    handle's own weights and a workspace from its pool."""

    needs_workspace = False

    def __init__(self, path: str, params, prefix: str = "mlc"):
        self.path = path
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_LOCAL | os.RTLD_NOW)
        except OSError as e:
            raise LibraryError(f"cannot load model library {path}: {e}") from None
        fns = {}
        for name, res, args in (("abi_version", ctypes.c_int, []), ("last_error", ctypes.c_char_p, []),
                                ("model_create", ctypes.c_int, [ctypes.c_char_p, ctypes.c_uint,
                                                                ctypes.POINTER(ctypes.c_void_p)]),
                                ("model_destroy", None, [ctypes.c_void_p]),
                                ("model_run_unchecked", ctypes.c_int, [ctypes.c_void_p] * 3)):
            try:
                fn = getattr(lib, f"{prefix}_{name}")   # mlc_model_create, or <prefix>_model_create
            except AttributeError:
                raise LibraryError(f"{path}: not an mlc model library (no {prefix}_{name})") from None
            fn.restype, fn.argtypes = res, args
            fns[name] = fn
        if fns["abi_version"]() != ABI_VERSION:
            raise LibraryError(f"{path}: C ABI version {fns['abi_version']()}, this mlc loads {ABI_VERSION}")
        self.lib = lib
        self._last_error = fns["last_error"]
        handle = ctypes.c_void_p()
        arg = None if params is None else os.fsencode(params)
        if fns["model_create"](arg, SKIP_LIBRARY_CHECK, ctypes.byref(handle)) != 0:
            raise LibraryError(self._last_error().decode("utf-8", "replace"))
        self.handle = handle.value
        self._run = fns["model_run_unchecked"]
        self._finalizer = weakref.finalize(self, fns["model_destroy"], handle.value)

    def entry(self, inputs, outputs, _params, _workspace) -> None:
        if self._run(self.handle, inputs, outputs):
            raise RuntimeError(f"{self.path}: {self._last_error().decode('utf-8', 'replace')}")


def _check_runs_here(path: str, meta: dict) -> None:
    from ..codegen.cross import elf_machine, machine_of_triple
    from ..target import Target
    try:
        machine = elf_machine(path)
    except ValueError as e:
        raise LibraryError(str(e)) from None
    host = Target.get("host").triple
    if machine != machine_of_triple(host):
        raise LibraryError(f"{path} is built for {machine} ({meta['target']['triple']}), this machine is "
                           f"{host}: copy it to such a device and load it there")


def load(path, params=None) -> Executable:
    """Load a model library exported by mlc and return it as a callable with the same
    argument checks as ``mlc.compile``'s result (names, shapes, dtypes, pytrees).

    The file is verified (SHA-256, architecture) before it is loaded; ``params``: the
    weights file of a library exported with ``params="external"`` (default: the file
    named at export, next to the library)."""
    path = os.path.abspath(os.fspath(path))
    meta = read_metadata(path)
    if meta.get("abi_version") != ABI_VERSION:
        raise LibraryError(f"{path}: C ABI version {meta.get('abi_version')}, this mlc loads {ABI_VERSION}")
    _check_runs_here(path, meta)
    if params is not None and meta["params"]["storage"] != "external":
        raise LibraryError(f"{path} embeds its weights; params={os.fspath(params)!r} would be ignored")
    code = _LibraryCode(path, params, meta.get("prefix", "mlc"))
    sig = meta.get("signature")
    signature = None
    if sig is not None:
        signature = Signature(TreeDef.from_json(sig["in_tree"]), sig["static"], TreeDef.from_json(sig["out_tree"]))
    exe = Executable(meta["name"], [e["name"] for e in meta["inputs"]], _types(meta["inputs"]),
                     _types(meta["outputs"]), [], meta["workspace_bytes"], code, meta["single_output"],
                     ir_text=_no_ir(path), stats=dict(meta.get("stats", {})), signature=signature)
    exe.metadata = meta   # what the library says of itself (mlc_metadata())
    return exe


def _no_ir(path: str):
    def text(level: str) -> str:
        raise ValueError(f"{path} is a compiled library: its IR is not stored; print it from the model before "
                         "export (exe.ir(level))")
    return text


def describe(path) -> str:
    """What ``mlc inspect model.so`` prints: signature, target, versions, sizes, and
    whether the file and its weights verify."""
    path = os.fspath(path)
    meta = read_metadata(path)
    from ..codegen.cross import elf_header
    st = meta.get("stats", {})

    def sig(entries):
        return "\n".join(f"  {e['name']}: {e['dtype']}{list(e['shape'])}" for e in entries)

    t = meta["target"]
    p = meta["params"]
    lines = [f"{path}: mlc model library '{meta['name']}' ({elf_header(path)}, {os.path.getsize(path)} bytes, "
             "SHA-256 verified)",
             f"inputs:\n{sig(meta['inputs'])}", f"outputs:\n{sig(meta['outputs'])}",
             f"target:      {t['name']} ({t['triple']}, cpu {t['cpu']}, {t['cores']} cores)",
             f"mlc version: {meta['mlc_version']} (C ABI {meta['abi_version']}), exported {meta.get('created', '?')}",
             f"weights:     {p['count']} tensors, {_size(p['nbytes'])}, " + (
                 "embedded" if p["storage"] == "embedded" else f"external: {_external_status(path, p)}"),
             f"kernels:     {st.get('kernels', '?')}" + (f" ({st['tuned_kernels']} tuned)" if st.get("tuned_kernels")
                                                         else ""),
             f"workspace:   {_size(meta['workspace_bytes'])} per concurrent run",
             f"C functions: {meta.get('prefix', 'mlc')}_model_create, {meta.get('prefix', 'mlc')}_model_run, ... "
             f"(header {os.path.splitext(os.path.basename(path))[0]}.h)"]
    return "\n".join(lines)


def _external_status(path: str, p: dict) -> str:
    from .params import ParamsFormatError, read_tensors
    file = os.path.join(os.path.dirname(os.path.abspath(path)), p["file"])
    if not os.path.exists(file):
        return f"{p['file']} (MISSING next to the library)"
    try:
        tensors, _ = read_tensors(file)
    except ParamsFormatError as e:
        return f"{p['file']} (INVALID: {e})"
    table = [[k, v.dtype.str, list(v.shape)] for k, v in tensors.items()]
    if table != p["table"]:
        return f"{p['file']} (MISMATCH: written for a different model)"
    return f"{p['file']} (verified)"


def _size(n: int) -> str:
    return f"{n / 2**20:.2f} MiB ({n} bytes)"
