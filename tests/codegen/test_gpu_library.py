"""Model libraries for cuda targets (mlc compile --target cuda-sm90 -o model.so): the file
format and metadata, the exported symbols, the embedded PTX and cubin, and the C runtime
(runtime_cuda.c) driven through a fake libcuda (fake_libcuda.c, built here) that records
every driver call: the launches it makes must be the GpuModule's launch table with the
pointers the memory plan says. No GPU is needed."""
import ctypes
import ctypes.util
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import mlc
from mlc.cli import main
from mlc.codegen.export import API_FUNCTIONS, ExportError, export_gpu_library
from mlc.driver import Compiled
from mlc.runtime import params as container
from mlc.runtime.library import MAGIC, LibraryError, read_metadata
from mlc.target import Target

HERE = os.path.dirname(os.path.abspath(__file__))
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
PTXAS = shutil.which("ptxas") or ("/usr/local/cuda/bin/ptxas" if os.access("/usr/local/cuda/bin/ptxas", os.X_OK)
                                  else None)
pytestmark = pytest.mark.skipif(CC is None, reason="exporting a model library needs a C compiler")

MLC_OK, MLC_ERROR_OUT_OF_MEMORY, MLC_ERROR_DEVICE = 0, 9, 10
EM_CUDA = 190   # the ELF machine of a cubin

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((64, 32)).astype(np.float32) * 0.2
B1 = RNG.standard_normal(32).astype(np.float32) * 0.1
W2 = RNG.standard_normal((32, 10)).astype(np.float32) * 0.2
X = RNG.standard_normal((8, 64)).astype(np.float32)


def classifier(x):
    return mlc.softmax(mlc.relu(x @ W1 + B1) @ W2, axis=-1)


def _export(tmp_path_factory, target: str, **options):
    c = Compiled(mlc.trace(classifier, X), Target.get(target))
    path = tmp_path_factory.mktemp(target) / "classifier.so"
    exported = c.export(path, **options)
    return c, path, exported


@pytest.fixture(scope="module", params=["cuda-sm90", "cuda-sm80"])
def lib(request, tmp_path_factory):
    return _export(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def sm90(tmp_path_factory):
    return _export(tmp_path_factory, "cuda-sm90")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """The fake libcuda, built from fake_libcuda.c."""
    out = tmp_path_factory.mktemp("fake") / "libcuda_fake.so"
    subprocess.run([CC, "-O1", "-shared", "-fPIC", "-o", str(out), os.path.join(HERE, "fake_libcuda.c")], check=True)
    return str(out)


# ----------------------------------------------------------------------------- the file

def test_metadata_describes_a_cuda_library(lib):
    c, path, exported = lib
    gm = c.gpu_module
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data.endswith(MAGIC)
    meta = read_metadata(path)   # trailer, SHA-256, metadata compiled into the code
    assert meta["format"] == "mlc-model-library" and meta["target"]["name"] == c.target.name
    assert meta["target"]["kind"] == "cuda" and meta["host"]["triple"] == Target.get("host").triple
    device = meta["device"]
    assert device["api"] == "cuda" and device["pointers"] == "device" and device["arch"] == c.target.arch
    assert device["kernels"] == list(dict.fromkeys(x.kernel for x in gm.launches))
    assert device["launches"] == [{"kernel": x.kernel, "grid": list(x.grid), "block": list(x.block),
                                   "dynamic_shared_bytes": x.dynamic_shared_bytes,
                                   "args": [[a.space, a.index] for a in x.args]} for x in gm.launches]
    assert meta["workspace_bytes"] == gm.workspace_bytes == c.plan.workspace_bytes
    assert meta["params"]["count"] == 3 and meta["params"]["storage"] == "embedded"
    assert "driving a CUDA device: " in str(exported) and f"{len(gm.launches)} launches" in str(exported)
    header = path.with_suffix(".h").read_text()
    assert "CUDA DEVICE pointers" in header and "MLC_ERROR_DEVICE = 10" in header


@pytest.mark.skipif(shutil.which("nm") is None, reason="nm (binutils) lists a library's symbols")
def test_only_the_api_is_exported(sm90):
    _, path, _ = sm90
    out = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True).stdout
    assert sorted(line.split()[-1] for line in out.splitlines() if line.strip()) == sorted(API_FUNCTIONS)
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(path)], capture_output=True, text=True).stdout
    assert not re.search(r"\bcu[A-Z]\w*", undefined)   # the driver is opened at run time, never linked
    if shutil.which("readelf"):   # needs the C library only: no libcuda, no CUDA runtime
        r = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True)
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", r.stdout)
        assert needed and all(re.fullmatch(r"lib(c|pthread|dl)\.so\.\d+|ld-linux.*", n) for n in needed), needed


def _embedded(data: bytes, ptx: str) -> tuple[bytes, bytes | None]:
    """The library's PTX (up to its NUL) and its cubin (the ELF image inside the library)."""
    start = data.index(ptx.encode()[:64])
    end = data.index(b"\0", start)
    cubin = None
    for m in re.finditer(rb"\x7fELF", data[1:]):
        at = m.start() + 1
        if int.from_bytes(data[at + 18:at + 20], "little") == EM_CUDA:
            def field(offset, size):
                return int.from_bytes(data[at + offset:at + offset + size], "little")
            # the image ends with its section or its program header table, whichever is last
            size = max(field(40, 8) + field(60, 2) * field(58, 2), field(32, 8) + field(56, 2) * field(54, 2))
            cubin = data[at:at + size]
            break
    return data[start:end], cubin


def test_embedded_ptx_and_cubin_assemble_for_the_arch(lib, tmp_path):
    if PTXAS is None:
        pytest.skip("ptxas (CUDA toolkit) is not installed: the library carries the PTX alone")
    c, path, _ = lib
    ptx, cubin = _embedded(path.read_bytes(), c.gpu_module.ptx)
    assert ptx.decode() == c.gpu_module.ptx and f".target {c.target.arch}".encode() in ptx
    src = tmp_path / "module.ptx"
    src.write_bytes(ptx)
    r = subprocess.run([PTXAS, f"-arch={c.target.arch}", "-o", str(tmp_path / "m.cubin"), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert cubin is not None and len(cubin) == read_metadata(path)["device"]["cubin_bytes"]
    assert cubin == (tmp_path / "m.cubin").read_bytes()   # what ptxas makes of the PTX for this arch


def test_without_ptxas_the_library_carries_ptx_only(tmp_path_factory, monkeypatch):
    tmp = tmp_path_factory.mktemp("nocuda")
    if shutil.which("ptxas", path=os.path.dirname(CC)):
        pytest.skip(f"ptxas is in {os.path.dirname(CC)}, next to the C compiler")
    monkeypatch.setenv("CUDA_HOME", str(tmp))
    monkeypatch.setenv("PATH", os.path.dirname(CC))
    c, path, exported = _export(tmp_path_factory, "cuda-sm90")
    device = read_metadata(path)["device"]
    assert device["code"] == ["ptx"] and device["cubin_bytes"] == 0
    assert "no ptxas here" in str(exported)
    assert _embedded(path.read_bytes(), c.gpu_module.ptx)[1] is None


# ----------------------------------------------------------------------------- the C runtime

class _Model:
    """A cuda library through its C API (ctypes), with the fake driver's log."""

    def __init__(self, path, monkeypatch, tmp_path, libcuda, ptx=None, fail=None, context=False):
        self.log = tmp_path / "driver.log"
        if self.log.exists():
            self.log.unlink()
        monkeypatch.setenv("MLC_LIBCUDA", libcuda)
        monkeypatch.setenv("FAKE_CUDA_LOG", str(self.log))
        if ptx is not None:   # for a cubin, the fake reads the kernels' parameters from the PTX
            (tmp_path / "module.ptx").write_text(ptx)
            monkeypatch.setenv("FAKE_CUDA_PTX", str(tmp_path / "module.ptx"))
        for name, value in (("FAKE_CUDA_FAIL", fail), ("FAKE_CUDA_CONTEXT", "1" if context else None)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        self.lib.mlc_last_error.restype = ctypes.c_char_p
        self.lib.mlc_model_destroy.argtypes = [ctypes.c_void_p]
        self.lib.mlc_model_run_unchecked.argtypes = [ctypes.c_void_p] * 3
        self.handle = ctypes.c_void_p()

    def create(self, params=None) -> int:
        return self.lib.mlc_model_create(params, 0, ctypes.byref(self.handle))

    def error(self) -> str:
        return self.lib.mlc_last_error().decode()

    def run(self, x, y) -> int:
        ins, outs = (ctypes.c_void_p * 1)(x.ctypes.data), (ctypes.c_void_p * 1)(y.ctypes.data)
        return self.lib.mlc_model_run_unchecked(self.handle, ins, outs)

    def destroy(self):
        self.lib.mlc_model_destroy(self.handle)
        self.handle = ctypes.c_void_p()

    def calls(self) -> list[list[str]]:
        return [line.split() for line in self.log.read_text().splitlines()] if self.log.exists() else []


def _weights_layout(c):
    tensors = {}
    for v, a in zip(c.lowered.params, c.lowered.param_data):
        tensors[v.name or f"param{len(tensors)}"] = a
    _, entries, nbytes = container.layout(tensors)
    return [e["offset"] for e in entries], nbytes, list(tensors.values())


def _replays_the_launch_table(c, m, x, y) -> dict:
    """Create, check the module, kernels, weights and workspace the fake driver saw, run
    on (x, y), check every launch against the GpuModule's table with the pointers the
    plan says, destroy and check everything was freed. The allocations, by pointer."""
    gm = c.gpu_module
    meta = read_metadata(m.path)
    assert m.create() == MLC_OK, m.error()
    calls = m.calls()
    assert [call[1] for call in calls if call[0] == "cuModuleGetFunction"] == meta["device"]["kernels"]
    # the weights: one allocation holding the container's data section, copied once
    offsets, nbytes, arrays = _weights_layout(c)
    allocs = {int(call[1]): int(call[2]) for call in calls if call[0] == "cuMemAlloc"}
    copies = [(int(call[1]), int(call[2])) for call in calls if call[0] == "cuMemcpyHtoD"]
    assert len(copies) == 1 and copies[0][1] == nbytes and allocs[copies[0][0]] == nbytes
    weights = copies[0][0]
    for offset, a in zip(offsets, arrays):   # "device" memory is host memory here: the bytes are the weights
        assert ctypes.string_at(weights + offset, a.nbytes) == a.tobytes()
    arena = [p for p, n in allocs.items() if p != weights and n == gm.workspace_bytes]
    assert len(arena) == 1 and len(allocs) == 2
    arena = arena[0]

    before = len(calls)
    assert m.run(x, y) == MLC_OK, m.error()
    launched = [call for call in m.calls()[before:] if call[0] == "cuLaunchKernel"]

    def pointer(slot):
        return {"input": lambda i: x.ctypes.data, "output": lambda i: y.ctypes.data,
                "param": lambda i: weights + offsets[i], "workspace": lambda i: arena + i}[slot.space](slot.index)

    expected = [[x.kernel, "grid", *map(str, x.grid), "block", *map(str, x.block), "shared",
                 str(x.dynamic_shared_bytes), "stream", "(nil)", "extra", "(nil)", "contexts", "1", "args",
                 *(str(pointer(a)) for a in x.args)] for x in gm.launches if all(x.grid)]
    assert [call[1:] for call in launched] == expected
    assert m.calls()[-1][:3] == ["cuStreamSynchronize", "(nil)", "contexts"]   # waited, in the context
    before = len(m.calls())
    m.destroy()
    tail = m.calls()[before:]
    assert sorted(int(call[1]) for call in tail if call[0] == "cuMemFree") == sorted(allocs)
    assert ["cuModuleUnload"] in tail and ["cuDevicePrimaryCtxRelease", "0"] in tail
    return allocs


@pytest.mark.parametrize("fallback", [False, True], ids=["cubin", "ptx-fallback"])
def test_runs_the_launch_table_with_the_plans_pointers(lib, fake, monkeypatch, tmp_path, fallback):
    c, path, _ = lib
    m = _Model(path, monkeypatch, tmp_path, fake, ptx=c.gpu_module.ptx, fail="cuModuleLoadData" if fallback else None)
    x = RNG.standard_normal(X.shape).astype(np.float32)
    _replays_the_launch_table(c, m, x, np.zeros((8, 10), np.float32))
    loads = [call[1] for call in m.calls() if call[0] == "cuModuleLoadData"]
    has_cubin = "cubin" in read_metadata(path)["device"]["code"]
    assert loads == (["cubin", "ptx"] if fallback else ["cubin"]) if has_cubin else ["ptx"]


def test_more_than_48k_of_dynamic_shared_memory_sets_the_kernel_attribute(sm90, fake, monkeypatch, tmp_path):
    import dataclasses
    from mlc.codegen.nvptx import GpuModule
    c, _, _ = sm90
    gm = c.gpu_module
    big = dataclasses.replace(gm.launches[0], dynamic_shared_bytes=100 << 10)
    path = tmp_path / "big.so"
    export_gpu_library(c, path, GpuModule(gm.ptx, [big, *gm.launches[1:]], gm.workspace_bytes))
    m = _Model(path, monkeypatch, tmp_path, fake, ptx=gm.ptx)
    assert m.create() == MLC_OK, m.error()
    assert m.run(X, np.zeros((8, 10), np.float32)) == MLC_OK, m.error()
    m.destroy()
    calls = m.calls()
    # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES (8), once, for that kernel only
    assert [call for call in calls if call[0] == "cuFuncSetAttribute"] == [
        ["cuFuncSetAttribute", big.kernel, "8", str(100 << 10)]]
    launched = [call for call in calls if call[0] == "cuLaunchKernel"]
    assert launched[0][1] == big.kernel and launched[0][11] == str(100 << 10) and launched[1][11] == "0"


LIGHT = os.path.join(os.path.dirname(__import__("onnx").__file__), "backend", "test", "data", "light")


@pytest.mark.skipif(not os.path.exists(os.path.join(LIGHT, "light_squeezenet.onnx")),
                    reason="the ONNX package's light models are not installed")
def test_an_onnx_model_runs_its_launch_table(fake, monkeypatch, tmp_path):
    from mlc.frontend.onnx import from_onnx
    c = Compiled(from_onnx(os.path.join(LIGHT, "light_squeezenet.onnx")), Target.get("cuda-sm90"))
    path = tmp_path / "squeezenet.so"
    c.export(path)
    (x_type,), (y_type,) = [v.type for v in c.source.inputs], [v.type for v in c.lowered.outputs]
    x = RNG.standard_normal(x_type.shape).astype(np.float32)
    y = np.zeros(y_type.shape, np.float32)
    m = _Model(path, monkeypatch, tmp_path, fake, ptx=c.gpu_module.ptx)
    _replays_the_launch_table(c, m, x, y)
    assert len([call for call in m.calls() if call[0] == "cuLaunchKernel"]) == len(c.gpu_module.launches) > 50


def test_uses_the_current_context_when_there_is_one(sm90, fake, monkeypatch, tmp_path):
    c, path, _ = sm90
    m = _Model(path, monkeypatch, tmp_path, fake, ptx=c.gpu_module.ptx, context=True)
    assert m.create() == MLC_OK, m.error()
    m.destroy()
    names = [call[0] for call in m.calls()]
    assert "cuCtxGetCurrent" in names and "cuDevicePrimaryCtxRetain" not in names
    assert "cuDevicePrimaryCtxRelease" not in names


def test_a_failed_launch_is_an_error_naming_the_call(sm90, fake, monkeypatch, tmp_path):
    c, path, _ = sm90
    gm = c.gpu_module
    m = _Model(path, monkeypatch, tmp_path, fake, ptx=gm.ptx, fail="cuLaunchKernel")
    assert m.create() == MLC_OK, m.error()
    y = np.zeros((8, 10), np.float32)
    assert m.run(X, y) == MLC_ERROR_DEVICE
    assert m.error() == (f"cuLaunchKernel failed: CUDA_ERROR_LAUNCH_FAILED (719) (launch 1 of {len(gm.launches)}, "
                         f"kernel {gm.launches[0].kernel})")
    m.lib.mlc_status_name.restype = ctypes.c_char_p
    assert m.lib.mlc_status_name(MLC_ERROR_DEVICE) == b"MLC_ERROR_DEVICE"
    m.destroy()


def test_out_of_device_memory_at_create_frees_what_it_took(sm90, fake, monkeypatch, tmp_path):
    c, path, _ = sm90
    m = _Model(path, monkeypatch, tmp_path, fake, ptx=c.gpu_module.ptx, fail="cuMemAlloc_v2")
    assert m.create() == MLC_ERROR_OUT_OF_MEMORY and not m.handle.value
    assert m.error() == "cuMemAlloc failed: CUDA_ERROR_OUT_OF_MEMORY (2) (9600 bytes of weights)"
    names = [call[0] for call in m.calls()]
    assert names[-2:] == ["cuModuleUnload", "cuDevicePrimaryCtxRelease"]


def test_without_libcuda_create_says_the_driver_is_needed(sm90, monkeypatch, tmp_path):
    _, path, _ = sm90
    m = _Model(path, monkeypatch, tmp_path, "/nonexistent/libcuda.so.1")
    assert m.create() == MLC_ERROR_DEVICE and not m.handle.value
    assert re.fullmatch(r"/nonexistent/libcuda\.so\.1 could not be loaded: .*No such file or directory; a cuda model "
                        r"library needs the NVIDIA driver \(MLC_LIBCUDA names it\)", m.error()), m.error()


def test_a_driver_without_a_function_is_named(sm90, monkeypatch, tmp_path):
    _, path, _ = sm90
    libm = ctypes.util.find_library("m")
    if libm is None:
        pytest.skip("no libm to stand in for a driver without the CUDA functions")
    m = _Model(path, monkeypatch, tmp_path, libm)
    assert m.create() == MLC_ERROR_DEVICE
    assert m.error() == f"{libm} has no cuInit: the NVIDIA driver is too old for this library (it needs CUDA 11 or later)"


def test_external_weights_are_uploaded_from_the_file(tmp_path_factory, fake, monkeypatch, tmp_path):
    c, path, exported = _export(tmp_path_factory, "cuda-sm80", params="external")
    assert exported.params and os.path.exists(exported.params)
    m = _Model(path, monkeypatch, tmp_path, fake, ptx=c.gpu_module.ptx)
    assert m.create() == MLC_OK, m.error()
    offsets, nbytes, arrays = _weights_layout(c)
    (dst, n), = [(int(call[1]), int(call[2])) for call in m.calls() if call[0] == "cuMemcpyHtoD"]
    assert n == nbytes and ctypes.string_at(dst + offsets[2], arrays[2].nbytes) == arrays[2].tobytes()
    m.destroy()
    with open(exported.params, "r+b") as f:   # a damaged weights file is refused before the device is touched
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    m = _Model(path, monkeypatch, tmp_path, fake, ptx=c.gpu_module.ptx)
    assert m.create() == 7 and "SHA-256 checksum mismatch" in m.error()   # MLC_ERROR_CORRUPT
    assert m.calls() == []


# ----------------------------------------------------------------------------- Python and the command line

def test_load_without_a_device_says_what_is_needed(sm90):
    _, path, _ = sm90
    try:
        import cupy   # noqa: F401
        pytest.skip("CuPy is installed: whether a device is present decides")
    except ImportError:
        pass
    with pytest.raises(LibraryError, match=r"is a cuda model library \(cuda-sm90\): it runs on CUDA device pointers, "
                                           r"so mlc.load needs CuPy and a GPU here: running on a CUDA device needs "
                                           r"CuPy"):
        mlc.load(path)


def _host_cupy():
    """A stand-in for CuPy over host memory: arrays whose ``.data.ptr`` the library takes
    as device pointers (the fake driver's memory is host memory)."""
    import types

    class ndarray(np.ndarray):
        @property
        def data(self):
            return types.SimpleNamespace(ptr=self.ctypes.data)

    stream = types.SimpleNamespace(synchronize=lambda: None)
    cp = types.ModuleType("cupy")
    cp.ndarray = ndarray
    cp.asarray = lambda a: np.asarray(a).view(ndarray)
    cp.ascontiguousarray = lambda a: np.ascontiguousarray(a).view(ndarray)
    cp.empty = lambda shape, dtype: np.empty(shape, dtype).view(ndarray)
    cp.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, free=lambda p: None),
                                    get_current_stream=lambda: stream)
    return cp


def test_load_passes_the_arrays_device_pointers(sm90, fake, monkeypatch, tmp_path):
    import sys
    c, path, _ = sm90
    cp = _host_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    m = _Model(path, monkeypatch, tmp_path, fake, ptx=c.gpu_module.ptx)
    exe = mlc.load(path)
    x = cp.asarray(X)
    y = exe(x)
    assert isinstance(y, cp.ndarray) and y.shape == (8, 10) and y.dtype == np.float32
    launched = [call for call in m.calls() if call[0] == "cuLaunchKernel"]
    assert len(launched) == len(c.gpu_module.launches)
    first = launched[0][launched[0].index("args") + 1:]
    assert c.gpu_module.launches[0].args[0].space == "input" and first[0] == str(x.data.ptr)
    last = launched[-1][launched[-1].index("args") + 1:]
    assert [str(y.data.ptr)] == [p for p, a in zip(last, c.gpu_module.launches[-1].args) if a.space == "output"]
    with pytest.raises(TypeError, match=r"argument .x. expects f32\[8,64\] .*got float32 of shape \(4, 64\)"):
        exe(cp.asarray(X[:4]))


def test_inspect_shows_the_device_code_and_launches(sm90, capsys):
    c, path, _ = sm90
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    gm = c.gpu_module
    assert "target:      cuda-sm90 (nvptx64-nvidia-cuda, sm_90): a cuda model library" in out
    assert f"launches:    {len(gm.launches)} of {len(set(x.kernel for x in gm.launches))} kernels" in out
    first = gm.launches[0]
    assert f"    1. {first.kernel} grid {first.grid} block {first.block}: input0, param0" in out
    assert "in device memory (runs on one handle take turns)" in out


def test_cli_compiles_a_cuda_library(tmp_path, capsys):
    out = tmp_path / "mlp.so"
    assert main(["compile", "mlp", "--target", "cuda-sm90", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}: ELF64" in text and "driving a CUDA device" in text
    assert read_metadata(out)["device"]["arch"] == "sm_90"
    with pytest.raises(SystemExit, match="--profile builds a CPU library that times its kernels"):
        main(["compile", "mlp", "--target", "cuda-sm90", "-o", str(out), "--profile"])
    with pytest.raises(SystemExit, match=r"a cubin \(-o MODEL.cubin\) or a cuda model library \(-o MODEL.so\)"):
        main(["compile", "mlp", "--target", "cuda-sm90", "-o", str(tmp_path / "m.o")])


def test_export_gpu_library_refuses_a_cpu_compilation(tmp_path):
    c = Compiled(mlc.trace(classifier, X), Target.get("host"))
    with pytest.raises(ExportError, match="a cuda model library is built for a cuda target; host is a cpu target"):
        export_gpu_library(c, tmp_path / "m.so", None)


# ----------------------------------------------------------------------------- on a real device

def _device_cupy():
    try:
        from mlc.runtime.cuda import CudaUnavailable, cupy_module
        return cupy_module()
    except (ImportError, CudaUnavailable) as e:
        return str(e)


@pytest.mark.skipif(isinstance(_device_cupy(), str), reason="no CUDA device (the fake driver tests above run instead)")
def test_a_cuda_library_runs_on_the_device_like_numpy(tmp_path):
    cp = _device_cupy()
    path = tmp_path / "classifier.so"
    Compiled(mlc.trace(classifier, X), Target.get("cuda")).export(path)
    exe = mlc.load(path)
    y = exe(cp.asarray(X))
    h = np.maximum(X @ W1 + B1, 0) @ W2
    want = np.exp(h - h.max(-1, keepdims=True))
    np.testing.assert_allclose(cp.asnumpy(y), want / want.sum(-1, keepdims=True), rtol=1e-4, atol=1e-6)
