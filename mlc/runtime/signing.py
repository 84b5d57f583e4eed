"""Detached Ed25519 signatures for deployed files: who made a model library, not only
that it is intact (the library's SHA-256 can be recomputed by anyone who edits it).

A signature is the 64 raw bytes of Ed25519 over the whole file, written beside it as
``FILE.sig``; keys are PEM files (PKCS#8 private key, SubjectPublicKeyInfo public key).
OpenSSL makes and checks the same files (``docs/deploy.md``)::

    openssl genpkey -algorithm ed25519 -out private.pem
    openssl pkey -in private.pem -pubout -out public.pem
    openssl pkeyutl -sign -inkey private.pem -rawin -in model.so -out model.so.sig
    openssl pkeyutl -verify -pubin -inkey public.pem -rawin -in model.so -sigfile model.so.sig

The cryptography comes from the ``cryptography`` package (``pip install 'mlc[sign]'``).
"""
from __future__ import annotations

import hashlib
import mmap
import os

SUFFIX = ".sig"
SIGNATURE_BYTES = 64


class SigningError(ValueError):
    """A key or a signature that cannot be used, or a signature that does not verify."""


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise SigningError("signing and verifying model libraries needs the cryptography package: "
                           "pip install 'mlc[sign]'") from None
    return serialization, ed25519, InvalidSignature


def signature_path(path) -> str:
    return os.fspath(path) + SUFFIX


def public_key_path(private_path) -> str:
    """Where ``generate_key`` puts the public key: 'private' in the name becomes 'public'
    (private.pem -> public.pem), else NAME.pem -> NAME.pub.pem."""
    folder, name = os.path.split(os.fspath(private_path))
    if "private" in name:
        head, _, tail = name.rpartition("private")
        return os.path.join(folder, head + "public" + tail)
    return os.path.join(folder, os.path.splitext(name)[0] + ".pub.pem")


def generate_key(private_path, public_path=None) -> tuple[str, str]:
    """Write a new Ed25519 key pair: the private key (PEM PKCS#8, unencrypted, mode 0600)
    and its public key (PEM SubjectPublicKeyInfo). Existing files are never replaced."""
    serialization, ed25519, _ = _crypto()
    private_path = os.fspath(private_path)
    public_path = os.fspath(public_path) if public_path is not None else public_key_path(private_path)
    for p in (private_path, public_path):
        if os.path.exists(p):
            raise SigningError(f"{p} exists: not replacing a key (move it, or choose another name)")
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    for p, data, mode in ((private_path, private, 0o600), (public_path, public, 0o644)):
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except OSError as e:
            raise SigningError(f"cannot write {p}: {e.strerror}") from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return private_path, public_path


def _read(path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise SigningError(f"cannot read the {what} {os.fspath(path)}: {e.strerror}") from None


def load_private_key(path):
    serialization, ed25519, _ = _crypto()
    path = os.fspath(path)
    try:
        key = serialization.load_pem_private_key(_read(path, "private key"), password=None)
    except TypeError:   # the key is encrypted
        raise SigningError(f"{path} is an encrypted private key: decrypt it first (openssl pkey -in {path} "
                           "-out plain.pem)") from None
    except Exception as e:   # ValueError or UnsupportedAlgorithm, by cryptography's version
        raise SigningError(f"{path} is not a PEM private key ({type(e).__name__})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SigningError(f"{path} is not an Ed25519 key: mlc signs with Ed25519 (openssl genpkey -algorithm "
                           "ed25519 -out private.pem, or mlc sign --generate-key private.pem)")
    return key


def load_public_key(key):
    """An Ed25519 public key from a path to a PEM file, or from bytes (PEM, DER
    SubjectPublicKeyInfo, or the raw 32-byte key), or a key object."""
    serialization, ed25519, _ = _crypto()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, (bytes, bytearray, memoryview)):
        data, what = bytes(key), "the public key given"
    elif isinstance(key, (str, os.PathLike)):
        data, what = _read(key, "public key"), os.fspath(key)
    else:
        raise SigningError(f"public_key must be a path to a PEM file or the key's bytes, got {type(key).__name__}")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            loaded = serialization.load_pem_public_key(data)
        elif len(data) == 32:
            loaded = ed25519.Ed25519PublicKey.from_public_bytes(data)
        else:
            loaded = serialization.load_der_public_key(data)
    except Exception as e:   # ValueError or UnsupportedAlgorithm, by cryptography's version
        raise SigningError(f"{what} is not a public key (PEM, DER or raw Ed25519; {type(e).__name__})") from None
    if not isinstance(loaded, ed25519.Ed25519PublicKey):
        raise SigningError(f"{what} is not an Ed25519 public key")
    return loaded


def fingerprint(public_key) -> str:
    """SHA256:<hex> of the key's DER SubjectPublicKeyInfo, as
    ``openssl pkey -pubin -in public.pem -outform DER | sha256sum`` prints it."""
    serialization, _, _ = _crypto()
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "SHA256:" + hashlib.sha256(der).hexdigest()


def sign(path, private_key_path, out=None) -> str:
    """Sign the whole file ``path`` with the Ed25519 key in ``private_key_path``; writes
    the 64-byte signature to ``out`` (default ``path`` + ".sig") and returns its path."""
    from .params import write_atomic
    key = load_private_key(private_key_path)
    path = os.fspath(path)
    out = os.fspath(out) if out is not None else signature_path(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise SigningError(f"cannot read {path}: {e.strerror}") from None
    with f:
        data = _mapped(f)
        try:
            signature = key.sign(data)
        finally:
            if isinstance(data, mmap.mmap):
                data.close()
    write_atomic(out, [signature])
    return out


def _mapped(f):
    size = os.fstat(f.fileno()).st_size
    return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""


def verify(data, name: str, public_key, signature_file: str) -> str:
    """Check the detached signature ``signature_file`` of ``data`` (the bytes of the file
    ``name``) with ``public_key`` (see ``load_public_key``); returns the key's
    fingerprint, or raises SigningError saying what is wrong."""
    _, _, InvalidSignature = _crypto()
    key = load_public_key(public_key)
    if not os.path.exists(signature_file):
        raise SigningError(f"{name} is not signed: no signature {signature_file} (sign it with: mlc sign {name} "
                           "--key private.pem)")
    signature = _read(signature_file, "signature")
    if len(signature) != SIGNATURE_BYTES:
        raise SigningError(f"{signature_file} is not an Ed25519 signature ({len(signature)} bytes, expected "
                           f"{SIGNATURE_BYTES})")
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise SigningError(f"{name}: the signature {signature_file} does not verify with the public key "
                           f"{fingerprint(key)}: the file was changed after it was signed, or it was signed with "
                           "another key") from None
    return fingerprint(key)
