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

The loader copies the file into a folder of its own (one per process, mode 0700),
verifies the copy and maps that copy, named by its SHA-256: what runs is exactly what
was verified, even if the file is replaced meanwhile, and a library exported again at
the same path is a new file to the dynamic loader. Nothing is mapped whose checksum,
metadata, architecture or (``public_key``) signature fails; after mapping, the code's
own tables must agree with the metadata.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import json
import mmap
import os
import shutil
import stat
import struct
import tempfile
import threading
import weakref

from ..ir.types import TensorType, dtype as to_dtype
from ..tree import TreeDef
from . import signing
from .executable import PROFILE_MAX_THREADS, Executable, Signature

MAGIC = b"MLC_LIB\0"
TRAILER_VERSION = 1
ABI_VERSION = 1
_TAIL = struct.Struct("<IQ32s8s")   # trailer version, metadata length, SHA-256, magic
SKIP_LIBRARY_CHECK = 1              # mlc_model_create flag: this loader verified the file itself

# mlc_dtype codes of the C API (mlc_model.h), by mlc dtype name
DTYPE_CODES = {"bool": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "uint8": 6, "float16": 7, "float32": 8,
               "float64": 9, "uint16": 10, "uint32": 11, "uint64": 12}
_DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}


class LibraryError(ValueError):
    """A file that is not a valid mlc model library, or one that cannot run here."""


def trailer(metadata: dict, digest_of_prefix: "hashlib._Hash") -> bytes:
    """The bytes to append to a linked library whose bytes so far are hashed in
    ``digest_of_prefix`` (updated in place)."""
    meta = json.dumps(metadata, allow_nan=False, ensure_ascii=False).encode("utf-8")
    head = meta + struct.pack("<IQ", TRAILER_VERSION, len(meta))
    digest_of_prefix.update(head)
    return head + digest_of_prefix.digest() + MAGIC


# ----------------------------------------------------------------------------- the private copy

_LOCK = threading.Lock()   # one load at a time: a copy is renamed, mapped and removed under it
_DIR_LOCK = threading.Lock()
_PRIVATE: tuple[int, str] | None = None   # (pid, folder): a forked child makes its own


def _private_dir() -> str:
    global _PRIVATE
    with _DIR_LOCK:
        if _PRIVATE is None or _PRIVATE[0] != os.getpid():
            folder = tempfile.mkdtemp(prefix="mlc-lib-")   # mode 0700: no other user can swap a copy
            atexit.register(_remove_private_dir, os.getpid(), folder)
            _PRIVATE = (os.getpid(), folder)
        return _PRIVATE[1]


def _new_locks() -> None:   # a child forked while a thread held one starts with it free
    global _LOCK, _DIR_LOCK
    _LOCK, _DIR_LOCK = threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_new_locks)


def _remove_private_dir(pid: int, folder: str) -> None:
    if os.getpid() == pid:
        shutil.rmtree(folder, ignore_errors=True)


class _Copy:
    """A file copied into the private folder: ``data`` its mapped bytes, ``path`` where it is."""

    def __init__(self, path: str, data):
        self.path, self.data = path, data

    def rename(self, name: str) -> None:
        new = os.path.join(os.path.dirname(self.path), name)
        os.replace(self.path, new)
        self.path = new


@contextlib.contextmanager
def _private_copy(path: str, what: str = "model library"):
    """Copy ``path`` into this process's private folder and map the copy read-only; the
    copy is removed on exit (a library mapped from it stays mapped)."""
    fd, tmp = tempfile.mkstemp(dir=_private_dir())
    copy = _Copy(tmp, b"")
    try:
        with os.fdopen(fd, "wb") as dst:
            try:   # non-blocking: opening a FIFO must not wait for a writer
                src = os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb")
            except OSError as e:
                raise LibraryError(f"cannot open {what} {path}: {e.strerror}") from None
            with src:
                if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):   # a FIFO or a device would never end
                    raise LibraryError(f"{path}: not a regular file")
                try:
                    shutil.copyfileobj(src, dst, 1 << 22)
                except OSError as e:
                    raise LibraryError(f"cannot copy {path} into {os.path.dirname(tmp)} to verify and load it: "
                                       f"{e.strerror}") from None
        with open(tmp, "rb") as f:
            if os.fstat(f.fileno()).st_size:
                copy.data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            yield copy
        finally:
            if isinstance(copy.data, mmap.mmap):
                copy.data.close()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(copy.path)


# ----------------------------------------------------------------------------- the trailer

def _parse(data, path: str, verify: bool = True) -> tuple[dict, bytes]:
    """The metadata (and its bytes) of the library whose bytes are ``data``, after
    checking its trailer and (``verify``) the SHA-256 and that the metadata is the copy
    compiled into the code."""
    size = len(data)
    if size < _TAIL.size:
        raise LibraryError(f"{path}: not an mlc model library ({size} bytes, too short)")
    version, meta_len, digest, magic = _TAIL.unpack_from(data, size - _TAIL.size)
    if magic != MAGIC:
        raise LibraryError(f"{path}: no mlc trailer: " + (
            "the library was modified after export (stripped?) or not written by mlc" if data[:4] == b"\x7fELF" else
            "not an mlc model library"))
    if version != TRAILER_VERSION:
        raise LibraryError(f"{path}: unsupported trailer version {version} (this mlc reads {TRAILER_VERSION})")
    if meta_len > size - _TAIL.size:
        raise LibraryError(f"{path}: corrupted trailer (metadata length {meta_len} exceeds the file)")
    if verify:
        with memoryview(data) as view, view[:size - 40] as hashed:   # the digest and the magic are not hashed
            ok = hashlib.sha256(hashed).digest() == digest
        if not ok:
            raise LibraryError(f"{path} is corrupted: SHA-256 checksum mismatch (damaged or modified after "
                               "export); export it again")
    start = size - _TAIL.size - meta_len
    raw = bytes(data[start:size - _TAIL.size])
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise LibraryError(f"{path}: corrupted metadata (not UTF-8 JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != "mlc-model-library":
        raise LibraryError(f"{path}: the trailer's metadata is not an mlc model description")
    # mlc compiles the same metadata into the code (mlc_metadata()): a trailer edited and
    # re-hashed would describe buffers the code does not use
    if verify and data.find(raw, 0, start) < 0:
        raise LibraryError(f"{path}: the trailer's metadata is not the one compiled into the library's code (the "
                           "trailer was edited and its checksum recomputed); export the model again")
    _check_schema(meta, path)
    return meta, raw


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_schema(meta: dict, path: str) -> None:
    """The fields the loader and ``mlc inspect`` use have the types mlc writes."""
    def bad(what):
        raise LibraryError(f"{path}: malformed metadata: {what}")

    for key, kind in (("name", str), ("abi_version", int), ("workspace_bytes", int), ("single_output", bool),
                      ("target", dict), ("params", dict), ("mlc_version", str)):
        if not isinstance(meta.get(key), kind):
            bad(f"'{key}' is missing or not a {kind.__name__}")
    for key in ("inputs", "outputs"):
        entries = meta.get(key)
        if not isinstance(entries, list):
            bad(f"'{key}' is not a list")
        for e in entries:
            if not (isinstance(e, dict) and isinstance(e.get("name"), str) and e.get("dtype") in DTYPE_CODES
                    and isinstance(e.get("shape"), list) and all(_is_int(d) and d >= 0 for d in e["shape"])
                    and _is_int(e.get("nbytes"))):
                bad(f"an entry of '{key}': {json.dumps(e)[:200]}")
    p = meta["params"]
    if p.get("storage") not in ("embedded", "external") or not (
            p["storage"] == "embedded" or isinstance(p.get("file"), str) and os.path.basename(p["file"]) == p["file"]):
        bad(f"'params': {json.dumps(p)[:200]}")
    if not isinstance(meta["target"].get("triple"), str):
        bad("the target has no triple")
    if not isinstance(meta.get("prefix", "mlc"), str) or not isinstance(meta.get("signature"), (dict, type(None))):
        bad("'prefix' or 'signature'")
    device = meta.get("device")
    if device is not None and not (isinstance(device, dict) and isinstance(device.get("arch"), str)
                                   and isinstance(device.get("kernels"), list)
                                   and isinstance(device.get("launches"), list)
                                   and all(isinstance(x, dict) for x in device["launches"])
                                   and isinstance(meta.get("host"), dict)
                                   and isinstance(meta["host"].get("triple"), str)):
        bad("'device' or 'host' (of a cuda model library)")


def read_metadata(path, verify: bool = True) -> dict:
    """The metadata of a model library, after checking its trailer and (``verify``) the
    SHA-256 of the whole file and that the metadata is the code's; ``LibraryError``
    says what is wrong."""
    path = os.fspath(path)
    with _private_copy(path) as copy:
        return _parse(copy.data, path, verify)[0]


def _check_signature(data, path: str, public_key) -> str:
    try:
        return signing.verify(data, path, public_key, signing.signature_path(path))
    except signing.SigningError as e:
        raise LibraryError(str(e)) from None


# ----------------------------------------------------------------------------- the code

class _TensorInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("ndim", ctypes.c_int32),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("nbytes", ctypes.c_size_t)]


_VOID = ctypes.c_void_p
_API = (("abi_version", ctypes.c_int, []), ("last_error", ctypes.c_char_p, []), ("metadata", ctypes.c_char_p, []),
        ("model_create", ctypes.c_int, [ctypes.c_char_p, ctypes.c_uint, ctypes.POINTER(_VOID)]),
        ("model_destroy", None, [_VOID]), ("model_run_unchecked", ctypes.c_int, [_VOID] * 3),
        ("model_num_inputs", ctypes.c_size_t, [_VOID]), ("model_num_outputs", ctypes.c_size_t, [_VOID]),
        ("model_input_info", ctypes.c_int, [_VOID, ctypes.c_size_t, ctypes.POINTER(_TensorInfo)]),
        ("model_output_info", ctypes.c_int, [_VOID, ctypes.c_size_t, ctypes.POINTER(_TensorInfo)]),
        ("model_workspace_size", ctypes.c_size_t, [_VOID]))


class _LibraryCode:
    """The C API of a loaded library in the shape ``Executable`` calls: ``entry`` runs
    through ``mlc_model_run_unchecked`` (the Executable checked the arguments), with the
    handle's own weights and a workspace from its pool. ``file``: what to map (the
    verified copy); ``path``: the library's name in messages."""

    needs_workspace = False

    def __init__(self, file: str, path: str, params: str | None, prefix: str = "mlc"):
        self.path = path
        from .threads import prepare_openmp
        prepare_openmp()   # before the library's libgomp loads and reads its wait policy
        try:
            lib = ctypes.CDLL(file, mode=os.RTLD_LOCAL | os.RTLD_NOW)
        except OSError as e:
            hint = (" (the private copy is in $TMPDIR, which must allow executable mappings: is it mounted noexec?)"
                    if "failed to map segment" in str(e) else "")
            raise LibraryError(f"cannot load model library {path}: {str(e).replace(file, path)}{hint}") from None
        fns = {}
        for name, res, args in _API:
            try:
                fn = getattr(lib, f"{prefix}_{name}")   # mlc_model_create, or <prefix>_model_create
            except AttributeError:
                raise LibraryError(f"{path}: not an mlc model library (no {prefix}_{name})") from None
            fn.restype, fn.argtypes = res, args
            fns[name] = fn
        if fns["abi_version"]() != ABI_VERSION:
            raise LibraryError(f"{path}: C ABI version {fns['abi_version']()}, this mlc loads {ABI_VERSION}")
        self.lib, self.fns = lib, fns
        self._last_error = fns["last_error"]
        handle = ctypes.c_void_p()
        arg = None if params is None else os.fsencode(params)
        if fns["model_create"](arg, SKIP_LIBRARY_CHECK, ctypes.byref(handle)) != 0:
            raise LibraryError(self._last_error().decode("utf-8", "replace"))
        self.handle = handle.value
        self._run = fns["model_run_unchecked"]
        # a library built before the profiling API has no such function: it has no records either
        self._profile = getattr(lib, f"{prefix}_model_profile", None)
        if self._profile is not None:
            self._profile.restype = ctypes.c_size_t
            self._profile.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.POINTER(ctypes.c_int64))]
        self._finalizer = weakref.finalize(self, fns["model_destroy"], handle.value)

    def check_tables(self, meta: dict, raw: bytes) -> None:
        """The metadata must be what the code reports of itself: its compiled-in copy,
        every input's and output's name, dtype, shape and size, the workspace size."""
        def differs(what):
            raise LibraryError(f"{self.path}: the metadata does not match the library's code ({what}); export "
                               "the model again")

        fns, h = self.fns, self.handle
        if fns["metadata"]() != raw:
            differs("the metadata compiled into the code differs")
        for kind, entries in (("input", meta["inputs"]), ("output", meta["outputs"])):
            count = fns[f"model_num_{kind}s"](h)
            if count != len(entries):
                differs(f"{len(entries)} {kind}s in the metadata, {count} in the code")
            for i, e in enumerate(entries):
                info = _TensorInfo()
                if fns[f"model_{kind}_info"](h, i, ctypes.byref(info)) != 0:
                    differs(self._last_error().decode("utf-8", "replace"))
                code = (info.name.decode("utf-8", "replace"), _DTYPE_NAMES.get(info.dtype, f"dtype {info.dtype}"),
                        [info.shape[d] for d in range(info.ndim)], info.nbytes)
                said = (e["name"], e["dtype"], list(e["shape"]), e["nbytes"])
                if code != said:
                    differs(f"{kind} {i}: the metadata says '{said[0]}' {said[1]}{said[2]} ({said[3]} bytes), the "
                            f"code '{code[0]}' {code[1]}{code[2]} ({code[3]} bytes)")
        if fns["model_workspace_size"](h) != meta["workspace_bytes"]:
            differs(f"workspace of {meta['workspace_bytes']} bytes in the metadata, "
                    f"{fns['model_workspace_size'](h)} in the code")

    def profile_records(self, calls: int):
        """Like ``LoadedCode.profile_records``, through ``mlc_model_profile``: the library
        records the calling thread only, so the per-thread records are all 0."""
        import numpy as np
        ptr = ctypes.POINTER(ctypes.c_int64)()
        n = self._profile(self.handle, ctypes.byref(ptr)) if self._profile is not None else 0
        if n == 0:
            raise ValueError(f"{self.path} was not built for profiling (mlc compile MODEL -o LIB.so --profile)")
        if n != calls:
            raise ValueError(f"{self.path}: the code records {n} kernel calls, its metadata lists {calls}")
        records = np.ctypeslib.as_array(ptr, shape=(n, 2)).copy()
        return records, np.zeros((n, PROFILE_MAX_THREADS, 2), np.int64)

    def entry(self, inputs, outputs, _params, _workspace) -> None:
        if self._run(self.handle, inputs, outputs):
            raise RuntimeError(f"{self.path}: {self._last_error().decode('utf-8', 'replace')}")


class _CudaLibraryCode(_LibraryCode):
    """A cuda library's C API in the shape ``CudaExecutable`` calls: ``run`` passes the
    CuPy arrays' device pointers (the handle holds the weights and workspace on the
    device and synchronizes before returning)."""

    def __init__(self, file: str, path: str, params: str | None, prefix: str = "mlc"):
        from .cuda import cupy_module
        self.cp = cupy_module()
        self.cp.cuda.runtime.free(0)   # the device's context current on this thread: the handle uses it
        super().__init__(file, path, params, prefix)

    def run(self, inputs, outputs) -> None:
        # the library runs on the default stream: inputs written on another stream must be ready
        self.cp.cuda.get_current_stream().synchronize()
        ins = (ctypes.c_void_p * max(1, len(inputs)))(*[x.data.ptr for x in inputs])
        outs = (ctypes.c_void_p * max(1, len(outputs)))(*[x.data.ptr for x in outputs])
        self.entry(ins, outs, None, None)


def _check_runs_here(data, path: str, meta: dict) -> None:
    from .elf import elf_machine, machine_of_triple
    from ..target import Target
    try:
        machine = elf_machine(bytes(data[:20]))
    except ValueError as e:
        raise LibraryError(f"{path}: {e}") from None
    host = Target.get("host").triple
    built = meta["host"]["triple"] if "device" in meta else meta["target"]["triple"]   # a cuda library's CPU
    if machine != machine_of_triple(host):
        raise LibraryError(f"{path} is built for {machine} ({built}), this machine is "
                           f"{host}: copy it to such a device and load it there")
    if "device" in meta:
        from .cuda import CudaUnavailable, cupy_module
        try:
            cupy_module()
        except CudaUnavailable as e:
            raise LibraryError(f"{path} is a cuda model library ({meta['target'].get('name', '?')}): it runs on "
                               f"CUDA device pointers, so mlc.load needs CuPy and a GPU here: {str(e).split(';')[0]}") from None


def _weights_path(path: str, meta: dict, params) -> str | None:
    """The external weights file: ``params``, or the file named at export next to the library."""
    if meta["params"]["storage"] != "external":
        if params is not None:
            raise LibraryError(f"{path} embeds its weights; params={os.fspath(params)!r} would be ignored")
        return None
    if params is not None:
        return os.path.abspath(os.fspath(params))
    return os.path.join(os.path.dirname(path), meta["params"]["file"])


def load(path, params=None, public_key=None) -> Executable:
    """Load a model library exported by mlc and return it as a callable with the same
    argument checks as ``mlc.compile``'s result (names, shapes, dtypes, pytrees).

    The file is copied into a private folder and the copy is verified (SHA-256,
    metadata, architecture) and mapped, so what runs is what was verified; once mapped,
    the code's own tables must agree with the metadata. ``params``: the weights file of
    a library exported with ``params="external"`` (default: the file named at export,
    next to the library). ``public_key`` (a PEM file's path or the key's bytes): also
    require a good Ed25519 signature ``path.sig`` by that key (``mlc sign``), and of
    external weights ``params.sig``."""
    path = os.path.abspath(os.fspath(path))
    with _LOCK, _private_copy(path) as copy:
        signer = None if public_key is None else _check_signature(copy.data, path, public_key)
        meta, raw = _parse(copy.data, path)
        if meta["abi_version"] != ABI_VERSION:
            raise LibraryError(f"{path}: C ABI version {meta['abi_version']}, this mlc loads {ABI_VERSION}")
        _check_runs_here(copy.data, path, meta)
        weights = _weights_path(path, meta, params)
        # named by its (verified) SHA-256: the dynamic loader returns a library already
        # mapped under the same name, which is then the same bytes
        copy.rename(bytes(copy.data[-40:-8]).hex() + ".so")
        with (_signed_weights(weights, public_key) if public_key is not None and weights
              else contextlib.nullcontext(weights)) as weights_file:
            try:
                code = (_CudaLibraryCode if "device" in meta else _LibraryCode)(copy.path, path, weights_file,
                                                                               meta.get("prefix", "mlc"))
            except LibraryError as e:
                if weights_file == weights:
                    raise
                raise LibraryError(str(e).replace(weights_file, weights)) from None   # the copy's name
    code.check_tables(meta, raw)
    sig = meta.get("signature")
    signature = None
    if sig is not None:
        try:
            signature = Signature(TreeDef.from_json(sig["in_tree"]), sig["static"],
                                  TreeDef.from_json(sig["out_tree"]))
        except (KeyError, TypeError, ValueError):
            raise LibraryError(f"{path}: malformed metadata: 'signature'") from None
    if "device" in meta:   # CuPy arrays (or device arrays of other libraries) in, CuPy arrays out
        from .cuda import CudaExecutable as executable
    else:
        executable = Executable
    exe = executable(meta["name"], [e["name"] for e in meta["inputs"]], _types(meta["inputs"]),
                     _types(meta["outputs"]), [], meta["workspace_bytes"], code, meta["single_output"],
                     ir_text=_no_ir(path), stats=dict(meta.get("stats", {})), signature=signature)
    exe.metadata = meta   # what the library says of itself (mlc_metadata())
    exe.signer = signer   # the fingerprint of the key that signed it, when public_key was given
    return exe


@contextlib.contextmanager
def _signed_weights(weights: str, public_key):
    """A private copy of the external weights whose signature verified: the runtime maps
    the copy, so it uses the bytes that were checked."""
    with _private_copy(weights, "the weights file") as copy:
        _check_signature(copy.data, weights, public_key)
        yield copy.path


def _types(entries) -> list[TensorType]:
    return [TensorType(tuple(e["shape"]), to_dtype(e["dtype"])) for e in entries]


def _no_ir(path: str):
    def text(level: str) -> str:
        raise ValueError(f"{path} is a compiled library: its IR is not stored; print it from the model before "
                         "export (exe.ir(level))")
    return text


def describe(path, public_key=None) -> str:
    """What ``mlc inspect model.so`` prints: signature, target, versions, sizes, and
    whether the file, its metadata, its weights and (``public_key``) its signature
    verify. The library is not loaded: any architecture can be described."""
    path = os.fspath(path)
    with _private_copy(path) as copy:
        signer = None if public_key is None else _check_signature(copy.data, path, public_key)
        meta, _ = _parse(copy.data, path)
        size = len(copy.data)
        from .elf import elf_header
        try:
            elf = elf_header(bytes(copy.data[:20]))
        except ValueError as e:
            raise LibraryError(f"{path}: {e}") from None
    st = meta.get("stats", {})
    st = st if isinstance(st, dict) else {}

    def sig(entries):
        return "\n".join(f"  {e['name']}: {e['dtype']}{list(e['shape'])}" for e in entries)

    t = meta["target"]
    p = meta["params"]
    weights = _weights_path(os.path.abspath(path), meta, None)
    sig_file = signing.signature_path(path)
    if signer is not None:
        if weights:
            with _signed_weights(weights, public_key):
                pass
        signed = f"{os.path.basename(sig_file)}: signature verified (Ed25519, key fingerprint {signer})" + (
            f"; {os.path.basename(weights)} too" if weights else "")
    elif os.path.exists(sig_file):
        signed = f"{os.path.basename(sig_file)} (not checked: give --public-key)"
    else:
        signed = "none (mlc sign signs a library)"
    device = meta.get("device")
    if device is None:
        target = (f"target:      {t.get('name', '?')} ({t['triple']}, cpu {t.get('cpu', '?')}, {t.get('cores', '?')} "
                  "cores)")
    else:
        target = (f"target:      {t.get('name', '?')} ({t['triple']}, {device['arch']}): a cuda model library, its "
                  f"C API takes CUDA device pointers; its own code runs on {meta['host']['triple']} and needs the "
                  "NVIDIA driver (libcuda.so.1)")
    lines = [f"{path}: mlc model library '{meta['name']}' ({elf}, {size} bytes, SHA-256 verified, metadata matches the code)",
             f"inputs:\n{sig(meta['inputs'])}", f"outputs:\n{sig(meta['outputs'])}", target,
             f"mlc version: {meta['mlc_version']} (C ABI {meta['abi_version']}), exported {meta.get('created', '?')}",
             f"weights:     {p.get('count', '?')} tensors, {_size(p.get('nbytes', 0))}, " + (
                 "embedded" if p["storage"] == "embedded" else f"external: {_external_status(path, p)}"),
             f"kernels:     {st.get('kernels', '?')}" + (f" ({st['tuned_kernels']} tuned)" if st.get("tuned_kernels")
                                                         else ""),
             f"workspace:   {_size(meta['workspace_bytes'])} per concurrent run",
             f"C functions: {meta.get('prefix', 'mlc')}_model_create, {meta.get('prefix', 'mlc')}_model_run, ... "
             f"(header {os.path.splitext(os.path.basename(path))[0]}.h)",
             f"signature:   {signed}"]
    if device is not None:
        lines[-3] = f"workspace:   {_size(meta['workspace_bytes'])} in device memory (runs on one handle take turns)"
        lines[-3:-3] = _device_lines(device)
    return "\n".join(lines)


def _device_lines(device: dict, most: int = 40) -> list[str]:
    """A cuda library's device code and launch table, for ``mlc inspect``."""
    code = " + ".join(f"cubin for {device['arch']} ({device.get('cubin_bytes', '?')} bytes)" if c == "cubin" else
                      f"PTX ({device.get('ptx_bytes', '?')} bytes, compiled by the driver where the cubin does not "
                      "run)" for c in device.get("code", []))
    launches = device["launches"]
    out = [f"device code: {code}", f"launches:    {len(launches)} of {len(device['kernels'])} kernels, in order "
           "on one stream:"]

    def place(a) -> str:
        space, index = a if isinstance(a, list) and len(a) == 2 else ("?", "?")
        return f"workspace+{index}" if space == "workspace" else f"{space}{index}"

    for n, x in enumerate(launches[:most]):
        shared = x.get("dynamic_shared_bytes", 0)
        out.append(f"  {n + 1:3d}. {x.get('kernel', '?')} grid {tuple(x.get('grid', ()))} block "
                   f"{tuple(x.get('block', ()))}" + (f" dynamic shared {shared} bytes" if shared else "") +
                   f": {', '.join(place(a) for a in x.get('args', []))}")
    if len(launches) > most:
        out.append(f"  ... {len(launches) - most} more")
    return out


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
    if table != p.get("table"):
        return f"{p['file']} (MISMATCH: written for a different model)"
    return f"{p['file']} (verified)"


def _size(n) -> str:
    return f"{n / 2**20:.2f} MiB ({n} bytes)" if _is_int(n) else "?"
