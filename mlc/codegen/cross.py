"""Object files and shared libraries for any target, and what an ELF file is built for.

``write_object`` writes a compilation's object code (the target's own ELF
relocatable: AArch64 or RISC-V code from an x86-64 machine). ``link_shared`` links
one into a shared library with the first linker found for the target's triple.
The object exports ``mlc_entry(void **inputs, void **outputs, void **params,
char *workspace)``; it needs libm, and libgomp when it has parallel loops.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass

from ..target import Target

ELF_MACHINES = {3: "x86", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 22: "S390", 40: "ARM", 62: "x86-64",
                183: "AArch64", 190: "NVIDIA CUDA", 243: "RISC-V", 258: "LoongArch"}
ELF_TYPES = {1: "relocatable object", 2: "executable", 3: "shared library", 4: "core dump"}


class LinkerNotFound(RuntimeError):
    """No linker for a target's triple is installed."""


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


def find_linker(target: Target) -> tuple[list[str], bool]:
    """(the command that links ``-shared``, whether it links the C libraries) for the
    target, or LinkerNotFound naming every tool looked for."""
    if target.kind != "cpu":
        raise LinkerNotFound(f"target {target.name} is a {target.kind} target: mlc generates CPU code only")
    tried = []
    if target.is_host:
        for cc in ("cc", "gcc", "clang"):
            tried.append(cc)
            if shutil.which(cc):
                return [cc], True
    else:
        for prefix in _gnu_prefixes(target.triple):
            tried.append(f"{prefix}-gcc")
            if shutil.which(f"{prefix}-gcc"):
                return [f"{prefix}-gcc"], True
    # no C libraries for a cross triple without a sysroot: the loader resolves libm and
    # libgomp from the program that loads the library
    tried.append("clang with ld.lld")
    if shutil.which("clang") and shutil.which("ld.lld"):
        return ["clang", f"--target={target.triple}", "-fuse-ld=lld", "-nostdlib"], False
    tried.append("ld.lld")
    if shutil.which("ld.lld"):
        return ["ld.lld"], False
    hint = "" if target.is_host else (f"; install a cross compiler (Debian: apt install "
                                      f"gcc-{_gnu_prefixes(target.triple)[0]}) or write an object file (.o) and "
                                      f"link it on the device")
    raise LinkerNotFound(f"no linker for {target.triple} ({target.name}) on PATH: looked for {', '.join(tried)}{hint}")


def link_shared(object_path: str | os.PathLike, so_path: str | os.PathLike, target: Target) -> str:
    """Link an object file into a shared library for ``target``; returns the linker used."""
    cmd, with_libs = find_linker(target)
    args = [*cmd, "-shared", "-o", os.fspath(so_path), os.fspath(object_path)]
    if with_libs:
        args += ["-Wl,--as-needed", "-lm"]
        with open(object_path, "rb") as f:
            if b"GOMP_parallel" in f.read():   # the object declares it only when it has parallel loops
                args.append("-lgomp")
    r = subprocess.run(args, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"linking {so_path} failed ({' '.join(args)}):\n{r.stderr.strip()}")
    return cmd[0]
