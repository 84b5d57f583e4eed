"""Object files and shared libraries for any target, and what an ELF file is built for.

``write_object`` writes a compilation's object code (the target's own ELF
relocatable: AArch64 or RISC-V code from an x86-64 machine). ``find_c_compiler``
finds the C compiler that builds a model library for the target's triple
(``codegen.export``). The object exports ``mlc_entry(void **inputs, void **outputs,
void **params, char *workspace)``; it needs libm, and libgomp when it has parallel
loops.
"""
from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass

from ..target import Target

ELF_MACHINES = {3: "x86", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 22: "S390", 40: "ARM", 62: "x86-64",
                183: "AArch64", 190: "NVIDIA CUDA", 243: "RISC-V", 258: "LoongArch"}
ELF_TYPES = {1: "relocatable object", 2: "executable", 3: "shared library", 4: "core dump"}


class ToolchainNotFound(RuntimeError):
    """No C compiler for a target's triple is installed."""


@dataclass(frozen=True)
class ElfHeader:
    bits: int          # 32 or 64 (EI_CLASS)
    endian: str        # "little" or "big" (EI_DATA)
    type: str          # "relocatable object", "shared library", ...
    machine: str       # "x86-64", "AArch64", "RISC-V", ... (e_machine)

    def __str__(self) -> str:
        return f"ELF{self.bits} {self.endian}-endian {self.machine} {self.type}"


def elf_header(path_or_bytes: str | bytes | os.PathLike) -> ElfHeader:
    """The ELF identification of a file or of its bytes; ValueError if it is not ELF."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        head, what = bytes(path_or_bytes[:20]), "data"
    else:
        with open(path_or_bytes, "rb") as f:
            head, what = f.read(20), os.fspath(path_or_bytes)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise ValueError(f"{what} is not an ELF file (no \\x7fELF magic)")
    bits = {1: 32, 2: 64}.get(head[4])
    endian = {1: "little", 2: "big"}.get(head[5])
    if bits is None or endian is None:
        raise ValueError(f"{what}: invalid ELF class {head[4]} or data encoding {head[5]}")
    e_type, e_machine = struct.unpack("<HH" if endian == "little" else ">HH", head[16:20])
    return ElfHeader(bits, endian, ELF_TYPES.get(e_type, f"type {e_type}"),
                     ELF_MACHINES.get(e_machine, f"machine {e_machine}"))


def elf_machine(path_or_bytes: str | bytes | os.PathLike) -> str:
    """The architecture an ELF file is built for: "x86-64", "AArch64", "RISC-V", ..."""
    return elf_header(path_or_bytes).machine


def write_object(compiled, path: str | os.PathLike) -> ElfHeader:
    """Write ``compiled.object_code()`` (a ``driver.Compiled``) to ``path``; returns its ELF header."""
    target: Target = compiled.target
    if target.kind != "cpu":
        raise ValueError(f"target {target.name} is a {target.kind} target ({target.arch}): mlc generates CPU code "
                         f"only, so it has no object file to write")
    if compiled.bounds_check:
        from .export import ExportError
        raise ExportError("this model was compiled with MLC_BOUNDS_CHECK=1, whose checks report to mlc's runtime "
                          "in this process: unset MLC_BOUNDS_CHECK to write an object file or a library")
    from ..driver import _LLVM_LOCK
    with _LLVM_LOCK:   # LLVM's global context is not safe for concurrent compiles
        obj = compiled.object_code()
    with open(path, "wb") as f:
        f.write(obj)
    return elf_header(obj)


def _gnu_prefixes(triple: str) -> list[str]:
    """Cross-toolchain prefixes for a triple: Debian's aarch64-linux-gnu- and the full triple."""
    parts = triple.split("-")
    out = []
    if len(parts) == 4:   # arch-vendor-os-env -> arch-os-env, as Debian names its cross compilers
        out.append(f"{parts[0]}-{parts[2]}-{parts[3]}")
    out.append(triple)
    return out


def find_c_compiler(target: Target) -> list[str]:
    """The command that compiles C and links a shared library for ``target``: cc, gcc or
    clang for this machine; for another triple its cross gcc (Debian's
    ``aarch64-linux-gnu-gcc``), else clang when the triple's C library headers are
    installed. ToolchainNotFound names every tool looked for."""
    if target.kind != "cpu":
        raise ToolchainNotFound(f"target {target.name} is a {target.kind} target: mlc generates CPU code only")
    tried = []
    if target.is_host:
        for cc in ("cc", "gcc", "clang"):
            tried.append(cc)
            if shutil.which(cc):
                return [cc]
    else:
        prefixes = _gnu_prefixes(target.triple)
        for prefix in prefixes:
            tried.append(f"{prefix}-gcc")
            if shutil.which(f"{prefix}-gcc"):
                return [f"{prefix}-gcc"]
        sysroot = f"/usr/{prefixes[0]}"
        tried.append(f"clang with the C library headers in {sysroot}/include")
        if shutil.which("clang") and os.path.isdir(f"{sysroot}/include"):
            return ["clang", f"--target={target.triple}", f"--sysroot={sysroot}"]
    hint = "" if target.is_host else (f"; install a cross compiler (Debian: apt install "
                                      f"gcc-{_gnu_prefixes(target.triple)[0]}) or write an object file (.o) and "
                                      f"link it on the device")
    raise ToolchainNotFound(f"no C compiler for {target.triple} ({target.name}) on PATH: looked for "
                            f"{', '.join(tried)}{hint}")


def machine_of_triple(triple: str) -> str:
    """The ELF machine name code for ``triple`` runs on: "x86-64", "AArch64", "RISC-V", ..."""
    arch = triple.split("-")[0]
    return {"x86_64": "x86-64", "aarch64": "AArch64", "arm64": "AArch64", "riscv64": "RISC-V",
            "riscv32": "RISC-V"}.get(arch, arch)
