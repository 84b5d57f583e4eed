"""The ``mlc`` command."""
from __future__ import annotations

import argparse
import sys
import time

LEVELS = ("graph", "tensor", "loop", "llvm", "llvm-opt", "asm")


def _example(name: str):
    from .examples import EXAMPLES
    if name not in EXAMPLES:
        raise SystemExit(f"mlc: unknown example {name!r}; available: {', '.join(sorted(EXAMPLES))}")
    return EXAMPLES[name]


def cmd_ir(args) -> int:
    import mlc
    fn, make_inputs = _example(args.example)
    exe = mlc.compile(fn, *make_inputs())
    levels = args.level.split(",") if args.level else ["graph", "tensor", "loop", "llvm"]
    for level in levels:
        if level not in LEVELS:
            raise SystemExit(f"mlc: unknown IR level {level!r}; choose from {', '.join(LEVELS)}")
        print(f";; ===== {level} =====")
        print(exe.ir(level))
        print()
    return 0


def _median_call_time(fn, calls: int = 200) -> float:
    """Median seconds of one call, after a warm-up: robust to a descheduled thread."""
    for _ in range(10):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def cmd_demo(args) -> int:
    import numpy as np
    import mlc
    from .examples import mlp, mlp_inputs, mlp_numpy

    print(f"mlc {mlc.__version__} on {mlc.Target.get('host')}")
    inputs = mlp_inputs(batch=args.batch)
    print("\nThe model, traced from Python (mlc.examples.mlp):")
    print(mlc.trace(mlp, *inputs))
    jitted = mlc.jit(mlp)
    t0 = time.perf_counter()
    y = jitted(*inputs)
    t_compile = time.perf_counter() - t0
    ref = mlp_numpy(*inputs)
    err = float(np.max(np.abs(y - ref) / np.maximum(np.abs(ref), 1e-6)))
    exe = jitted.lower(*inputs)
    print(f"\nfirst call (trace + compile + run): {t_compile * 1e3:.1f} ms, {exe.kernel_count} kernels; "
          f"{exe.memory_report()}")
    t_mlc = _median_call_time(lambda: jitted(*inputs))
    t_np = _median_call_time(lambda: mlp_numpy(*inputs))
    print(f"max relative error vs numpy: {err:.2e}")
    print(f"per call (median): mlc {t_mlc * 1e6:.0f} us, numpy {t_np * 1e6:.0f} us (numpy/mlc = {t_np / t_mlc:.2f}x)")
    print("\nOne kernel at the loop level (mlc ir mlp prints every level):")
    print(exe.ir("loop").split("\n\n")[0])
    ok = err < 1e-5
    print("\ndemo " + ("OK" if ok else "FAILED: result differs from numpy"))
    return 0 if ok else 1


def main(argv=None) -> int:
    from . import __version__
    p = argparse.ArgumentParser(prog="mlc", description="mlc: trace, compile and run ML models as native code.")
    p.add_argument("--version", action="version", version=f"mlc {__version__}")
    sub = p.add_subparsers(dest="command")
    ir = sub.add_parser("ir", help="print a bundled example at every IR level")
    ir.add_argument("example", help="mlp or gelu")
    ir.add_argument("--level", help=f"comma-separated levels among {', '.join(LEVELS)} "
                                    "(default graph,tensor,loop,llvm)")
    ir.set_defaults(func=cmd_ir)
    demo = sub.add_parser("demo", help="compile and run the bundled MLP, compare with numpy")
    demo.add_argument("--batch", type=int, default=32)
    demo.set_defaults(func=cmd_demo)
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
