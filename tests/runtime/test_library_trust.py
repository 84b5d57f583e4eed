"""Model libraries run only what was verified: a library exported again at the same path,
a trailer that lies about the code, and signatures (mlc sign, mlc.load(public_key=...),
mlc inspect/run --public-key) that OpenSSL makes and checks too."""
import hashlib
import importlib.util
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import mlc
from mlc.cli import main
from mlc.runtime import library
from mlc.runtime.library import LibraryError, read_metadata, trailer
from concurrency import run_in_threads

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repository
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(CC is None, reason="exporting a model library needs a C compiler")

W = np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32)
X = np.random.default_rng(2).standard_normal((8, 64)).astype(np.float32)


def model(x):
    return mlc.relu(x @ W) + 1.0


def expected(x):
    return np.maximum(x @ W, 0) + 1


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    path = tmp_path_factory.mktemp("lib") / "model.so"
    mlc.compile(model, X).export(path)
    return path


def _run_python(script: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


# ----------------------------------------------------------------------------- what runs is what was verified

def test_library_exported_again_at_the_same_path_runs_its_new_code(tmp_path):
    # in a child process: before the loader copied libraries, the dynamic loader returned
    # the library already mapped at that path, which crashed with other shapes
    r = _run_python("""
        import numpy as np, mlc
        a = np.arange(4, dtype=np.float32)
        mlc.compile(lambda x: x + 1, a).export("re.so")
        first = mlc.load("re.so")
        assert np.array_equal(first(a), a + 1), first(a)
        mlc.compile(lambda x: x * 10, a).export("re.so")
        second = mlc.load("re.so")
        assert np.array_equal(second(a), a * 10), second(a)
        b = np.arange(12.0).reshape(3, 4)
        mlc.compile(lambda x: (x * 2).sum(axis=1), b).export("re.so")
        third = mlc.load("re.so")
        assert np.array_equal(third(b), (b * 2).sum(axis=1)), third(b)
        mlc.compile(lambda x: x + 1, a).export("re.so")   # the first code again: its own copy
        again = mlc.load("re.so")
        for m, x, want in ((first, a, a + 1), (second, a, a * 10), (third, b, (b * 2).sum(axis=1)),
                           (again, a, a + 1)):
            assert np.array_equal(m(x), want)
        print("ok")
    """, tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_loader_maps_a_private_copy_and_leaves_none_behind(lib, tmp_path):
    path = tmp_path / "m.so"
    shutil.copy(lib, path)
    m = mlc.load(path)
    folder = library._private_dir()
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert os.listdir(folder) == []                          # mapped, then removed
    path.write_bytes(b"replaced after loading")              # what was verified keeps running
    np.testing.assert_allclose(m(X), expected(X), rtol=1e-5, atol=1e-5)
    with pytest.raises(LibraryError, match="not an mlc model library"):
        mlc.load(path)
    with pytest.raises(LibraryError, match="/dev/zero: not a regular file"):   # copied, it would never end
        mlc.load("/dev/zero")
    os.mkfifo(tmp_path / "fifo.so")
    with pytest.raises(LibraryError, match="fifo.so: not a regular file"):    # opened, it would wait for a writer
        mlc.load(tmp_path / "fifo.so")
    assert os.listdir(folder) == []


def test_concurrent_loads_each_get_their_own_library(lib, tmp_path):
    other = tmp_path / "other.so"
    mlc.compile(lambda x: x * 3.0, X).export(other)

    def work(k):
        wrong = 0
        for _ in range(5):
            m = mlc.load(lib if k % 2 else other)
            want = expected(X) if k % 2 else X * 3
            wrong += not np.allclose(m(X), want, rtol=1e-5, atol=1e-5)
        return wrong

    assert run_in_threads(work, 6) == [0] * 6 and os.listdir(library._private_dir()) == []


def test_private_folder_is_removed_when_the_process_exits(lib, tmp_path):
    r = _run_python(f"""
        import mlc
        from mlc.runtime import library
        mlc.load({str(lib)!r})
        print(library._private_dir())
    """, tmp_path)
    assert r.returncode == 0, r.stderr
    folder = r.stdout.strip()
    assert folder.startswith(tempfile.gettempdir()) and not os.path.exists(folder)


def _parts(path):
    data = path.read_bytes()
    n = int.from_bytes(data[-48:-40], "little")
    return data[:-52 - n], json.loads(data[-52 - n:-52])


def test_trailer_edited_and_rehashed_is_refused(lib, tmp_path, capsys):
    elf, meta = _parts(lib)
    meta["inputs"][0]["shape"] = [1, 1]
    meta["outputs"][0]["shape"] = [1, 1]
    bad = tmp_path / "lying.so"
    bad.write_bytes(elf + trailer(meta, hashlib.sha256(elf)))
    message = "the trailer's metadata is not the one compiled into the library's code"
    with pytest.raises(LibraryError, match=message):
        mlc.load(bad)
    with pytest.raises(SystemExit, match=message):
        main(["inspect", str(bad)])
    assert "verified" not in capsys.readouterr().out
    # JSON that means the same but is not the same bytes is refused as well
    text = json.dumps(_parts(lib)[1], indent=1).encode()
    body = elf + text + struct.pack("<IQ", 1, len(text))
    bad.write_bytes(body + hashlib.sha256(body).digest() + b"MLC_LIB\0")
    with pytest.raises(LibraryError, match=message):
        read_metadata(bad)


def test_code_tables_that_disagree_with_the_metadata_are_refused(lib, tmp_path):
    # both copies of the metadata say [4, 64] (same length), the code's tables say [8, 64]
    data = lib.read_bytes()
    old, new = b'"shape": [8, 64], "nbytes": 2048', b'"shape": [4, 64], "nbytes": 1024'
    assert data.count(old) == 2
    data = data.replace(old, new)
    body = data[:-40]
    bad = tmp_path / "tables.so"
    bad.write_bytes(body + hashlib.sha256(body).digest() + data[-8:])
    assert read_metadata(bad)["inputs"][0]["shape"] == [4, 64]
    with pytest.raises(LibraryError, match=r"the metadata does not match the library's code \(input 0: the metadata "
                                           r"says 'x' float32\[4, 64\] \(1024 bytes\), the code 'x' float32\[8, 64\] "
                                           r"\(2048 bytes\)\)"):
        mlc.load(bad)


# ----------------------------------------------------------------------------- signatures

needs_crypto = pytest.mark.skipif(importlib.util.find_spec("cryptography") is None,
                                  reason="signing needs the cryptography package (pip install 'mlc[sign]')")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    assert main(["sign", "--generate-key", str(d / "private.pem")]) == 0
    assert main(["sign", "--generate-key", str(d / "other.pem")]) == 0
    return d


@pytest.fixture
def signed(lib, keys, tmp_path):
    path = tmp_path / "model.so"
    shutil.copy(lib, path)
    assert main(["sign", str(path), "--key", str(keys / "private.pem")]) == 0
    return path


@needs_crypto
def test_generated_keys_are_pem_and_never_replaced(keys, capsys):
    assert stat.S_IMODE(os.stat(keys / "private.pem").st_mode) == 0o600
    assert (keys / "private.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (keys / "public.pem").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert (keys / "other.pub.pem").exists()
    before = (keys / "private.pem").read_bytes()
    with pytest.raises(SystemExit, match="private.pem exists: not replacing a key"):
        main(["sign", "--generate-key", str(keys / "private.pem")])
    assert (keys / "private.pem").read_bytes() == before


@needs_crypto
def test_signed_library_loads_with_its_public_key(signed, keys, capsys):
    sig = signed.parent / "model.so.sig"
    assert len(sig.read_bytes()) == 64
    m = mlc.load(signed, public_key=keys / "public.pem")
    np.testing.assert_allclose(m(X), expected(X), rtol=1e-5, atol=1e-5)
    from cryptography.hazmat.primitives import serialization
    pub = serialization.load_pem_public_key((keys / "public.pem").read_bytes())
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert m.signer == "SHA256:" + hashlib.sha256(der).hexdigest()
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for key in ((keys / "public.pem").read_bytes(), der, raw, str(keys / "public.pem")):   # bytes or a path
        assert mlc.load(signed, public_key=key).signer == m.signer
    capsys.readouterr()
    assert main(["inspect", str(signed), "--public-key", str(keys / "public.pem")]) == 0
    assert f"model.so.sig: signature verified (Ed25519, key fingerprint {m.signer})" in capsys.readouterr().out
    assert main(["inspect", str(signed)]) == 0
    assert "signature:   model.so.sig (not checked: give --public-key)" in capsys.readouterr().out
    assert main(["run", str(signed), "--random-inputs", "--public-key", str(keys / "public.pem")]) == 0
    assert f"signature verified (Ed25519, key fingerprint {m.signer})" in capsys.readouterr().out


@needs_crypto
def test_unsigned_or_badly_signed_libraries_are_refused(signed, keys, lib, tmp_path):
    pub = keys / "public.pem"
    sig = signed.parent / "model.so.sig"
    good = sig.read_bytes()

    def refused(message, path=signed):
        with pytest.raises(LibraryError, match=message):
            mlc.load(path, public_key=pub)
        with pytest.raises(SystemExit, match=message):
            main(["inspect", str(path), "--public-key", str(pub)])
        with pytest.raises(SystemExit, match=message):
            main(["run", str(path), "--random-inputs", "--public-key", str(pub)])

    does_not_verify = (r"model.so: the signature .*model.so.sig does not verify with the public key SHA256:[0-9a-f]{64}: "
                       "the file was changed after it was signed, or it was signed with another key")
    unsigned = tmp_path / "unsigned.so"
    shutil.copy(lib, unsigned)
    refused(r"unsigned.so is not signed: no signature .*unsigned.so.sig \(sign it with: mlc sign", unsigned)
    sig.write_bytes(bytes(64))                                                   # a bad signature
    refused(does_not_verify)
    sig.write_bytes(good[:10])
    refused(r"model.so.sig is not an Ed25519 signature \(10 bytes, expected 64\)")
    assert main(["sign", str(signed), "--key", str(keys / "other.pem")]) == 0   # another key
    refused(does_not_verify)
    sig.write_bytes(good)
    mlc.load(signed, public_key=pub)
    mlc.compile(lambda x: x * 2.0, X).export(signed)                             # re-exported after signing
    refused(does_not_verify)
    with pytest.raises(LibraryError, match="not a public key"):
        mlc.load(signed, public_key=b"not a key")
    with pytest.raises(LibraryError, match="cannot read the public key"):
        mlc.load(signed, public_key=tmp_path / "missing.pem")


@needs_crypto
def test_library_modified_after_signing_is_refused_before_anything_else(signed, keys):
    data = bytearray(signed.read_bytes())
    data[len(data) // 2] ^= 1
    signed.write_bytes(bytes(data))
    with pytest.raises(LibraryError, match="does not verify with the public key"):
        mlc.load(signed, public_key=keys / "public.pem")
    with pytest.raises(LibraryError, match="SHA-256 checksum mismatch"):   # without a key: the checksum
        mlc.load(signed)


@needs_crypto
def test_external_weights_are_signed_and_verified_with_the_library(keys, tmp_path, capsys):
    path = tmp_path / "ext.so"
    mlc.compile(model, X).export(path, params="external")
    assert main(["sign", str(path), "--key", str(keys / "private.pem")]) == 0
    assert "signed " + str(tmp_path / "ext.params") in capsys.readouterr().out
    pub = keys / "public.pem"
    np.testing.assert_allclose(mlc.load(path, public_key=pub)(X), expected(X), rtol=1e-5, atol=1e-5)
    assert main(["inspect", str(path), "--public-key", str(pub)]) == 0
    assert "signature verified" in capsys.readouterr().out
    # retrained weights (same table, new values) pass the table check but not the signature
    from mlc.runtime import params as container
    tensors, _ = container.read_tensors(tmp_path / "ext.params")
    container.write_tensors(tmp_path / "ext.params", {k: v * 0 for k, v in tensors.items()})
    with pytest.raises(LibraryError, match="ext.params: the signature .*ext.params.sig does not verify"):
        mlc.load(path, public_key=pub)
    np.testing.assert_allclose(mlc.load(path)(X), np.ones((8, 16), np.float32))   # without a key: accepted
    (tmp_path / "ext.params.sig").unlink()
    with pytest.raises(LibraryError, match="ext.params is not signed"):
        mlc.load(path, public_key=pub)


@needs_crypto
@pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")
def test_signatures_interoperate_with_openssl(signed, keys, tmp_path):
    def openssl(*args):
        r = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        return r

    # mlc's signature, checked by openssl
    r = openssl("pkeyutl", "-verify", "-pubin", "-inkey", keys / "public.pem", "-rawin", "-in", signed, "-sigfile",
                signed.parent / "model.so.sig")
    assert "Signature Verified Successfully" in r.stdout
    # openssl's key and signature, checked by mlc; the fingerprint is the DER key's SHA-256
    openssl("genpkey", "-algorithm", "ed25519", "-out", tmp_path / "o.pem")
    openssl("pkey", "-in", tmp_path / "o.pem", "-pubout", "-out", tmp_path / "o.pub")
    openssl("pkeyutl", "-sign", "-inkey", tmp_path / "o.pem", "-rawin", "-in", signed, "-out",
            signed.parent / "model.so.sig")
    m = mlc.load(signed, public_key=tmp_path / "o.pub")
    der = subprocess.run([OPENSSL, "pkey", "-pubin", "-in", tmp_path / "o.pub", "-outform", "DER"],
                         capture_output=True, check=True).stdout
    assert m.signer == "SHA256:" + hashlib.sha256(der).hexdigest()
    # and a library signed by mlc with openssl's key
    assert main(["sign", str(signed), "--key", str(tmp_path / "o.pem")]) == 0
    assert mlc.load(signed, public_key=tmp_path / "o.pub").signer == m.signer


def test_signing_without_the_cryptography_package_says_what_to_install(lib, tmp_path, monkeypatch):
    for name in [n for n in sys.modules if n == "cryptography" or n.startswith("cryptography.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "cryptography", None)   # import cryptography now fails
    with pytest.raises(LibraryError, match=r"needs the cryptography package: pip install 'mlc\[sign\]'"):
        mlc.load(lib, public_key=tmp_path / "public.pem")
    for args in (["sign", str(lib), "--key", str(tmp_path / "private.pem")],
                 ["sign", "--generate-key", str(tmp_path / "private.pem")]):
        with pytest.raises(SystemExit, match=r"pip install 'mlc\[sign\]'"):
            main(args)
    np.testing.assert_allclose(mlc.load(lib)(X), expected(X), rtol=1e-5, atol=1e-5)   # no key: no cryptography
