"""Targets (host, named, JSON files) and cross-compiled object files."""
import json
import os
import platform
import shutil
import stat

import numpy as np
import pytest

import mlc
from mlc.cli import main
from mlc.codegen.cross import ToolchainNotFound, find_c_compiler, write_object
from mlc.runtime.elf import elf_header, elf_machine
from mlc.driver import Compiled
from mlc.target import NAMED, Target, host_caches, parse_size

HOST_ELF = {"x86_64": "x86-64", "AMD64": "x86-64", "aarch64": "AArch64", "arm64": "AArch64",
            "riscv64": "RISC-V"}.get(platform.machine())


def matmul_relu(x, w):
    return mlc.relu(x @ w)


def _inputs():
    rng = np.random.default_rng(0)
    return rng.standard_normal((64, 96), dtype=np.float32), rng.standard_normal((96, 80), dtype=np.float32)


def _compiled(target):
    return Compiled(mlc.trace(matmul_relu, *_inputs()), Target.get(target))


# ----------------------------------------------------------------------------- host and named targets

def test_host_target():
    t = Target.get("host")
    assert t is Target.get(None) and t.name == "host" and t.kind == "cpu" and t.is_host
    assert t.cores >= 1 and t.vector_bytes >= 16
    assert t.l1d_bytes > 0 and t.l2_bytes > 0 and t.l3_bytes > 0
    assert Target.from_json(t.to_json()) == t


def test_host_caches_from_sysfs(tmp_path):
    for i, (level, typ, size) in enumerate([(1, "Data", "32K"), (1, "Instruction", "64K"), (2, "Unified", "512K"),
                                            (3, "Unified", "32768K")]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        for name, value in (("level", level), ("type", typ), ("size", size)):
            (d / name).write_text(f"{value}\n")
    assert host_caches(str(tmp_path)) == {"l1d": 32 * 1024, "l2": 512 * 1024, "l3": 32 * 2**20}
    (tmp_path / "index3" / "size").write_text("1M\n")
    assert host_caches(str(tmp_path))["l3"] == 2**20
    # levels sysfs does not report (or no sysfs at all) keep the defaults
    assert host_caches(str(tmp_path / "none")) == {"l1d": 32 * 1024, "l2": 512 * 1024, "l3": 8 * 2**20}


def test_parse_size():
    assert parse_size("32K") == 32768 and parse_size("32768K") == 32 * 2**20 and parse_size("1M") == 2**20
    assert parse_size("1.5MiB") == 3 * 2**19 and parse_size(4096) == 4096 and parse_size("64 KB") == 65536
    for bad in ("32Q", "", "K", -1, 1.5, True, "0.3K"):
        with pytest.raises(ValueError):
            parse_size(bad)


@pytest.mark.parametrize("name, triple, vector_bytes, kind", [
    ("znver3", "x86_64-unknown-linux-gnu", 32, "cpu"),
    ("skylake-avx512", "x86_64-unknown-linux-gnu", 64, "cpu"),
    ("neoverse-n1", "aarch64-unknown-linux-gnu", 16, "cpu"),
    ("cortex-a72", "aarch64-unknown-linux-gnu", 16, "cpu"),
    ("sifive-u74", "riscv64-unknown-linux-gnu", 8, "cpu"),
    ("rv64gcv", "riscv64-unknown-linux-gnu", 16, "cpu"),
    ("cuda-sm80", "nvptx64-nvidia-cuda", 16, "cuda"),
    ("cuda-sm90", "nvptx64-nvidia-cuda", 16, "cuda"),
])
def test_named_targets(name, triple, vector_bytes, kind):
    t = Target.get(name)   # from_name checks the triple, CPU and features with LLVM
    assert (t.name, t.triple, t.vector_bytes, t.kind) == (name, triple, vector_bytes, kind)
    assert t.lanes(4) == max(1, vector_bytes // 4) and t.cores >= 1 and t.l1d_bytes > 0 and t.l2_bytes > 0
    assert t.arch == ({"cuda-sm80": "sm_80", "cuda-sm90": "sm_90"}.get(name, ""))
    assert Target.from_json(t.to_json()) == t and name in str(t)


def test_named_target_table_is_tested_and_caches():
    assert len(NAMED) == 8
    assert (Target.get("znver3").l2_bytes, Target.get("znver3").l3_bytes) == (512 * 1024, 32 * 2**20)
    assert (Target.get("neoverse-n1").l1d_bytes, Target.get("skylake-avx512").l2_bytes) == (65536, 2**20)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown target 'pentium9'; known targets: host, znver3, .*neoverse-n1"):
        Target.get("pentium9")
    with pytest.raises(TypeError, match="target must be"):
        Target.get(3)


def test_is_host_and_key():
    arm = platform.machine() in ("aarch64", "arm64")
    assert Target.get("neoverse-n1").is_host == arm and not Target.get("cuda-sm90").is_host
    keys = {Target.get(n).key for n in NAMED} | {Target.get("host").key}
    assert len(keys) == len(NAMED) + 1
    # cache sizes may change the schedule, so they are part of the code's identity
    a = Target.from_json({"base": "znver3", "name": "a"})
    b = Target.from_json({"base": "znver3", "name": "b", "caches": {"l2": "1M"}})
    assert a.key == Target.get("znver3").key and a.key != b.key


def test_direct_construction_is_checked():
    t = Target("x86_64-unknown-linux-gnu", "znver3", "", 8, 32)   # the old five-field form
    assert t.name == "znver3" and t.kind == "cpu" and t.l1d_bytes == 32 * 1024
    with pytest.raises(ValueError, match="cores must be a whole number >= 1"):
        Target("x86_64-unknown-linux-gnu", "znver3", "", 0, 32)
    with pytest.raises(ValueError, match="a cuda target needs arch"):
        Target("nvptx64-nvidia-cuda", "sm_90", "", 132, 16, kind="cuda")


# ----------------------------------------------------------------------------- JSON files

BOARD = {"name": "my-board", "triple": "aarch64-unknown-linux-gnu", "cpu": "cortex-a76", "features": "+neon,+dotprod",
         "cores": 8, "vector_bytes": 16, "caches": {"l1d": "64K", "l2": "512K", "l3": "2M"}}


def _write(tmp_path, data, name="board.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return str(p)


def test_json_file_round_trip(tmp_path):
    path = _write(tmp_path, BOARD)
    t = Target.from_file(path)
    assert (t.name, t.cpu, t.cores, t.l1d_bytes, t.l2_bytes, t.l3_bytes) == ("my-board", "cortex-a76", 8, 65536,
                                                                             524288, 2 * 2**20)
    assert not t.is_host or platform.machine() in ("aarch64", "arm64")
    again = _write(tmp_path, t.to_json(), "again.json")
    assert Target.from_file(again) == t
    assert Target.get(path) == t and Target.get(BOARD) == t
    # features as a list, sizes as bytes
    assert Target.from_json({**BOARD, "features": ["+neon", "+dotprod"],
                             "caches": {"l1d": 65536, "l2": 524288, "l3": 2097152}}) == t


def test_json_base_inherits_and_overrides(tmp_path):
    t = Target.get(_write(tmp_path, {"base": "neoverse-n1", "name": "graviton2-8", "cores": 8,
                                     "caches": {"l3": "16M"}}))
    n1 = Target.get("neoverse-n1")
    assert (t.name, t.triple, t.cpu, t.vector_bytes, t.l1d_bytes) == ("graviton2-8", n1.triple, n1.cpu, 16, 65536)
    assert (t.cores, t.l3_bytes) == (8, 16 * 2**20)
    gpu = Target.from_json({"base": "cuda-sm90", "name": "h100-pcie", "cores": 114})
    assert (gpu.kind, gpu.arch, gpu.cores) == ("cuda", "sm_90", 114)


@pytest.mark.parametrize("change, message", [
    ({"vector_width": 128}, "unknown key 'vector_width'; a target has the keys name, base"),
    ({"triple": None}, "missing required key 'triple' (or name a known target in 'base'"),
    ({"caches": {"l1d": "64K", "l2": "1Q", "l3": "2M"}}, "'caches.l2': cannot read '1Q' as a size"),
    ({"caches": {"l1d": "64K", "l2": "1M"}}, "missing required key 'caches.l3'"),
    ({"caches": {"l1d": "64K", "l2": "1M", "l3": 0, "l4": "1G"}}, "unknown key 'caches.l4'"),
    ({"caches": "64K"}, "'caches' must be an object with l1d, l2, l3"),
    ({"triple": "quantum99-unknown-linux-gnu"}, "'triple': LLVM does not know 'quantum99-unknown-linux-gnu'"),
    ({"triple": 64}, "'triple' must be an LLVM target triple"),
    ({"cpu": "cortex-a999"}, "'cpu': LLVM does not know the CPU 'cortex-a999' for aarch64-unknown-linux-gnu"),
    ({"features": "+neon,+warpdrive"}, "'features': LLVM does not know the feature '+warpdrive'"),
    ({"features": "neon"}, "'features' must be LLVM features like '+neon,+fp16'"),
    ({"cores": "8"}, "'cores' must be a whole number >= 1, got '8'"),
    ({"cores": True}, "'cores' must be a whole number >= 1"),
    ({"vector_bytes": 24}, "'vector_bytes' must be the SIMD register width in bytes, a power of two"),
    ({"kind": "tpu"}, "'kind' must be one of cpu, cuda, got 'tpu'"),
    ({"arch": "sm_90"}, "'arch' is for cuda targets only"),
    ({"base": "pentium9"}, "'base' must name a known target"),
])
def test_json_errors_name_the_file_and_key(tmp_path, change, message):
    data = {k: v for k, v in {**BOARD, **change}.items() if v is not None}
    path = _write(tmp_path, data)
    with pytest.raises(ValueError) as e:
        Target.from_file(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value), str(e.value)


def test_json_file_problems(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{\"name\": ")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        Target.get(str(bad))
    with pytest.raises(ValueError, match="cannot read target file .*nosuch.json"):
        Target.get(str(tmp_path / "nosuch.json"))
    with pytest.raises(ValueError, match="a target is a JSON object, got list"):
        Target.from_file(_write(tmp_path, [1, 2]))


# ----------------------------------------------------------------------------- object files

@pytest.mark.parametrize("name, machine", [("neoverse-n1", "AArch64"), ("cortex-a72", "AArch64"),
                                           ("sifive-u74", "RISC-V"), ("rv64gcv", "RISC-V"),
                                           ("skylake-avx512", "x86-64")])
def test_cross_compiled_objects_are_elf_for_the_target(tmp_path, name, machine):
    c = _compiled(name)
    assert c.parallel == (c.target.cores > 1) or c.target.is_host
    path = tmp_path / f"{name}.o"
    head = write_object(c, path)
    assert (head.bits, head.endian, head.machine, head.type) == (64, "little", machine, "relocatable object")
    assert elf_machine(path) == machine == elf_machine(path.read_bytes())
    assert str(head) == f"ELF64 little-endian {machine} relocatable object"
    assert b"mlc_entry" in path.read_bytes()


def test_cuda_targets_have_no_object_file(tmp_path):
    c = _compiled("cuda-sm90")
    with pytest.raises(ValueError, match="cuda-sm90 is a cuda target .*mlc generates CPU code only"):
        write_object(c, tmp_path / "k.o")
    with pytest.raises(ToolchainNotFound, match="CPU code only"):
        find_c_compiler(c.target)


def test_elf_header_of_non_elf():
    with pytest.raises(ValueError, match="data is not an ELF file"):
        elf_header(b"MZ\x90\x00" + bytes(40))


def test_cross_library_without_a_cross_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))   # no compiler of any kind
    with pytest.raises(ToolchainNotFound) as e:
        find_c_compiler(Target.get("neoverse-n1"))
    assert str(e.value) == (
        "no C compiler for aarch64-unknown-linux-gnu (neoverse-n1) on PATH: looked for aarch64-linux-gnu-gcc, "
        "aarch64-unknown-linux-gnu-gcc, clang with the C library headers in /usr/aarch64-linux-gnu/include; "
        "install a cross compiler (Debian: apt install gcc-aarch64-linux-gnu) or write an object file (.o) and "
        "link it on the device")


def test_cross_compiler_is_found_and_called(tmp_path, monkeypatch):
    """A cross gcc on PATH builds the model library: the runtime, the tables and the
    model's object, with libm and (for parallel loops) libgomp, only the C API exported;
    the trailer records the target."""
    from mlc.codegen.export import export_library
    from mlc.runtime.library import read_metadata
    log = tmp_path / "args.txt"
    tool = tmp_path / "aarch64-linux-gnu-gcc"
    # writes the arguments and, as the output (the word after -o), an AArch64 ELF header
    tool.write_text(f"#!/bin/sh\necho \"$@\" > {log}\nwhile [ \"$1\" != -o ]; do shift; done\n"
                    "printf '\\177ELF\\2\\1\\1\\0\\0\\0\\0\\0\\0\\0\\0\\0\\3\\0\\267\\0' > \"$2\"\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    t = Target.get("neoverse-n1")
    assert find_c_compiler(t) == ["aarch64-linux-gnu-gcc"]
    c = _compiled(t)
    out = export_library(c, tmp_path / "m.so")
    assert out.compiler == "aarch64-linux-gnu-gcc" and str(out.elf) == "ELF64 little-endian AArch64 shared library"
    args = log.read_text().split()
    assert args[args.index("-o") + 1].endswith("model.so") and "-shared" in args and "-fPIC" in args
    assert {"tables.c", "model.o", "-lm", "-Wl,--version-script=exports.map"} <= set(args)
    assert any(a.endswith("runtime.c") for a in args)
    obj = tmp_path / "m.o"
    write_object(c, obj)
    assert ("-lgomp" in args) == (b"GOMP_parallel" in obj.read_bytes())
    # the stand-in compiler writes an ELF header only, without the tables that hold the
    # metadata's copy the loader compares with the trailer: read the trailer alone
    meta = read_metadata(tmp_path / "m.so", verify=False)
    assert meta["target"]["name"] == "neoverse-n1" and meta["target"]["triple"] == "aarch64-unknown-linux-gnu"
    assert (tmp_path / "m.h").read_text().count("MLC_MODEL_INPUT_0_SHAPE {64, 96}") == 1


# ----------------------------------------------------------------------------- mlc compile

def test_cli_compile_object_for_another_machine(tmp_path, capsys):
    out = tmp_path / "x.o"
    assert main(["compile", "mlp", "--target", "neoverse-n1", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "compiled @mlp at -O2" in text and "workspace:" in text
    assert "target: neoverse-n1: neoverse-n1" not in text and "target: neoverse-n1 (aarch64-unknown-linux-gnu" in text
    assert f"wrote {out}: ELF64 little-endian AArch64 relocatable object" in text
    assert elf_machine(out) == "AArch64"


def test_cli_compile_json_target_and_host_library(tmp_path, capsys):
    board = _write(tmp_path, {"base": "sifive-u74", "name": "visionfive2"})
    assert main(["compile", "gelu", "--target", board, "-o", str(tmp_path / "g.o")]) == 0
    assert "RISC-V relocatable object" in capsys.readouterr().out
    if HOST_ELF and shutil.which("cc"):
        assert main(["compile", "gelu", "-o", str(tmp_path / "g.so")]) == 0
        assert f"{HOST_ELF} shared library" in capsys.readouterr().out


def test_cli_compile_errors(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="-o x.txt: write an object file \\(.o\\) or a shared library \\(.so\\)"):
        main(["compile", "mlp", "-o", "x.txt"])
    with pytest.raises(SystemExit, match="--target: unknown target 'nope'; known targets: host, znver3"):
        main(["compile", "mlp", "--target", "nope"])
    with pytest.raises(SystemExit, match="cuda-sm80 is a cuda target: write its code as PTX"):
        main(["compile", "mlp", "--target", "cuda-sm80", "-o", str(tmp_path / "k.o")])
    with pytest.raises(SystemExit, match=f"{tmp_path}.*'cores' must be a whole number"):
        main(["compile", "mlp", "--target", _write(tmp_path, {"base": "znver3", "name": "z", "cores": 0})])
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match="-o .*x.so: no C compiler for riscv64-unknown-linux-gnu \\(sifive-u74\\)"):
        main(["compile", "mlp", "--target", "sifive-u74", "-o", str(tmp_path / "x.so")])
    assert not (tmp_path / "x.so").exists()
