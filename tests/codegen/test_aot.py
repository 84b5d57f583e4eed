"""Ahead-of-time export: model libraries with a C API, their header and weights, mlc.load,
mlc inspect, the C tutorial program, and every way a bad call or a damaged file is refused."""
import ctypes
import json
import os
import re
import shutil
import stat
import sys
import subprocess
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import mlc
from mlc.cli import main
from mlc.codegen.export import API_FUNCTIONS, C_DIR, ExportError, export_library
from mlc.runtime import params as container
from mlc.runtime.library import DTYPE_CODES, LibraryError, read_metadata, trailer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repository
RUN_MODEL_C = os.path.join(ROOT, "tutorials", "c_api", "run_model.c")
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
pytestmark = pytest.mark.skipif(CC is None, reason="exporting a model library needs a C compiler")

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((64, 32)).astype(np.float32) * 0.2
B1 = RNG.standard_normal(32).astype(np.float32) * 0.1
W2 = RNG.standard_normal((32, 10)).astype(np.float32) * 0.2


def classifier(x):
    return mlc.softmax(mlc.relu(x @ W1 + B1) @ W2, axis=-1)


def classifier_numpy(x):
    z = np.maximum(x @ W1 + B1, 0) @ W2
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


X = RNG.standard_normal((8, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def jit():
    return mlc.compile(classifier, X)


@pytest.fixture(scope="module")
def lib(jit, tmp_path_factory):
    path = tmp_path_factory.mktemp("lib") / "model.so"
    jit.export(path)
    return path


@pytest.fixture(scope="module")
def ext_lib(jit, tmp_path_factory):
    path = tmp_path_factory.mktemp("ext") / "model.so"
    jit.export(path, params="external")
    return path


# ----------------------------------------------------------------------------- export and load

@pytest.mark.parametrize("which", ["lib", "ext_lib"])
def test_loaded_library_matches_the_jit_bit_for_bit(jit, which, request):
    path = request.getfixturevalue(which)
    model = mlc.load(path)
    for x in (X, RNG.standard_normal((8, 64)).astype(np.float32)):
        out = model(x)
        assert out.dtype == np.float32 and out.shape == (8, 10)
        assert np.array_equal(out, jit(x))
        np.testing.assert_allclose(out, classifier_numpy(x), rtol=1e-5, atol=1e-6)
    assert repr(model) == repr(jit)
    assert model.stats["kernels"] == jit.kernel_count and model.kernel_count == jit.kernel_count
    assert model.workspace_bytes == jit.workspace_bytes


def test_export_writes_library_header_and_weights(jit, tmp_path):
    r = jit.export(tmp_path / "m.so", params="external")
    assert (r.library, r.header, r.params) == (str(tmp_path / "m.so"), str(tmp_path / "m.h"),
                                               str(tmp_path / "m.params"))
    assert str(r.elf).endswith("shared library")
    # the weights file is the documented tensor container: W1, B1, W2 as the code uses them
    tensors, meta = container.read_tensors(tmp_path / "m.params")
    assert sorted(a.shape for a in tensors.values()) == sorted([(64, 32), (32,), (32, 10)])
    assert meta["model"] == "classifier"
    meta = read_metadata(tmp_path / "m.so")
    assert meta["params"]["storage"] == "external" and meta["params"]["file"] == "m.params"
    assert meta["params"]["nbytes"] == W1.nbytes + B1.nbytes + W2.nbytes
    assert meta["inputs"] == [{"name": "x", "dtype": "float32", "shape": [8, 64], "nbytes": X.nbytes}]
    assert meta["mlc_version"] == mlc.__version__ and meta["target"]["name"] == "host"
    header = (tmp_path / "m.h").read_text()
    for line in ('#define MLC_MODEL_NAME "classifier"', "#define MLC_MODEL_INPUT_0_SHAPE {8, 64}",
                 "#define MLC_MODEL_INPUT_0_DTYPE MLC_FLOAT32", "#define MLC_MODEL_OUTPUT_0_NBYTES 320u",
                 "#define MLC_ABI_VERSION 1"):
        assert line in header
    # embedded: one file holds everything, no weights file
    r = jit.export(tmp_path / "e.so")
    assert r.params is None and not (tmp_path / "e.params").exists()
    assert os.path.getsize(tmp_path / "e.so") > os.path.getsize(tmp_path / "m.so") + W1.nbytes


def test_loaded_library_checks_arguments_like_the_jit(jit, lib):
    model = mlc.load(lib)
    for bad in (X.astype(np.float64), X[:4], [[1.0]]):
        with pytest.raises(TypeError) as a:
            jit(bad)
        with pytest.raises(TypeError) as b:
            model(bad)
        assert str(a.value) == str(b.value) and "argument 'x' expects f32[8,64]" in str(b.value)
    with pytest.raises(TypeError, match=r"takes 1 array argument\(s\) \(x\), got 2"):
        model(X, X)
    assert np.array_equal(model(np.asfortranarray(X)), jit(X))   # non-contiguous input: copied, not misread
    with pytest.raises(ValueError, match="its IR is not stored"):
        model.ir("loop")
    with pytest.raises(ValueError, match="already exported"):
        model.export("x.so")


def test_pytree_signature_survives_export(tmp_path):
    def f(batch, scale):
        return {"sum": batch["a"] + batch["b"] * scale, "parts": [batch["a"] * 2.0, mlc.exp(batch["b"])]}

    a, b = RNG.standard_normal((3, 4)).astype(np.float32), RNG.standard_normal((3, 4)).astype(np.float32)
    exe = mlc.compile(f, {"a": a, "b": b}, 0.5)
    exe.export(tmp_path / "tree.so")
    model = mlc.load(tmp_path / "tree.so")
    out, ref = model({"a": a, "b": b}, 0.5), exe({"a": a, "b": b}, 0.5)
    assert list(out) == ["sum", "parts"] and len(out["parts"]) == 2
    assert np.array_equal(out["sum"], ref["sum"]) and np.array_equal(out["parts"][1], ref["parts"][1])
    with pytest.raises(TypeError, match="the scalar argument 2.0 differs from 0.5"):
        model({"a": a, "b": b}, 2.0)
    with pytest.raises(TypeError, match="arguments have structure"):
        model({"a": a}, 0.5)


def test_two_models_in_one_process_keep_their_own_code(lib, tmp_path):
    other = mlc.compile(lambda x: x @ W1, X)
    other.export(tmp_path / "other.so")
    m1, m2 = mlc.load(lib), mlc.load(tmp_path / "other.so")
    np.testing.assert_allclose(m1(X), classifier_numpy(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m2(X), X @ W1, rtol=1e-5, atol=1e-5)


def test_one_handle_runs_on_many_threads(lib):
    model = mlc.load(lib)
    inputs = [RNG.standard_normal((8, 64)).astype(np.float32) for _ in range(8)]
    expected = [model(x) for x in inputs]
    errors, barrier = [], threading.Barrier(8)

    def work(k):
        barrier.wait()
        for _ in range(200):
            if not np.array_equal(model(inputs[k]), expected[k]):
                errors.append(k)
                return

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# ----------------------------------------------------------------------------- the C API, called directly

class TensorInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("ndim", ctypes.c_int32),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("nbytes", ctypes.c_size_t)]


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("nbytes", ctypes.c_size_t), ("dtype", ctypes.c_int),
                ("ndim", ctypes.c_int32), ("shape", ctypes.POINTER(ctypes.c_int64))]


def _tensor(a: np.ndarray, **override) -> Tensor:
    shape = (ctypes.c_int64 * max(1, a.ndim))(*a.shape)
    t = Tensor(a.ctypes.data, a.nbytes, DTYPE_CODES[a.dtype.name], a.ndim, shape)
    t._keep = (a, shape)
    for k, v in override.items():
        setattr(t, k, v)
    return t


class CApi:
    def __init__(self, path, params=None):
        self.lib = ctypes.CDLL(str(path), mode=os.RTLD_LOCAL)
        self.lib.mlc_last_error.restype = ctypes.c_char_p
        self.lib.mlc_status_name.restype = ctypes.c_char_p
        self.lib.mlc_version.restype = ctypes.c_char_p
        self.lib.mlc_metadata.restype = ctypes.c_char_p
        self.lib.mlc_model_num_inputs.restype = ctypes.c_size_t
        self.lib.mlc_model_workspace_size.restype = ctypes.c_size_t
        self.handle = ctypes.c_void_p()
        self.status = self.lib.mlc_model_create(None if params is None else str(params).encode(), 0,
                                                ctypes.byref(self.handle))

    def error(self) -> str:
        return self.lib.mlc_last_error().decode()

    def run(self, inputs, outputs, n_in=None, n_out=None):
        ins = (Tensor * max(1, len(inputs)))(*inputs) if inputs is not None else None
        outs = (Tensor * max(1, len(outputs)))(*outputs) if outputs is not None else None
        status = self.lib.mlc_model_run(self.handle, ins, ctypes.c_size_t(len(inputs) if n_in is None else n_in),
                                        outs, ctypes.c_size_t(len(outputs) if n_out is None else n_out))
        return self.lib.mlc_status_name(status).decode(), self.error()

    def close(self):
        self.lib.mlc_model_destroy(self.handle)


def test_c_api_runs_and_describes_the_model(lib):
    api = CApi(lib)
    assert api.status == 0 and api.handle.value
    assert api.lib.mlc_abi_version() == 1 and api.lib.mlc_version().decode() == mlc.__version__
    assert json.loads(api.lib.mlc_metadata())["name"] == "classifier"
    assert api.lib.mlc_model_num_inputs(api.handle) == 1 and api.lib.mlc_model_num_outputs(api.handle) == 1
    info = TensorInfo()
    assert api.lib.mlc_model_input_info(api.handle, ctypes.c_size_t(0), ctypes.byref(info)) == 0
    assert (info.name, info.dtype, info.ndim, info.shape[0], info.shape[1], info.nbytes) == (
        b"x", DTYPE_CODES["float32"], 2, 8, 64, X.nbytes)
    assert api.lib.mlc_model_output_info(api.handle, ctypes.c_size_t(0), ctypes.byref(info)) == 0
    assert info.name == b"output0" and (info.shape[0], info.shape[1]) == (8, 10)
    assert api.lib.mlc_model_input_info(api.handle, ctypes.c_size_t(1), ctypes.byref(info)) == 2
    assert api.error() == "mlc_model_input_info: index 1 out of range (the model has 1 inputs)"
    assert api.lib.mlc_model_input_info(api.handle, ctypes.c_size_t(0), None) == 1
    assert api.lib.mlc_model_workspace_size(api.handle) == read_metadata(lib)["workspace_bytes"]
    out = np.zeros((8, 10), np.float32)
    assert api.run([_tensor(X)], [_tensor(out)]) == ("MLC_OK", api.error())
    assert np.array_equal(out, mlc.load(lib)(X))
    api.close()


def test_c_api_carries_unsigned_and_16_bit_integers(tmp_path):
    # the header's codes past float64 (MLC_UINT16 = 10, ...) name and size the new dtypes
    x = np.array([0, 1, 300, 65535, 40000], np.uint16)
    y = np.array([2 ** 64 - 1, 2 ** 63, 7, 0, 1], np.uint64)
    f = lambda x, y: (x.astype("uint32") * 3, mlc.sum(y) + 1, x.astype("int16"))   # noqa: E731
    mlc.compile(f, x, y).export(tmp_path / "u.so")
    api = CApi(tmp_path / "u.so")
    info = TensorInfo()
    assert api.lib.mlc_model_input_info(api.handle, ctypes.c_size_t(0), ctypes.byref(info)) == 0
    assert (info.dtype, info.nbytes) == (DTYPE_CODES["uint16"], 10) == (10, 10)
    assert api.lib.mlc_model_input_info(api.handle, ctypes.c_size_t(1), ctypes.byref(info)) == 0
    assert (info.dtype, info.nbytes) == (DTYPE_CODES["uint64"], 40) == (12, 40)
    outs = [np.zeros(5, np.uint32), np.zeros((), np.uint64), np.zeros(5, np.int16)]
    assert api.run([_tensor(x), _tensor(y)], [_tensor(o) for o in outs]) == ("MLC_OK", api.error())
    for got, want in zip(outs, f(x, y)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert api.run([_tensor(x.astype(np.uint32)), _tensor(y)], [_tensor(o) for o in outs]) == (
        "MLC_ERROR_DTYPE_MISMATCH", "input 0 ('x'): expected uint16, got uint32")
    api.close()


def test_c_api_refuses_bad_calls_with_a_code_and_a_message(lib):
    api = CApi(lib)
    out = np.zeros((8, 10), np.float32)
    cases = [
        (dict(inputs=[_tensor(X.astype(np.float64))]), "MLC_ERROR_DTYPE_MISMATCH",
         "input 0 ('x'): expected float32, got float64"),
        (dict(inputs=[_tensor(X[:4])]), "MLC_ERROR_SHAPE_MISMATCH",
         "input 0 ('x'): expected shape [8, 64], got [4, 64] (ndim 2)"),
        (dict(inputs=[_tensor(X.reshape(-1))]), "MLC_ERROR_SHAPE_MISMATCH",
         "input 0 ('x'): expected shape [8, 64], got [512] (ndim 1)"),
        (dict(inputs=[_tensor(X, data=None)]), "MLC_ERROR_NULL_ARGUMENT", "input 0 ('x'): data is NULL"),
        (dict(inputs=[_tensor(X, shape=None)]), "MLC_ERROR_SHAPE_MISMATCH", "got (NULL)"),
        (dict(inputs=[_tensor(X, nbytes=100)]), "MLC_ERROR_BUFFER_TOO_SMALL",
         "input 0 ('x'): the buffer holds 100 bytes, the float32 tensor needs 2048"),
        (dict(outputs=[_tensor(out, nbytes=319)]), "MLC_ERROR_BUFFER_TOO_SMALL",
         "output 0 ('output0'): the buffer holds 319 bytes, the float32 tensor needs 320"),
        (dict(outputs=[_tensor(out, data=out.ctypes.data + 1)]), "MLC_ERROR_INVALID_ARGUMENT",
         "is not aligned to its 4-byte elements"),
        (dict(outputs=[_tensor(out, data=X.ctypes.data)]), "MLC_ERROR_INVALID_ARGUMENT",
         "output 0 ('output0') overlaps input 0 ('x')"),
        (dict(n_in=2), "MLC_ERROR_INVALID_ARGUMENT", "the model takes 1 input(s), got 2"),
        (dict(n_out=0), "MLC_ERROR_INVALID_ARGUMENT", "the model has 1 output(s), got 0"),
        (dict(inputs=None, n_in=1), "MLC_ERROR_NULL_ARGUMENT", "inputs is NULL"),
        (dict(outputs=None, n_out=1), "MLC_ERROR_NULL_ARGUMENT", "outputs is NULL"),
    ]
    for kw, status, message in cases:
        out[:] = 7
        args = {"inputs": [_tensor(X)], "outputs": [_tensor(out)], **kw}
        got_status, got_message = api.run(args["inputs"], args["outputs"], kw.get("n_in"), kw.get("n_out"))
        assert got_status == status and message in got_message, (kw, got_status, got_message)
        assert (out == 7).all()   # nothing ran
    assert api.lib.mlc_model_run(None, None, 0, None, 0) == 1 and api.error() == "mlc_model_run: model is NULL"
    assert api.lib.mlc_model_run_unchecked(api.handle, None, None) == 1
    assert api.lib.mlc_model_create(None, 0, None) == 1 and "out is NULL" in api.error()
    assert api.lib.mlc_model_create(None, 8, ctypes.byref(ctypes.c_void_p())) == 2
    assert api.error() == "mlc_model_create: unknown flags 0x8"
    api.lib.mlc_model_destroy(None)   # ignored
    assert api.run([_tensor(X)], [_tensor(out)])[0] == "MLC_OK"   # the handle still works after refusals
    api.close()


# ----------------------------------------------------------------------------- damaged and mismatched artifacts

def _copy(src, dst):
    shutil.copy(src, dst)
    return dst


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 1]))


def test_damaged_library_is_refused_and_never_loaded(lib, tmp_path):
    size = os.path.getsize(lib)
    for offset in (100, size // 2, size - 60):   # ELF header, code/weights, metadata
        bad = _copy(lib, tmp_path / f"flip{offset}.so")
        _flip(bad, offset)
        with pytest.raises(LibraryError, match="is corrupted: SHA-256 checksum mismatch"):
            mlc.load(bad)
        with pytest.raises(SystemExit, match="corrupted"):
            main(["inspect", str(bad)])
    # the C side verifies the same when a handle is created (a byte flipped in the weights)
    bad = _copy(lib, tmp_path / "cflip.so")
    _flip(bad, size // 2)
    api = CApi(bad)
    assert api.status == 7 and "cflip.so is corrupted: SHA-256 checksum mismatch" in api.error()
    # truncated: the trailer is gone
    bad = tmp_path / "cut.so"
    bad.write_bytes(lib.read_bytes()[:size // 2])
    with pytest.raises(LibraryError, match="no mlc trailer: the library was modified after export"):
        mlc.load(bad)
    bad.write_bytes(b"hello")
    with pytest.raises(LibraryError, match="not an mlc model library"):
        mlc.load(bad)
    with pytest.raises(LibraryError, match="cannot open model library"):
        mlc.load(tmp_path / "missing.so")
    if shutil.which("strip"):
        stripped = _copy(lib, tmp_path / "stripped.so")
        subprocess.run(["strip", str(stripped)], check=True)
        with pytest.raises(LibraryError, match=r"stripped\?"):
            mlc.load(stripped)
        api = CApi(stripped)
        assert api.status == 7 and "has no mlc trailer" in api.error()


def test_library_for_another_architecture_is_refused(lib, tmp_path):
    data = bytearray(lib.read_bytes())
    meta_len = int.from_bytes(data[-48:-40], "little")
    elf = data[:len(data) - 52 - meta_len]
    elf[18:20] = (183).to_bytes(2, "little")   # e_machine = AArch64, with a valid trailer
    import hashlib
    h = hashlib.sha256(elf)
    meta = read_metadata(lib)
    (tmp_path / "arm.so").write_bytes(bytes(elf) + trailer(meta, h))
    with pytest.raises(LibraryError, match="is built for AArch64 .* this machine is x86_64"):
        mlc.load(tmp_path / "arm.so")


def test_external_weights_are_verified(ext_lib, jit, tmp_path):
    d = tmp_path
    lib = _copy(ext_lib, d / "model.so")
    good = (ext_lib.parent / "model.params").read_bytes()

    def refused(data, status, message):
        (d / "model.params").write_bytes(data)
        with pytest.raises(LibraryError) as e:
            mlc.load(lib)
        assert message in str(e.value), str(e.value)
        api = CApi(lib)
        assert (api.status, api.error()) == (status, str(e.value))

    refused(good[:-10], 7, f"weights {d}/model.params: truncated: expected {len(good)} bytes, got {len(good) - 10}")
    refused(good + b"x", 7, "has trailing bytes")
    data = bytearray(good)
    data[len(good) // 2] ^= 1
    refused(bytes(data), 7, "model.params: corrupted: SHA-256 checksum mismatch")
    refused(b"PK\x03\x04" + good[4:], 7, "not an mlc weights file (bad magic)")
    refused(b"", 7, "empty (0 bytes)")
    # a weights file of another model: the tensor table says which tensor differs
    other = {k: np.zeros(v.shape[::-1] if v.ndim == 2 else v.shape, v.dtype)
             for k, v in container.decode(good)[0].items()}
    container.write_tensors(d / "other.params", other)
    refused((d / "other.params").read_bytes(), 8, "were written for a different model: tensor #")
    (d / "model.params").unlink()
    with pytest.raises(LibraryError, match=f"cannot open the weights file {d}/model.params"):
        mlc.load(lib)
    # same names, dtypes and shapes, new values: accepted (retrained weights, same code)
    tensors, _ = container.decode(good)
    container.write_tensors(d / "retrained.params", {k: v * 0 for k, v in tensors.items()})
    model = mlc.load(lib, params=d / "retrained.params")
    np.testing.assert_allclose(model(X), np.full((8, 10), 0.1, np.float32), rtol=1e-6)
    jit.export(d / "emb.so")
    with pytest.raises(LibraryError, match="embeds its weights"):
        mlc.load(d / "emb.so", params=d / "retrained.params")


def test_failed_export_keeps_the_previous_library(jit, tmp_path, monkeypatch):
    jit.export(tmp_path / "m.so")
    before = (tmp_path / "m.so").read_bytes()
    fake = tmp_path / "bin" / "cc"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'cc: internal error' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(fake.parent))
    with pytest.raises(ExportError, match="(?s)building the model library failed .*cc: internal error"):
        jit.export(tmp_path / "m.so")
    assert (tmp_path / "m.so").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_export_refusals(tmp_path):
    def step(w, g):
        return mlc.sum(w * g), w - 0.1 * g

    w = np.ones(4, np.float32)
    exe = mlc.compile(step, w, w, in_place=(0,))
    with pytest.raises(ExportError, match="updates arguments in place"):
        exe.export(tmp_path / "s.so")
    exe = mlc.compile(classifier, X)
    with pytest.raises(ValueError, match="params must be 'embedded' or 'external'"):
        exe.export(tmp_path / "a.so", params="inline")
    with pytest.raises(ValueError, match="written to a .so file"):
        exe.export(tmp_path / "a.dll")
    # files of the user's own with the names an export would write are never replaced
    (tmp_path / "mine.h").write_text("/* my own header */\n")
    with pytest.raises(ExportError, match="mine.h exists and was not written by mlc: not replacing it"):
        exe.export(tmp_path / "mine.so")
    assert (tmp_path / "mine.h").read_text() == "/* my own header */\n" and not (tmp_path / "mine.so").exists()
    (tmp_path / "lib.so").write_bytes(b"\x7fELF other library")
    with pytest.raises(ExportError, match="lib.so exists and was not written by mlc"):
        exe.export(tmp_path / "lib.so")
    exe.export(tmp_path / "again.so", params="external")   # an earlier export is replaced
    exe.export(tmp_path / "again.so", params="external")
    assert mlc.load(tmp_path / "again.so")(X).shape == (8, 10)


# ----------------------------------------------------------------------------- the ABI itself

def test_only_the_api_is_exported_and_the_header_declares_it(lib):
    if shutil.which("nm"):
        r = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True)
        assert sorted(line.split()[-1] for line in r.stdout.splitlines()) == sorted(API_FUNCTIONS)
    if shutil.which("readelf"):   # needs only the C runtime: no Python, no numpy, no mlc
        r = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True)
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", r.stdout)
        assert needed and all(re.fullmatch(r"lib(c|m|gomp|pthread|dl)\.so\.\d+|ld-linux.*", n) for n in needed), needed
    with open(os.path.join(C_DIR, "mlc_model.h")) as f:
        declared = re.findall(r"^MLC_API [^(]*?\b(mlc_\w+)\(", f.read(), re.M)
    assert sorted(declared) == sorted(API_FUNCTIONS)


def test_generated_header_compiles_cleanly(lib, tmp_path):
    src = tmp_path / "use.c"
    src.write_text('#include "model.h"\nint main(void) {\n'
                   '    int64_t shape[] = MLC_MODEL_INPUT_0_SHAPE;\n'
                   '    return (int)(shape[0] + MLC_MODEL_NUM_INPUTS + MLC_MODEL_INPUT_0_DTYPE) - 10;\n}\n')
    for std in ("c99", "c11"):
        r = subprocess.run([CC, f"-std={std}", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{lib.parent}",
                            "-fsyntax-only", str(src)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([CC, "-x", "c++", "-Wall", "-Werror", f"-I{lib.parent}", "-fsyntax-only", str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0 or "command not found" in r.stderr or "not found" in r.stderr, r.stderr


# ----------------------------------------------------------------------------- the C program, no Python

def _build_c_example(folder, header="model.h", cc=None):
    exe = folder / "run_model"
    cmd = [cc or CC, "-O2", "-Wall", "-Wextra", "-Werror", f"-DMODEL_HEADER=\"{header}\"", RUN_MODEL_C,
           f"-I{folder}", str(folder / header.replace(".h", ".so")), "-Wl,-rpath,$ORIGIN", "-lpthread", "-o",
           str(exe)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return exe


def test_c_program_runs_the_library_and_matches_python(lib, ext_lib):
    for path in (lib, ext_lib):
        exe = _build_c_example(path.parent)
        X.tofile(path.parent / "input.bin")
        r = subprocess.run([str(exe), "input.bin", "--output", "out.bin", "--threads", "4", "--repeat", "50"],
                           cwd=path.parent, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        assert r.returncode == 0, r.stderr
        assert "model classifier (mlc " in r.stdout and "1 input(s), 1 output(s)" in r.stdout
        assert "4 threads x 50 runs on one handle: outputs identical to the first run" in r.stdout
        assert re.search(r"latency over 50 runs: median [\d.]+ us", r.stdout)
        from_c = np.fromfile(path.parent / "out.bin", np.float32).reshape(8, 10)
        assert np.array_equal(from_c, mlc.load(path)(X))
        printed = [float(v) for v in r.stdout.split("output output0: shape [8, 10]\n")[1].split()[:10]]
        assert np.array_equal(np.float32(printed), from_c.reshape(-1)[:10])
        # the portable SHA-256 (the default uses the CPU's SHA extensions where it has them) verifies it too
        r = subprocess.run([str(exe), "input.bin"], cwd=path.parent, capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin", "MLC_PORTABLE_SHA256": "1"})
        assert r.returncode == 0, r.stderr
        # a wrong input file: refused with what the model expects
        (path.parent / "short.bin").write_bytes(b"\0" * 12)
        r = subprocess.run([str(exe), "short.bin"], cwd=path.parent, capture_output=True, text=True)
        assert r.returncode == 1 and "short.bin has 12 bytes; the model's inputs take 2048" in r.stderr


def test_onnx_model_to_library_with_the_cli(tmp_path, capsys):
    w = RNG.standard_normal((16, 4)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["features", "w"], ["y"]),
                               helper.make_node("Sigmoid", ["y"], ["score"])], "scorer",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, [2, 16])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, [2, 4])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "s.onnx")
    assert main(["compile", str(tmp_path / "s.onnx"), "-o", str(tmp_path / "s.so"), "--params", "external"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path}/s.so: ELF64" in out and "weights in" in out and "header" in out
    assert main(["inspect", str(tmp_path / "s.so")]) == 0
    text = capsys.readouterr().out
    for want in ("mlc model library 'scorer'", "SHA-256 verified", "features: float32[2, 16]",
                 "score: float32[2, 4]", f"mlc version: {mlc.__version__} (C ABI 1)", "target:      host (",
                 "weights:     1 tensors, 0.00 MiB (256 bytes), external: s.params (verified)", "kernels:     ",
                 "workspace:   ", "C functions: mlc_model_create, mlc_model_run, ... (header s.h)"):
        assert want in text, want
    x = RNG.standard_normal((2, 16)).astype(np.float32)
    np.testing.assert_allclose(mlc.load(tmp_path / "s.so")(x), 1 / (1 + np.exp(-(x @ w))), rtol=1e-5, atol=1e-6)
    np.save(tmp_path / "f.npy", x)
    assert main(["run", str(tmp_path / "s.so"), "--input", f"features={tmp_path}/f.npy", "--output-dir",
                 str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert f"loaded {tmp_path}/s.so in " in text and "output score: float32[2, 4]" in text
    np.testing.assert_allclose(np.load(tmp_path / "out" / "score.npy"), 1 / (1 + np.exp(-(x @ w))), rtol=1e-5)
    with pytest.raises(SystemExit, match="no data for input\\(s\\) features: f32\\[2,16\\]"):
        main(["run", str(tmp_path / "s.so")])
    os.remove(tmp_path / "s.params")
    assert main(["inspect", str(tmp_path / "s.so")]) == 0
    assert "external: s.params (MISSING next to the library)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--params and --prefix apply to a model library"):
        main(["compile", str(tmp_path / "s.onnx"), "--params", "external"])


AARCH64_CC = shutil.which("aarch64-linux-gnu-gcc")
QEMU = shutil.which("qemu-aarch64")


@pytest.mark.skipif(not (AARCH64_CC and QEMU and os.path.isdir("/usr/aarch64-linux-gnu")),
                    reason="needs aarch64-linux-gnu-gcc and qemu-aarch64 (Debian: gcc-aarch64-linux-gnu, qemu-user)")
def test_aarch64_library_runs_under_emulation_and_matches_the_host(lib, tmp_path, capsys):
    """A real cross build: the AArch64 library and the C program, run by qemu, give the
    host library's outputs to 1e-6."""
    from mlc.driver import Compiled
    from mlc.target import Target
    c = Compiled(mlc.trace(classifier, X), Target.get("neoverse-n1"))
    r = export_library(c, tmp_path / "model.so")
    assert str(r.elf) == "ELF64 little-endian AArch64 shared library"
    with pytest.raises(LibraryError, match="is built for AArch64"):
        mlc.load(tmp_path / "model.so")
    assert main(["inspect", str(tmp_path / "model.so")]) == 0
    assert "target:      neoverse-n1 (aarch64-unknown-linux-gnu" in capsys.readouterr().out
    exe = _build_c_example(tmp_path, cc=AARCH64_CC)
    X.tofile(tmp_path / "input.bin")
    p = subprocess.run([QEMU, "-L", "/usr/aarch64-linux-gnu", str(exe), "input.bin", "--output", "out.bin",
                        "--threads", "4"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    np.testing.assert_allclose(np.fromfile(tmp_path / "out.bin", np.float32).reshape(8, 10), mlc.load(lib)(X),
                               rtol=1e-6, atol=1e-6)



def test_module_function_entry_point_to_library(tmp_path, monkeypatch, capsys):
    name = "mlc_aot_test_entry"
    (tmp_path / f"{name}.py").write_text(
        "import numpy as np\nimport mlc\n\nW = np.arange(32 * 16, dtype=np.float32).reshape(32, 16) / 100\n\n"
        "def fn(x):\n    return mlc.tanh(x @ W)\n\n"
        "def model():\n    return fn, (np.ones((4, 32), np.float32),)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        assert main(["compile", f"{name}:model", "-o", "entry.so"]) == 0
    finally:
        sys.modules.pop(name, None)
    assert "wrote entry.so: ELF64" in capsys.readouterr().out
    x = RNG.standard_normal((4, 32)).astype(np.float32)
    w = np.arange(32 * 16, dtype=np.float32).reshape(32, 16) / 100
    np.testing.assert_allclose(mlc.load(tmp_path / "entry.so")(x), np.tanh(x @ w), rtol=1e-5, atol=1e-5)


def test_two_prefixed_models_link_into_one_c_program(tmp_path, capsys):
    """--prefix names the API functions, so two libraries link into one executable and
    both headers go into one translation unit."""
    mlc.compile(classifier, X).export(tmp_path / "a.so", prefix="cls")
    assert main(["compile", "gelu", "-o", str(tmp_path / "b.so"), "--prefix", "gelu_net"]) == 0
    gelu_meta = read_metadata(tmp_path / "b.so")
    (n_b,) = [e["nbytes"] // 4 for e in gelu_meta["inputs"]]
    src = tmp_path / "both.c"
    src.write_text(f"""#include <stdio.h>
#include "a.h"
#include "b.h"
static float xa[8][64], ya[8][10], xb[{n_b}], yb[{n_b}];
int main(int argc, char **argv) {{
    mlc_model *a, *b;
    FILE *f;
    int64_t sxa[] = CLS_MODEL_INPUT_0_SHAPE, sya[] = CLS_MODEL_OUTPUT_0_SHAPE;
    int64_t sxb[] = GELU_NET_MODEL_INPUT_0_SHAPE, syb[] = GELU_NET_MODEL_OUTPUT_0_SHAPE;
    for (int i = 0; i < 8 * 64; i++) xa[i / 64][i % 64] = (float)(i % 7) / 7.0f - 0.5f;
    for (int i = 0; i < {n_b}; i++) xb[i] = (float)(i % 5) / 5.0f - 0.4f;
    if (argc != 2 || !(f = fopen(argv[1], "wb"))) return 3;   /* the inputs, for the test to compare */
    if (fwrite(xa, sizeof xa, 1, f) != 1 || fwrite(xb, sizeof xb, 1, f) != 1 || fclose(f)) return 4;
    if (cls_model_create(NULL, 0, &a) || gelu_net_model_create(NULL, 0, &b)) return 1;
    mlc_tensor ia = {{xa, sizeof xa, MLC_FLOAT32, 2, sxa}}, oa = {{ya, sizeof ya, MLC_FLOAT32, 2, sya}};
    mlc_tensor ib = {{xb, sizeof xb, MLC_FLOAT32, GELU_NET_MODEL_INPUT_0_NDIM, sxb}};
    mlc_tensor ob = {{yb, sizeof yb, MLC_FLOAT32, GELU_NET_MODEL_OUTPUT_0_NDIM, syb}};
    if (cls_model_run(a, &ia, 1, &oa, 1) || gelu_net_model_run(b, &ib, 1, &ob, 1)) return 2;
    printf("%s %s %.9g %.9g\\n", CLS_MODEL_NAME, GELU_NET_MODEL_NAME, ya[3][4], yb[7]);
    cls_model_destroy(a);
    gelu_net_model_destroy(b);
    return 0;
}}
""")
    exe = tmp_path / "both"
    r = subprocess.run([CC, "-O2", "-Wall", "-Wextra", "-Werror", str(src), f"-I{tmp_path}", str(tmp_path / "a.so"),
                        str(tmp_path / "b.so"), "-Wl,-rpath,$ORIGIN", "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(exe), str(tmp_path / "inputs.bin")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    name_a, name_b, va, vb = r.stdout.split()
    # the C program's inputs, computed as it computes them: in float, not in double
    f32 = np.float32
    xa = ((np.arange(8 * 64) % 7).astype(f32) / f32(7) - f32(0.5)).reshape(8, 64)
    xb = ((np.arange(n_b) % 5).astype(f32) / f32(5) - f32(0.4)).reshape(gelu_meta["inputs"][0]["shape"])
    assert np.fromfile(tmp_path / "inputs.bin", f32).tobytes() == xa.tobytes() + xb.tobytes()
    assert (name_a, name_b) == ("classifier", gelu_meta["name"])
    assert np.float32(va) == mlc.load(tmp_path / "a.so")(xa)[3, 4]
    assert np.float32(vb) == mlc.load(tmp_path / "b.so")(xb).reshape(-1)[7]
    if shutil.which("nm"):
        r = subprocess.run(["nm", "-D", "--defined-only", str(tmp_path / "b.so")], capture_output=True, text=True)
        assert sorted(line.split()[-1] for line in r.stdout.splitlines()) == sorted(
            "gelu_net" + n[3:] for n in API_FUNCTIONS)
    with pytest.raises(ValueError, match="prefix must be a C identifier, got '2fast'"):
        mlc.compile(classifier, X).export(tmp_path / "c.so", prefix="2fast")
