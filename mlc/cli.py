"""The ``mlc`` command."""
from __future__ import annotations

import argparse
import os
import sys
import time

LEVELS = ("graph", "fused", "tensor", "loop", "llvm", "llvm-opt", "asm")


def _load_entry_point(spec: str, command: str):
    """``module:function``: a function taking no arguments that returns ``(fn,
    example_args)`` (fn is traced on them) or a Graph. The current directory is
    importable, as with ``python -m``."""
    import importlib
    import inspect

    import mlc
    from .ir.graph import Graph
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise SystemExit(f"mlc {command}: cannot import {module_name!r} from {spec!r}: {e}")
    entry = getattr(module, attr, None)
    if entry is None:
        raise SystemExit(f"mlc {command}: module {module_name!r} has no attribute {attr!r}")
    if isinstance(entry, Graph):
        return entry
    needs = [p for p in inspect.signature(entry).parameters.values()
             if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if needs:
        raise SystemExit(f"mlc {command}: {spec} takes arguments ({', '.join(p.name for p in needs)}); point at a "
                         "function of no arguments that returns (fn, example_args), e.g.\n"
                         "    def model():\n        return my_fn, (x, w)")
    made = entry()
    if isinstance(made, Graph):
        return made
    if not (isinstance(made, tuple) and len(made) == 2 and callable(made[0])):
        raise SystemExit(f"mlc {command}: {spec}() must return (fn, example_args) or a Graph, "
                         f"got {type(made).__name__}")
    fn, example_args = made
    return mlc.trace(fn, *example_args)


def _example(name: str):
    from .examples import EXAMPLES
    if name not in EXAMPLES:
        raise SystemExit(f"mlc: unknown example {name!r}; available: {', '.join(sorted(EXAMPLES))}")
    return EXAMPLES[name]


def cmd_ir(args) -> int:
    import mlc
    fn, make_inputs = _example(args.example)
    exe = mlc.compile(fn, *make_inputs())
    levels = args.level.split(",") if args.level else ["graph", "fused", "tensor", "loop", "llvm"]
    for level in levels:
        if level not in LEVELS:
            raise SystemExit(f"mlc: unknown IR level {level!r}; choose from {', '.join(LEVELS)}")
        print(f";; ===== {level} =====")
        print(exe.ir(level))
        print()
    return 0


def cmd_demo(args) -> int:
    import numpy as np
    import mlc
    from .examples import mlp, mlp_inputs, mlp_numpy
    from .runtime.timing import median_seconds

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
    t_mlc = median_seconds(lambda: jitted(*inputs), 200, warmup=10)
    t_np = median_seconds(lambda: mlp_numpy(*inputs), 200, warmup=10)
    print(f"max relative error vs numpy: {err:.2e}")
    print(f"per call (median): mlc {t_mlc * 1e6:.0f} us, numpy {t_np * 1e6:.0f} us (numpy/mlc = {t_np / t_mlc:.2f}x)")
    print("\nOne kernel at the loop level (mlc ir mlp prints every level):")
    print(exe.ir("loop").split("\n\n")[0])
    ok = err < 1e-5
    print("\ndemo " + ("OK" if ok else "FAILED: result differs from numpy"))
    return 0 if ok else 1


def _parse_inputs(specs) -> dict:
    """``name=file.npy`` pairs -> {name: array} (names as in the model)."""
    import numpy as np
    given = {}
    for spec in specs or []:
        if "=" not in spec:
            raise SystemExit(f"mlc run: --input takes name=file.npy, got {spec!r}")
        name, path = spec.split("=", 1)
        try:
            given[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise SystemExit(f"mlc run: cannot read input {name!r} from {path}: {e}")
    return given


def cmd_run(args) -> int:
    import os
    import numpy as np
    import mlc
    from .frontend.trace import sanitize_name
    from .tree import flatten
    t0 = time.perf_counter()
    if args.model.endswith(".so"):   # an exported model library: run as it is
        from .runtime.library import LibraryError
        try:
            exe = mlc.load(args.model, public_key=args.public_key)
        except LibraryError as e:
            raise SystemExit(f"mlc run: {e}")
        if exe.signer:
            print(f"{args.model}: signature verified (Ed25519, key fingerprint {exe.signer})")
        inputs = list(zip(exe.input_names, exe.input_types))
        out_names = [o["name"] for o in exe.metadata["outputs"]]
        how = f"loaded {args.model} in {time.perf_counter() - t0:.2f} s"
    else:
        if args.public_key:
            raise SystemExit("mlc run: --public-key verifies a signed model library (.so); an ONNX model is not signed")
        model, graph = _load_onnx(args.model, args.shape, "run")
        inputs = [(v.name, v.type) for v in graph.inputs]
        target = _target_of(args, "run")
        try:
            exe = mlc.compile(graph, target=target)
        except (RuntimeError, ValueError) as e:   # no CuPy or no device; a target that cannot run here
            raise SystemExit(f"mlc run: {e}")
        out_names = [o.name for o in model.graph.output]
        how = f"compiled for {target.name} in {time.perf_counter() - t0:.2f} s"
    given = _parse_inputs(args.input)
    names = {name for name, _ in inputs}
    unknown = [n for n in given if n not in names and sanitize_name(n) not in names]
    if unknown:
        raise SystemExit(f"mlc run: the model has no input {', '.join(map(repr, unknown))}; its inputs are "
                         + ", ".join(f"{name}: {t}" for name, t in inputs))
    by_sanitized = {sanitize_name(k): v for k, v in given.items()}
    missing = [(name, t) for name, t in inputs if name not in by_sanitized]
    if missing and not args.random_inputs:
        raise SystemExit("mlc run: no data for input(s) " + ", ".join(f"{name}: {t}" for name, t in missing)
                         + "; give --input name=file.npy, or --random-inputs to use random data")
    rng = np.random.default_rng(args.seed)
    arrays = []
    for name, t in inputs:
        if name in by_sanitized:
            arrays.append(by_sanitized[name])
        else:
            print(f"input {name}: random {t} (seed {args.seed})")
            arrays.append(_random_array(rng, t))
    t0 = time.perf_counter()
    try:
        outs = exe.call_flat(arrays)
    except TypeError as e:
        raise SystemExit(f"mlc run: {e}")
    except MemoryError as e:   # e.g. a model whose intermediates need more memory than there is
        raise SystemExit(f"mlc run: not enough memory to run the model: {e}")
    t_run = time.perf_counter() - t0
    outs = [o if isinstance(o, np.ndarray) else o.get() for o in flatten(outs)[0]]   # CuPy results: to the host
    print(f"{how} ({exe.kernel_count} kernels), ran in {t_run * 1e3:.2f} ms")
    for name, o in zip(out_names, outs):
        summary = ""
        if o.size and o.dtype.kind in "fiub":
            f = o.astype(np.float64)
            summary = f" min {f.min():.6g} max {f.max():.6g} mean {f.mean():.6g}"
            if o.ndim == 2 and o.shape[0] == 1 and o.shape[1] > 1:
                summary += f" argmax {int(o[0].argmax())}"
        print(f"output {name}: {o.dtype}{list(o.shape)}{summary}")
        if args.output_dir:
            os.makedirs(args.output_dir, exist_ok=True)
            path = os.path.join(args.output_dir, sanitize_name(name) + ".npy")
            np.save(path, o)
            print(f"  saved to {path}")
    if args.profile or args.trace or args.roofline:
        _profile(exe, arrays, args)
    return 0


def _profile(exe, arrays, args) -> None:
    """``mlc run --profile [--trace FILE] [--roofline PNG]``."""
    ceilings = None
    if exe.metadata is not None:   # a model library: its target's ceilings, measured here when it gives none
        from .driver import machine_ceilings
        from .target import Target
        ceilings = machine_ceilings(Target.from_json(exe.metadata["target"]))
    try:
        report = exe.profile(*arrays, runs=args.runs, ceilings=ceilings)
    except ValueError as e:
        raise SystemExit(f"mlc run --profile: {e}")
    print(report)
    if args.trace:
        report.to_chrome_trace(args.trace)
        print(f"trace written to {args.trace} (open it in https://ui.perfetto.dev or chrome://tracing)")
    if args.roofline:
        try:
            report.roofline(args.roofline)
        except (ImportError, ValueError) as e:
            raise SystemExit(f"mlc run --roofline: {e}")
        print(f"roofline written to {args.roofline}")


def _load_onnx(path: str, shapes, command: str):
    """(the ONNX model, its Graph); an import error ends the command with its message."""
    from .frontend.onnx import OnnxImportError, SymbolicShapeError, from_onnx, load_model
    overrides = _shape_overrides(shapes, command)
    try:
        model = load_model(path)
        return model, from_onnx(model, input_shapes=overrides)
    except SymbolicShapeError as e:
        raise SystemExit(f"mlc {command}: {_static_shape_hint(e.input_name, e.dims)}")
    except OnnxImportError as e:
        raise SystemExit(f"mlc {command}: {e}")


def _static_shape_hint(name: str, dims: list | None) -> str:
    """What to type for an input without a static shape: --shape with the declared
    shape, 1 for each symbolic dimension."""
    if dims is None:
        return f"input {name!r} declares no shape; give a static shape with --shape {name}=D0,D1,..."
    symbolic = [d for d in dims if not isinstance(d, int)]
    example = ",".join(str(d) if isinstance(d, int) else "1" for d in dims)
    return (f"input {name!r} has symbolic dimension{'s' if len(symbolic) > 1 else ''} "
            f"{', '.join(map(repr, symbolic))}; give a static shape with --shape {name}={example}")


def _load_graph(spec: str, shapes, command: str):
    """The Graph for an .onnx file, a ``module:function`` entry point or a bundled example's name."""
    if spec.endswith(".onnx"):
        return _load_onnx(spec, shapes, command)[1]
    if ":" in spec:
        return _load_entry_point(spec, command)
    from .examples import EXAMPLES
    if spec not in EXAMPLES:
        raise SystemExit(f"mlc {command}: {spec!r} is neither an .onnx file nor a bundled example "
                         f"({', '.join(sorted(EXAMPLES))})")
    import mlc
    fn, make_inputs = EXAMPLES[spec]
    return mlc.trace(fn, *make_inputs())


EXPORT_FORMATS = ("onnx", "mlir", "mlir-loop", "relax")


def cmd_export(args) -> int:
    """Write a model's graph in another framework's format (mlc.interop)."""
    graph = _load_graph(args.model, args.shape, "export")
    fmt, out = args.format, args.output
    try:
        if fmt == "onnx":
            from .interop.onnx_export import export
            export(graph, path=out)
        elif fmt == "relax":
            from .interop.relax import to_relax
            text = to_relax(graph).script(show_meta=True)   # TVMScript; tvm.script.from_source reads it back
        else:
            try:
                from .interop.mlir import to_mlir
            except ImportError as e:
                raise ImportError(f"the MLIR exporter is unavailable ({e}); it needs the mlir extra: "
                                  "pip install 'mlc[mlir]'") from None
            text = to_mlir(graph, level="loop" if fmt == "mlir-loop" else "graph")
    except ImportError as e:
        raise SystemExit(f"mlc export --format {fmt}: {e}")
    except ValueError as e:   # the exporters' refusals (an op with no mapping, ...)
        raise SystemExit(f"mlc export --format {fmt}: {e}")
    if fmt != "onnx":
        with open(out, "w") as f:
            f.write(text if text.endswith("\n") else text + "\n")
    print(f"{args.model} -> {out} ({fmt})")
    return 0


def _pass_manager(args, **kw):
    from .passes.manager import PassManager
    try:
        pm = PassManager(args.opt_level, verify=True if args.verify else None,
                         disabled=getattr(args, "disable_pass", ()), **kw)
    except ValueError as e:
        raise SystemExit(f"mlc: --disable-pass: {e}") from None
    pm.progress = getattr(args, "verbose", False)
    return pm


def cmd_compile(args) -> int:
    import mlc
    target = _target_of(args, "compile")
    suffix = os.path.splitext(args.output)[1] if args.output else None
    if suffix not in (None, ".o", ".so", ".ptx", ".cubin"):
        raise SystemExit(f"mlc compile: -o {args.output}: write an object file (.o) or a shared library (.so); "
                         "for a cuda target, PTX (.ptx) or a cubin (.cubin)")
    gpu_file = suffix in (".ptx", ".cubin")
    if target.kind == "cuda" and not gpu_file and suffix != ".so":
        raise SystemExit(f"mlc compile: target {target.name} is a cuda target: write its code as PTX "
                         "(-o MODEL.ptx), a cubin (-o MODEL.cubin) or a cuda model library (-o MODEL.so)")
    if target.kind == "cuda" and args.profile:
        raise SystemExit("mlc compile: --profile builds a CPU library that times its kernels; a cuda target's "
                         "kernels are timed with CUDA events (mlc run MODEL --target cuda --profile)")
    if gpu_file and target.kind != "cuda":
        raise SystemExit(f"mlc compile: -o {args.output}: PTX and cubins are code for cuda targets (--target "
                         f"cuda-sm90); {target.name} is a {target.kind} target")
    if gpu_file and args.profile:
        raise SystemExit("mlc compile: --profile builds a model library or object file (-o MODEL.so or MODEL.o)")
    if suffix == ".cubin":
        from .codegen.cross import ToolchainNotFound
        from .codegen.nvptx import find_ptxas
        try:
            find_ptxas()   # before compiling: a missing assembler should fail fast
        except ToolchainNotFound as e:
            raise SystemExit(f"mlc compile: -o {args.output}: {e}")
    if (args.params or args.prefix) and suffix != ".so":
        raise SystemExit("mlc compile: --params and --prefix apply to a model library: -o MODEL.so")
    if args.profile and not args.output:
        raise SystemExit("mlc compile: --profile builds a model library or object that times its kernels: give -o "
                         "MODEL.so (to profile here, use mlc run MODEL --profile)")
    if suffix == ".so":
        from .codegen.cross import ToolchainNotFound, find_c_compiler
        from .target import Target
        try:   # before compiling: a missing cross compiler should fail fast (a cuda library is host code)
            find_c_compiler(Target.get("host") if target.kind == "cuda" else target)
        except ToolchainNotFound as e:
            raise SystemExit(f"mlc compile: -o {args.output}: {e}")
    graph = _load_graph(args.model, args.shape, "compile")
    pm = _pass_manager(args, dump_dir=args.dump_ir, time_passes=args.time_passes)
    t0 = time.perf_counter()
    db = _open_tuning_db(args.db, "compile")
    try:
        if target.is_host and not args.output:
            exe = mlc.compile(graph, target=target, opt_level=args.opt_level, pm=pm, db=db)
            st, report = exe.stats, exe.memory_report()
        else:   # code for a file, maybe for another machine: generated, not loaded into this process
            c, st, report = _compile_for_file(graph, target, pm, db, profile=args.profile)
    finally:
        if db is not None:
            db.close()
    t_compile = time.perf_counter() - t0
    print(f"compiled @{graph.name} at -O{args.opt_level} in {t_compile:.2f} s: {st['ops']} ops -> "
          f"{st['nodes_after_passes']} after graph passes -> {st['kernels']} kernels")
    if args.target:
        print(f"target: {target}")
    if args.db:
        print(f"tuning records from {args.db}: {st['tuned_kernels']} of {st['kernels']} kernels tuned, "
              "the others use the default schedules")
    print(report)
    if args.time_passes:
        print(pm.timing_report())
    if args.dump_ir:
        print(f"IR after every pass written to {args.dump_ir}/ (numbered in pipeline order)")
    if args.output:
        _write_output(c, args.output, suffix, args.params or "embedded", args.prefix or "mlc")
    return 0


def _target_of(args, command: str):
    from .target import Target
    try:
        return Target.get(args.target or "host")
    except ValueError as e:
        raise SystemExit(f"mlc {command}: --target: {e}")


def _open_tuning_db(path, command: str):
    if path is None:
        return None
    from .schedule.database import TuningDB, TuningDBError
    if not os.path.exists(path):
        raise SystemExit(f"mlc {command}: --db {path}: no such file (create it with `mlc tune MODEL --db {path}`)")
    try:
        return TuningDB(path)
    except TuningDBError as e:
        raise SystemExit(f"mlc {command}: --db: {e}")


def _compile_for_file(graph, target, pm, db=None, profile: bool = False):
    """(Compiled with its object code generated, its stats, the memory report)."""
    from types import SimpleNamespace

    from . import codegen
    from .driver import Compiled
    from .runtime.executable import Executable
    with codegen.LOCK:
        try:
            c = Compiled(graph, target, pm, db=db, profile=profile)
            # a cuda target's code is PTX (codegen.nvptx), whatever runs the compiled functions here
            c.generate(gpu=target.kind == "cuda")
        except NotImplementedError as e:   # a part of the model this target has no code for yet
            raise SystemExit(f"mlc compile: {e}")
    st = c.stats()
    # the report reads only these three, none of which needs the code loaded
    report = Executable.memory_report(SimpleNamespace(stats=st, workspace_bytes=c.plan.workspace_bytes,
                                                      params=c.lowered.param_data))
    return c, st, report


def _write_output(c, out: str, suffix: str, params: str, prefix: str) -> None:
    from .codegen.cross import write_object
    from .codegen.export import ExportError, export_library
    if suffix in (".ptx", ".cubin"):
        _write_gpu_output(c, out, suffix)
        return
    if suffix == ".o":
        head = write_object(c, out)
        print(f"wrote {out}: {head} ({os.path.getsize(out)} bytes)")
        return
    if c.pm.progress:
        print(f"mlc: export: building {out} with the C runtime and {params} weights ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        print(export_library(c, out, params=params, prefix=prefix))
        if c.pm.progress:
            print(f"mlc: export done in {time.perf_counter() - t0:.2f} s", file=sys.stderr, flush=True)
    except (ExportError, ValueError) as e:
        raise SystemExit(f"mlc compile: -o {out}: {e}")
    if c.target.is_host:
        print(f"run it from Python: mlc.load({out!r}); from C: see tutorials/c_api/")
    elif c.target.kind == "cuda":
        print(f"a cuda model library: its C API takes device pointers; from Python, mlc.load({out!r}) with CuPy on "
              "a machine with an NVIDIA GPU")


def _write_gpu_output(c, out: str, suffix: str) -> None:
    """PTX as text, or a cubin assembled from it by ptxas for the target's architecture."""
    from .codegen.cross import ToolchainNotFound
    from .codegen.nvptx import assemble
    ptx, arch = c.ptx, c.target.arch
    kernels = ptx.count(".entry ")
    if suffix == ".ptx":
        data, what = ptx.encode(), "PTX"
    else:
        try:
            data, what = assemble(ptx, arch), "cubin"
        except (ToolchainNotFound, RuntimeError) as e:
            raise SystemExit(f"mlc compile: -o {out}: {e}")
    with open(out, "wb") as f:
        f.write(data)
    print(f"wrote {out}: {what} for {arch}, {kernels} kernels ({len(data)} bytes)")


def cmd_inspect(args) -> int:
    if args.model.endswith(".so"):
        from .runtime.library import LibraryError, describe
        try:
            print(describe(args.model, public_key=args.public_key))
        except LibraryError as e:
            raise SystemExit(f"mlc inspect: {e}")
        return 0
    if args.public_key:
        raise SystemExit("mlc inspect: --public-key verifies a signed model library (.so)")
    from .driver import Compiled
    from .target import Target
    from .viz import write_graph
    graph = _load_graph(args.model, args.shape, "inspect")
    c = Compiled(graph, Target.get("host"), _pass_manager(args))   # graph passes, fusion, plan: no code generation
    st = c.stats()
    print(f"@{graph.name} at -O{args.opt_level}: {st['ops']} ops -> {st['kernels']} kernels; "
          f"planned workspace {st['workspace_bytes'] / 2**20:.2f} MiB of {st['intermediate_bytes'] / 2**20:.2f} MiB "
          f"naive")
    if args.graph:
        _, message = write_graph(c.fused, args.graph, title=f"{graph.name} -O{args.opt_level}")
        print(message)
    else:
        print(c.fused)
    return 0


def cmd_sign(args) -> int:
    from .runtime import signing
    from .runtime.library import LibraryError, read_metadata
    try:
        if args.generate_key:
            if args.files or args.key:
                raise SystemExit("mlc sign: --generate-key makes a key pair and signs nothing; sign with --key later")
            private, public = signing.generate_key(args.generate_key, args.public_out)
            print(f"wrote {private} (private key: keep it secret) and {public} (public key: give it to those who "
                  f"load your libraries); fingerprint {signing.fingerprint(signing.load_public_key(public))}")
            return 0
        if not args.files or not args.key:
            raise SystemExit("mlc sign: give the files to sign and --key PRIVATE.pem (or --generate-key PRIVATE.pem "
                             "to make a key pair)")
        fp = signing.fingerprint(signing.load_private_key(args.key).public_key())
        for path in args.files:
            files = [path]
            if path.endswith(".so"):   # a model library: sign only a valid one, with its external weights
                try:
                    meta = read_metadata(path)
                except LibraryError as e:
                    raise SystemExit(f"mlc sign: not signing {path}: {e}")
                if meta["params"]["storage"] == "external":
                    files.append(os.path.join(os.path.dirname(path), meta["params"]["file"]))
            for f in files:
                print(f"signed {f}: {signing.sign(f, args.key)} (Ed25519, key fingerprint {fp})")
    except signing.SigningError as e:
        raise SystemExit(f"mlc sign: {e}")
    return 0


def cmd_tune(args) -> int:
    import warnings
    from .schedule.database import TuningDBError
    from .tune.progress import make_progress
    from .tune.report import write_report
    from .driver import emulating
    from .schedule.database import record_key
    from .tune.tuner import TuneError, check_device, emulation_warning, trial_limit, tune
    try:
        if (args.target or "").strip() == "cuda" and not args.runner and not emulating():
            check_device("cuda")     # (the target 'cuda' is the device: it cannot be named without one)
        target = _target_of(args, "tune")
        emulated = target.kind == "cuda" and emulating()   # (as tune() decides)
        if target.kind == "cuda" and not emulated and not args.runner:
            check_device(target)
    except TuneError as e:
        raise SystemExit(f"mlc tune: {e}")
    if args.trials is not None and args.trials < 0:
        raise SystemExit("mlc tune: --trials must be >= 0")
    if args.timeout <= 0:
        raise SystemExit(f"mlc tune: --timeout must be > 0 seconds, got {args.timeout:g}")
    if args.time_budget is not None and args.time_budget <= 0:
        raise SystemExit(f"mlc tune: --time-budget must be > 0 seconds, got {args.time_budget:g}")
    graph = _load_graph(args.model, args.shape, "tune")
    runner = None
    if args.runner:
        from .tune.rpc import runner_from_spec
        try:
            runner = runner_from_spec(args.runner, timeout=args.timeout, flush=True)
        except (ValueError, ConnectionError, OSError) as e:
            raise SystemExit(f"mlc tune: --runner: {e}")
    elif not target.is_host and target.kind != "cuda":   # (a cuda target: this machine's device, or emulated)
        raise SystemExit(f"mlc tune: target {target.name} is not this machine; measure on the device with "
                         "`mlc rpc-server` there and `--runner rpc://HOST:PORT` here")
    else:
        from .tune.runner import LocalRunner
        runner = LocalRunner(timeout=args.timeout, flush=True)
    limit = trial_limit(args.trials, args.time_budget)   # a time budget alone is not capped by trials
    budget = [f"{limit} trials"] if limit != float("inf") else []
    budget += [f"{args.time_budget:g} s"] if args.time_budget else []
    print(f"mlc tune {args.model} for {target}: up to {' or '.join(budget)}, records in {args.db}")
    if emulated:
        print(f"warning: {emulation_warning(target)}")
    progress = make_progress(limit, force_lines=args.no_live)
    try:
        with warnings.catch_warnings():   # (the emulation warning is printed above)
            warnings.filterwarnings("ignore", message="MLC_CUDA_EMULATE=1: ", category=RuntimeWarning)
            tuner = tune(graph, target, args.db, args.trials, args.time_budget, runner=runner, progress=progress,
                         opt_level=args.opt_level)
    except TuningDBError as e:
        raise SystemExit(f"mlc tune: --db: {e}")
    except TuneError as e:
        raise SystemExit(f"mlc tune: {e}")
    finally:
        progress.close()
        runner.close()
    why = {"interrupted": "interrupted (Ctrl-C); everything measured is kept", "trials": "trial budget reached",
           "time budget": "time budget reached", "space exhausted": "every candidate measured"}
    print(f"stopped: {why.get(tuner.stopped_by, tuner.stopped_by)}. {tuner.trials} trials in "
          f"{time.monotonic() - tuner.started:.1f} s; estimated latency {tuner.default_latency * 1e3:.3f} ms "
          f"(default schedules) -> {tuner.estimated_latency * 1e3:.3f} ms (best measured)")
    if target.is_host and tuner.trials and not args.runner and tuner.stopped_by != "interrupted":
        _end_to_end_check(graph, args)
    print(("use the records (emulated: under MLC_CUDA_EMULATE=1 only): MLC_CUDA_EMULATE=1 " if emulated else
           "use the records: ") + f"mlc compile {args.model} --db {args.db}" +
          (f" --target {args.target}" if args.target else ""))
    if args.report:
        print(write_report(args.db, record_key(target, emulated), args.report))
    return 130 if tuner.stopped_by == "interrupted" else 0


def _end_to_end_check(graph, args) -> None:
    """Time the whole model with the default schedules and with the tuning records,
    interleaved: kernel times measured alone do not always add up to the model's."""
    import numpy as np

    import mlc
    from .runtime.timing import median_seconds
    default = mlc.compile(graph, opt_level=args.opt_level)
    tuned = mlc.compile(graph, opt_level=args.opt_level, db=args.db)
    rng = np.random.default_rng(0)
    inputs = [_random_array(rng, v.type) for v in graph.inputs]
    t_default = t_tuned = float("inf")
    for _ in range(3):
        t_default = min(t_default, median_seconds(lambda: default(*inputs), 5))
        t_tuned = min(t_tuned, median_seconds(lambda: tuned(*inputs), 5))
    print(f"end to end on this machine: default schedules {t_default * 1e3:.3f} ms, with the records "
          f"{t_tuned * 1e3:.3f} ms ({t_default / t_tuned:.2f}x)")
    if t_tuned > 1.02 * t_default:
        print("  the tuned model is slower here: kernels timed alone did not predict it (a busy or noisy "
              "machine?); tune longer on a quiet machine, or compile without --db")


def cmd_serve(args) -> int:
    from .serve import main as serve_main
    return serve_main(args)


def cmd_rpc_server(args) -> int:
    from .tune.rpc import main_rpc_server
    return main_rpc_server(args.port, args.host)


def _add_compile_options(p) -> None:
    p.add_argument("model", help="an .onnx file, a module:function entry point, or a bundled example "
                                 "(mlp, gelu, transformer)")
    p.add_argument("-O", dest="opt_level", type=int, default=2, choices=[0, 1, 2, 3],
                   help="optimization level: 0 one kernel per op, 1 simplify, 2 (default) also fuse, "
                        "3 fold constants of any size")
    p.add_argument("--shape", action="append", metavar="NAME=D0,D1,...",
                   help="a static shape for an ONNX input declared with symbolic dimensions")
    p.add_argument("--verify", action="store_true", help="run the IR verifier after every pass")
    p.add_argument("-v", "--verbose", action="store_true", help="show each stage and the kernels scheduled as they go")


def _shape_overrides(specs, command: str = "run"):
    """--shape NAME=D0,D1,... options as {name: dims}."""
    shapes = {}
    for spec in specs or []:
        name, _, dims = spec.partition("=")
        try:
            shapes[name] = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shapes[name] = None
        if not name or shapes[name] is None or any(d < 0 for d in shapes[name]):
            raise SystemExit(f"mlc {command}: --shape takes NAME=D0,D1,... (sizes >= 0), got {spec!r}")
    return shapes


def _random_array(rng, t):
    if t.dtype.is_float:
        return rng.standard_normal(t.shape).astype(t.dtype.np)
    if t.dtype.is_bool:
        return rng.random(t.shape) < 0.5
    return rng.integers(0, 10, size=t.shape).astype(t.dtype.np)


def main(argv=None) -> int:
    from .version import __version__
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
    run = sub.add_parser("run", help="run an ONNX model (compiled first) or an exported model library on given "
                                     "or random inputs")
    run.add_argument("model", help="an .onnx file or a model library (.so) from `mlc compile -o`")
    run.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="data for one input (repeatable)")
    run.add_argument("--random-inputs", action="store_true", help="use random data for inputs not given")
    run.add_argument("--seed", type=int, default=0, help="seed for --random-inputs (default 0)")
    run.add_argument("--target", metavar="T", help="host (default), cuda (the current GPU, through CuPy; "
                                                   "MLC_CUDA_EMULATE=1 runs its schedules on this CPU), or a named target")
    run.add_argument("--shape", action="append", metavar="NAME=D0,D1,...",
                     help="a static shape for an input declared with symbolic dimensions")
    run.add_argument("--output-dir", help="save each output as NAME.npy in this folder")
    run.add_argument("--public-key", metavar="PUB.pem", help="run a model library only if MODEL.so.sig is a good "
                                                            "signature by this Ed25519 key (mlc sign)")
    run.add_argument("--profile", action="store_true", help="time every kernel (a profiling build of the same code) "
                                                             "and print them, slowest first")
    run.add_argument("--runs", type=int, default=20, help="runs to take the median of with --profile (default 20)")
    run.add_argument("--trace", metavar="FILE.json", help="with --profile: write a Chrome trace (Perfetto)")
    run.add_argument("--roofline", metavar="FILE.png", help="with --profile: draw each kernel against the machine's "
                                                            "peak and memory bandwidth")
    run.set_defaults(func=cmd_run)
    comp = sub.add_parser("compile", help="compile a model and report kernels and memory before/after the passes")
    _add_compile_options(comp)
    comp.add_argument("--time-passes", action="store_true", help="print the time spent in every pass")
    comp.add_argument("--dump-ir", metavar="DIR", help="write the IR after every pass into DIR")
    comp.add_argument("--disable-pass", action="append", default=[], metavar="NAME",
                      help="skip this pass (graph, tensor or loop level; repeatable); --dump-ir names them all")
    comp.add_argument("--target", metavar="T", help="host (default), a named target such as neoverse-n1 or "
                                                    "sifive-u74, or a .json file describing the hardware")
    comp.add_argument("-o", dest="output", metavar="OUT", help="write the code: OUT.so a model library with a C "
                                                               "API and OUT.h its header (needs a C compiler for "
                                                               "the target), OUT.o the bare object file; for a cuda "
                                                               "target OUT.ptx (PTX) or OUT.cubin (ptxas)")
    comp.add_argument("--params", choices=["embedded", "external"],
                      help="where a model library keeps its weights: embedded in OUT.so (default) or in the "
                           "file OUT.params beside it")
    comp.add_argument("--prefix", metavar="NAME", help="name a model library's C functions NAME_model_create, ... "
                                                       "(default mlc_...), to link several models into one program")
    comp.add_argument("--db", metavar="FILE", help="use the best schedules in this tuning database (mlc tune)")
    comp.add_argument("--profile", action="store_true", help="with -o: a profiling build that times every kernel "
                                                             "call (mlc run LIB.so --profile, mlc_model_profile)")
    comp.set_defaults(func=cmd_compile)
    tune = sub.add_parser("tune", help="auto-tune a model's kernels for a target into a tuning database")
    _add_compile_options(tune)
    tune.add_argument("--target", metavar="T", help="host (default), a named target, or a .json file")
    tune.add_argument("--trials", type=int, help="measurements to make in this run (default 200; no limit when "
                                                 "only --time-budget is given: it stops at whichever comes first)")
    tune.add_argument("--db", default="tuning.db", metavar="FILE",
                      help="the tuning database (SQLite; created if missing, resumed if not; default tuning.db)")
    tune.add_argument("--time-budget", type=float, metavar="S", help="stop after S seconds (alone: the only limit)")
    tune.add_argument("--runner", metavar="SPEC", help="where candidates run: local (default) or rpc://HOST:PORT "
                                                       "(an `mlc rpc-server` on the device)")
    tune.add_argument("--timeout", type=float, default=10.0, help="seconds one measurement may take (default 10)")
    tune.add_argument("--report", metavar="PNG", help="plot best latency against trials per kernel to this file")
    tune.add_argument("--no-live", action="store_true", help="print a line per round instead of a live table")
    tune.set_defaults(func=cmd_tune)
    rpc = sub.add_parser("rpc-server", help="measure candidates sent by `mlc tune --runner rpc://...` on this machine")
    rpc.add_argument("--port", type=int, default=9190, help="port to listen on (default 9190)")
    rpc.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    rpc.set_defaults(func=cmd_rpc_server)
    serve = sub.add_parser("serve", help="serve models over HTTP and gRPC (the Open Inference Protocol, KServe v2) "
                                         "with dynamic batching and metrics (pip install 'mlc[serve]')")
    serve.add_argument("models", nargs="*", metavar="MODEL", help="model files (.onnx, or a model library .so); "
                                                                  "a model's name is its file's stem, its version 1")
    serve.add_argument("--model-repository", metavar="DIR", help="serve DIR/<name>/<version>/model.onnx (or model.so); "
                                                                 "DIR/<name>/config.json may set max_batch_size, "
                                                                 "max_delay_ms and instances")
    serve.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    serve.add_argument("--http-port", type=int, default=8000, help="REST port (default 8000; 0 any free port, -1 off)")
    serve.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001; 0 any, -1 off)")
    serve.add_argument("--metrics-port", type=int, default=8002, help="Prometheus /metrics port (default 8002; "
                                                                      "0 any, -1 off)")
    serve.add_argument("--max-batch", type=int, default=8, help="rows one batch may hold (default 8); a model with "
                                                                "a symbolic first dimension is compiled for 1, 2, 4, "
                                                                "... up to it; 1 turns batching off")
    serve.add_argument("--max-delay-ms", type=float, default=2.0, help="how long a request waits for others to "
                                                                       "batch with (default 2)")
    serve.add_argument("--instances", type=int, default=1, help="worker threads running each model (default 1)")
    serve.add_argument("--max-request-bytes", type=int, default=64 << 20, help="largest request body or gRPC "
                                                                                "message (default 64 MiB)")
    serve.add_argument("--api-key", default=os.environ.get("MLC_SERVE_API_KEY"),
                       help="require 'Authorization: Bearer KEY' (gRPC: metadata authorization) on every request "
                            "but the health checks (default: $MLC_SERVE_API_KEY; none: no auth)")
    serve.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS and gRPC over TLS with this certificate chain")
    serve.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    serve.add_argument("--target", metavar="T", help="compile for this target (default host)")
    serve.add_argument("--backend", choices=["mlc", "onnxruntime"], default="mlc",
                       help="run ONNX models with mlc (default) or ONNX Runtime (a baseline for comparisons)")
    serve.add_argument("--drain-seconds", type=float, default=30.0, help="on SIGTERM, how long requests in flight "
                                                                         "may take to finish (default 30)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                       help="the server's log level (debug: one line per request and per batch; default info)")
    serve.set_defaults(func=cmd_serve)
    insp = sub.add_parser("inspect", help="show a model's fused kernels, as text or as a picture; or describe an "
                                          "exported model library (MODEL.so)")
    _add_compile_options(insp)
    insp.add_argument("--graph", metavar="FILE", help="draw the fused graph to FILE (.svg or .png with Graphviz, "
                                                      "else .dot)")
    insp.add_argument("--public-key", metavar="PUB.pem", help="also verify MODEL.so.sig, the library's signature "
                                                             "by this Ed25519 key (mlc sign)")
    insp.set_defaults(func=cmd_inspect)
    sign = sub.add_parser("sign", help="sign model libraries (Ed25519, a detached FILE.sig that openssl verifies "
                                       "too), or make a key pair")
    sign.add_argument("files", nargs="*", metavar="FILE", help="files to sign: a model library (.so) is checked "
                                                               "first and its external weights are signed with it")
    sign.add_argument("--key", metavar="PRIVATE.pem", help="the private key (PEM PKCS#8 Ed25519)")
    sign.add_argument("--generate-key", metavar="PRIVATE.pem", help="write a new key pair: PRIVATE.pem (mode 0600) "
                                                                    "and its public key")
    sign.add_argument("--public-out", metavar="PUBLIC.pem", help="with --generate-key: where the public key goes "
                                                                 "(default: 'private' in the name becomes 'public', "
                                                                 "else NAME.pub.pem)")
    sign.set_defaults(func=cmd_sign)
    exp = sub.add_parser("export", help="write a model as ONNX, MLIR (graph or loop level) or TVM Relax "
                                        "(TVMScript)")
    exp.add_argument("model", help="an .onnx file, a module:function entry point or a bundled example's name")
    exp.add_argument("--format", required=True, choices=EXPORT_FORMATS,
                     help="onnx (a model file), mlir (func + linalg on tensors), mlir-loop (the scheduled loops: "
                          "scf/affine + memref; needs the mlir extra for both) or relax (TVMScript; the tvm extra)")
    exp.add_argument("-o", dest="output", required=True, metavar="FILE", help="the file to write")
    exp.add_argument("--shape", action="append", metavar="NAME=D0,D1,...",
                     help="a static shape for an ONNX input declared with symbolic dimensions")
    exp.set_defaults(func=cmd_export)
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
