"""``python -m fuzz [NAME ...] [--iterations N] [--seed S]`` from ``tests/``: the long run."""
from __future__ import annotations

import argparse
import importlib
import sys
import time

from . import FUZZERS


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    ap.add_argument("names", nargs="*", help=f"fuzzers to run (default: all of {', '.join(FUZZERS)})")
    ap.add_argument("--iterations", type=int, default=2000, help="iterations per fuzzer (default 2000)")
    ap.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    args = ap.parse_args(argv)
    names = args.names or list(FUZZERS)
    unknown = [n for n in names if n not in FUZZERS]
    if unknown:
        ap.error(f"unknown fuzzer(s) {', '.join(unknown)}; known: {', '.join(FUZZERS)}")
    bad = 0
    for name in names:
        t0 = time.perf_counter()
        result = importlib.import_module(f"{__package__}.{name}").fuzz(args.seed, args.iterations)
        dt = time.perf_counter() - t0
        print(f"{result.summary()} ({dt:.0f} s, {result.cases / max(dt, 1e-9):.1f} cases/s)", flush=True)
        for f in result.failures:
            print(f"  FAIL {f}")
        bad += len(result.failures)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
