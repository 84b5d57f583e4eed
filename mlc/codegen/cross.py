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

from ..runtime.elf import ElfHeader, elf_header
from ..target import Target

class ToolchainNotFound(RuntimeError):
    """No C compiler for a target's triple is installed."""


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
    from . import LOCK
    with LOCK:   # LLVM's global context is not safe for concurrent compiles
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
