"""What an ELF file is built for: its class, byte order, type and machine, read from
its first 20 bytes. The runtime checks a model library against the host with it;
``codegen.cross`` reports what it wrote."""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

ELF_MACHINES = {3: "x86", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 22: "S390", 40: "ARM", 62: "x86-64",
                183: "AArch64", 190: "NVIDIA CUDA", 243: "RISC-V", 258: "LoongArch"}
ELF_TYPES = {1: "relocatable object", 2: "executable", 3: "shared library", 4: "core dump"}


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


def machine_of_triple(triple: str) -> str:
    """The ELF machine name code for ``triple`` runs on: "x86-64", "AArch64", "RISC-V", ..."""
    arch = triple.split("-")[0]
    return {"x86_64": "x86-64", "aarch64": "AArch64", "arm64": "AArch64", "riscv64": "RISC-V",
            "riscv32": "RISC-V"}.get(arch, arch)
