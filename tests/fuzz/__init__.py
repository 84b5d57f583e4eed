"""mlc's fuzzers: random programs and gradients against numpy, and mutations of every
file mlc reads (ONNX models, model libraries, params files, checkpoints, cache entries).

Each fuzzer is a module here with ``fuzz(seed, iterations) -> FuzzResult``. The tests
(``tests/test_fuzz_<name>.py``) run a short fixed-seed slice of each; a long run is

    make fuzz                                   # every fuzzer, 2000 iterations each
    cd tests && ../.venv/bin/python -m fuzz programs gradients --iterations 20000 --seed 7

which prints, per fuzzer, the cases run and every failure with the seed that replays it.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FuzzResult:
    """What one fuzzer run found: ``cases`` run, and one line per failure that names the
    seed or case that reproduces it."""
    name: str
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    notes: dict = field(default_factory=dict)   # counts worth reporting (e.g. refused, accepted)

    def fail(self, msg: str) -> None:
        self.failures.append(msg)

    def summary(self) -> str:
        extra = "".join(f", {k} {v}" for k, v in sorted(self.notes.items()))
        return f"{self.name}: {self.cases} cases, {len(self.failures)} failures{extra}"


# module name -> iterations in the CI slice (each slice runs in seconds)
FUZZERS: dict[str, int] = {
    "programs": 120, "gradients": 40,                        # random programs and gradients
    "onnx_files": 400, "libraries": 500, "params_files": 3000, "checkpoints": 2000,   # mutated files
    "cache_entries": 400,
}
