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


def random_slice_key(rng, shape, steps, whole: float = 0.3, index: float = 0.15) -> list:
    """A random numpy index for ``shape``, one entry per axis: the whole axis (chance
    ``whole``), an int (``index``), else a slice whose bounds may be None or out of
    range and whose step is drawn from ``steps`` (negative ones included)."""
    key = []
    for n in shape:
        r = rng.random()
        if r < whole:
            key.append(slice(None))
        elif r < whole + index and n > 0:
            key.append(rng.randint(-n, n - 1))
        else:
            bound = lambda: None if rng.random() < 0.2 else rng.randint(-n - 3, n + 3)   # noqa: E731
            key.append(slice(bound(), bound(), rng.choice(steps)))
    return key


def ci_slice(name: str) -> FuzzResult:
    """Run fuzzer ``name``'s fixed-seed CI slice; fail on any failure (each one printed
    with the seed that replays it). Returns the result for checks of its counts."""
    import importlib
    result = importlib.import_module(f"{__name__}.{name}").fuzz(0, FUZZERS[name])
    print(result.summary())
    assert result.cases == FUZZERS[name], result.summary()
    assert not result.failures, "\n\n".join(result.failures)
    return result


# module name -> iterations in the CI slice (each slice runs in seconds)
FUZZERS: dict[str, int] = {
    "programs": 120, "gradients": 40,                        # random programs and gradients
    "onnx_files": 400, "libraries": 500, "params_files": 3000, "checkpoints": 2000,   # mutated files
    "cache_entries": 400,
}
