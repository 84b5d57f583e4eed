"""Target: what the code is generated for (triple, CPU name and features, cores,
vector width). ``Target.host()`` reads the running machine through LLVM."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    triple: str
    cpu: str
    features: str
    cores: int
    vector_bytes: int          # width of one SIMD register

    @staticmethod
    def host() -> "Target":
        from .codegen.llvm import llvm_host_info
        triple, cpu, features = llvm_host_info()
        feats = set(features.split(","))
        vb = 64 if "+avx512f" in feats else 32 if ("+avx2" in feats or "+avx" in feats) else 16
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return Target(triple, cpu, features, cores, vb)

    @staticmethod
    def get(spec: "Target | str | None") -> "Target":
        if isinstance(spec, Target):
            return spec
        if spec in (None, "host", "llvm"):
            return _host()
        raise ValueError(f"unknown target {spec!r}: only 'host' is available in this version")

    @property
    def key(self) -> str:
        """Identifies generated code: two targets with the same key run the same code."""
        return f"{self.triple}|{self.cpu}|{self.features}|{self.vector_bytes}"

    def lanes(self, itemsize: int) -> int:
        return max(1, self.vector_bytes // itemsize)

    def __str__(self) -> str:
        return f"{self.cpu} ({self.triple}, {self.cores} cores, {self.vector_bytes * 8}-bit vectors)"


_HOST: Target | None = None


def _host() -> Target:
    global _HOST
    if _HOST is None:
        _HOST = Target.host()
    return _HOST
