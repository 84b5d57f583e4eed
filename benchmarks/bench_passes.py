"""What mlc's graph passes buy: -O0 against -O2 (and ONNX Runtime) on two models, in one run.

    python benchmarks/bench_passes.py [--models resnet50,transformer] [--repeat N] [--levels 0,2]

Models: ``resnet50`` is the light ResNet-50 shipped with the onnx package (imported with
``mlc.frontend.onnx.from_onnx``); ``transformer`` is the post-LN BERT-style encoder block
of ``mlc.examples`` (batch 1, sequence 128, hidden 768, 12 heads, FFN 3072), traced
from Python, and for ONNX Runtime the same block built with ``onnx.helper`` (opset 17,
LayerNormalization, erf GELU) on the same weights.

For each model and -O level it prints: kernel count; the peak planned memory of the
intermediates (the workspace arena) against their naive sum (every intermediate value
in its own buffer) and the ratio peak/naive; compile time (``mlc.compile``, for the
transformer including the trace; the object code may come
from the mlc cache, ``$MLC_CACHE_DIR``; such times are starred); median latency at
batch 1; the speed-up against the first level (latency O0 / latency this level); and
ONNX Runtime's latency with the ratio ort/mlc (above 1: mlc is faster), plus the
largest |difference| of the two outputs. Threads: ONNX Runtime 2 intra-op threads,
mlc libgomp with the machine's cores. Each latency is the median of at most --repeat
calls after a warm-up, time-boxed to about 10 s per configuration (at least 3 calls),
so slow configurations (-O0 ResNet-50) get fewer calls. Without onnxruntime the mlc
columns are still printed and ONNX Runtime is skipped.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import sys
import time

import numpy as np

import mlc
from mlc.examples import transformer_block, transformer_inputs, transformer_numpy
from mlc.passes.manager import check_opt_level
from mlc.runtime import cache
from peers import LIGHT, ort_session

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:   # pragma: no cover - onnx ships with mlc's ONNX frontend
    onnx = None

TIME_BOX_S = 10.0
MIN_CALLS = 3


def median_time(fn, repeat: int, budget_s: float = TIME_BOX_S) -> tuple[float, int]:
    """Median seconds per call and the number of timed calls: one warm-up call (two
    when fast), then up to ``repeat`` calls, stopping early once ``budget_s`` is spent
    (after at least MIN_CALLS)."""
    t0 = time.perf_counter()
    fn()
    if time.perf_counter() - t0 < 0.5:
        fn()
    times: list[float] = []
    while len(times) < repeat:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if sum(times) >= budget_s and len(times) >= min(MIN_CALLS, repeat):
            break
    return float(np.median(times)), len(times)


def cache_entries() -> int | None:
    d = cache.cache_dir()
    if d is None:
        return None
    if not os.path.isdir(d):
        return 0
    return sum(1 for _, _, files in os.walk(d) for f in files if f.endswith(".o"))


# --- the models ------------------------------------------------------------------------------

class Model:
    """A benchmark subject: how to compile it with mlc, its inputs, and (optionally)
    the serialized ONNX model plus feeds for ONNX Runtime and a numpy reference."""
    name: str
    args: list
    onnx_bytes: bytes | None = None
    feeds: dict | None = None
    reference: np.ndarray | None = None

    def compile(self, opt_level: int):
        raise NotImplementedError


class ResNet50(Model):
    name = "resnet50"

    def __init__(self):
        from mlc.frontend.onnx import data_inputs, from_onnx
        if onnx is None:
            raise RuntimeError("needs the onnx package")
        path = os.path.join(LIGHT, "light_resnet50.onnx")
        model = onnx.load(path)
        self.graph = from_onnx(model)
        with open(path, "rb") as f:
            self.onnx_bytes = f.read()
        self.feeds = {}
        for vi in data_inputs(model.graph, {i.name for i in model.graph.initializer}):
            shape = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
            self.feeds[vi.name] = np.random.default_rng(0).random(shape, dtype=np.float32)
        self.args = list(self.feeds.values())

    def compile(self, opt_level: int):
        return mlc.compile(self.graph, opt_level=opt_level)


class Transformer(Model):
    name = "transformer"
    SEQ, HIDDEN, HEADS, FFN = 128, 768, 12, 3072

    def __init__(self):
        self.args = list(transformer_inputs(self.SEQ, self.HIDDEN, self.HEADS, self.FFN))
        self.reference = transformer_numpy(*self.args, heads=self.HEADS)
        if onnx is not None:
            self.onnx_bytes = transformer_onnx(self.args, self.HEADS).SerializeToString()
            self.feeds = {"x": self.args[0]}

    def compile(self, opt_level: int):
        heads = self.HEADS

        def block(*a):
            return transformer_block(*a, heads=heads)
        block.__name__ = "transformer_block"
        return mlc.compile(block, *self.args, opt_level=opt_level)


def transformer_onnx(args, heads: int):
    """``mlc.examples.transformer_block`` as an ONNX model (opset 17): x is the one
    graph input, the weights are initializers."""
    x = args[0]
    batch, seq, hidden = x.shape
    d = hidden // heads
    inits = [numpy_helper.from_array(np.asarray(a, np.float32), name) for name, a in zip(
        ["wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "ln1_s", "ln1_b", "w1", "b1", "w2", "b2",
         "ln2_s", "ln2_b"], args[1:])]
    inits += [numpy_helper.from_array(np.array([batch, seq, heads, d], np.int64), "heads_shape"),
              numpy_helper.from_array(np.array([batch, seq, hidden], np.int64), "hidden_shape"),
              numpy_helper.from_array(np.array(math.sqrt(d), np.float32), "sqrt_d"),
              numpy_helper.from_array(np.array(math.sqrt(2.0), np.float32), "sqrt_2"),
              numpy_helper.from_array(np.array(1.0, np.float32), "one"),
              numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    N = helper.make_node
    nodes = []
    for p in "qkv":
        perm = [0, 2, 3, 1] if p == "k" else [0, 2, 1, 3]   # K comes out already transposed
        nodes += [N("MatMul", ["x", f"w{p}"], [f"{p}_mm"]),
                  N("Add", [f"{p}_mm", f"b{p}"], [f"{p}_lin"]),
                  N("Reshape", [f"{p}_lin", "heads_shape"], [f"{p}_split"]),
                  N("Transpose", [f"{p}_split"], [f"{p}_h"], perm=perm)]
    nodes += [N("MatMul", ["q_h", "k_h"], ["qk"]),
              N("Div", ["qk", "sqrt_d"], ["scores"]),
              N("Softmax", ["scores"], ["probs"], axis=-1),
              N("MatMul", ["probs", "v_h"], ["ctx_h"]),
              N("Transpose", ["ctx_h"], ["ctx_t"], perm=[0, 2, 1, 3]),
              N("Reshape", ["ctx_t", "hidden_shape"], ["ctx"]),
              N("MatMul", ["ctx", "wo"], ["o_mm"]),
              N("Add", ["o_mm", "bo"], ["o_lin"]),
              N("Add", ["x", "o_lin"], ["res1"]),
              N("LayerNormalization", ["res1", "ln1_s", "ln1_b"], ["h"], axis=-1, epsilon=1e-5),
              N("MatMul", ["h", "w1"], ["f1_mm"]),
              N("Add", ["f1_mm", "b1"], ["u"]),
              # gelu(u) = 0.5 * u * (1 + erf(u / sqrt(2))), mlc.gelu's exact (erf) form
              N("Div", ["u", "sqrt_2"], ["u_s"]),
              N("Erf", ["u_s"], ["u_erf"]),
              N("Add", ["u_erf", "one"], ["u_1"]),
              N("Mul", ["u", "u_1"], ["u_m"]),
              N("Mul", ["u_m", "half"], ["g"]),
              N("MatMul", ["g", "w2"], ["f2_mm"]),
              N("Add", ["f2_mm", "b2"], ["f2"]),
              N("Add", ["h", "f2"], ["res2"]),
              N("LayerNormalization", ["res2", "ln2_s", "ln2_b"], ["y"], axis=-1, epsilon=1e-5)]
    graph = helper.make_graph(
        nodes, "transformer_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="mlc-bench_passes")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


MODELS = {"resnet50": ResNet50, "transformer": Transformer}


# --- the run ---------------------------------------------------------------------------------

def mib(n: int) -> str:
    return f"{n / 2 ** 20:.1f}"


def ratio(a: float, b: float) -> str:
    """a / b with 3 significant digits."""
    return f"{a / b:.3g}" if b else "-"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet50,transformer",
                   help=f"comma-separated, from {', '.join(MODELS)} (default: both)")
    p.add_argument("--repeat", type=int, default=10, help="timed calls per configuration at most (default 10)")
    p.add_argument("--levels", default="0,2", help="comma-separated -O levels (default 0,2)")
    args = p.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    try:
        levels = [check_opt_level(int(s)) for s in args.levels.split(",") if s]
    except ValueError as e:   # not an int, or a level check_opt_level does not know
        p.error(f"--levels: {e}")
    if not levels:
        p.error("--levels: give at least one level")
    repeat = max(1, args.repeat)

    try:
        import onnxruntime as ort
        ort_version = f"onnxruntime {ort.__version__}"
    except ImportError:
        ort = None
        ort_version = "onnxruntime missing: ONNX Runtime columns skipped (pip install '.[bench]')"
    cdir = cache.cache_dir()
    print(f"mlc {mlc.__version__} on {mlc.Target.get('host')}; {ort_version}")
    print(f"python {platform.python_version()}, numpy {np.__version__}"
          f"{', onnx ' + onnx.__version__ if onnx is not None else ''}; {os.cpu_count()} cpus; "
          f"mlc cache {cdir or 'off'}; batch 1, median of <= {repeat} calls, ~{TIME_BOX_S:.0f} s per config")
    base = levels[0]
    hdr = (f"{'model':12s} {'-O':>3s} {'kernels':>7s} {'peak MiB':>9s} {'naive MiB':>9s} {'peak/naive':>10s} "
           f"{'compile s':>9s} {'mlc ms':>9s} {'calls':>5s} {f'O{base}/O':>7s} {'ort ms':>8s} {'ort/mlc':>7s} "
           f"{'|mlc-ort|':>9s}")
    print(hdr)
    notes = []
    cached_any = False
    for name in names:
        try:
            model = MODELS[name]()
        except (OSError, RuntimeError) as e:   # a missing model file or onnx package: say so, go on
            print(f"{name:12s} skipped: {type(e).__name__}: {e}")
            continue
        sess = t_ort = want = None
        if ort is not None and model.onnx_bytes is not None:
            sess = ort_session(ort, model.onnx_bytes)
            want = sess.run(None, model.feeds)[0]
            t_ort, _ = median_time(functools.partial(sess.run, None, model.feeds), repeat)
        if model.reference is not None and want is not None:
            notes.append(f"{name}: ORT vs numpy reference max |diff| {np.max(np.abs(want - model.reference)):.1e}")
        t_base = None
        for lvl in levels:
            before = cache_entries()
            t0 = time.perf_counter()
            exe = model.compile(lvl)
            t_compile = time.perf_counter() - t0
            after = cache_entries()
            from_cache = before is not None and after == before
            cached_any |= from_cache
            got = np.asarray(exe(*model.args))
            if model.reference is not None:
                notes.append(f"{name} -O{lvl}: mlc vs numpy reference max |diff| "
                             f"{np.max(np.abs(got - model.reference)):.1e}")
            t_mlc, calls = median_time(functools.partial(exe, *model.args), repeat)
            if t_base is None:
                t_base = t_mlc
            st = exe.stats
            naive = st.get("intermediate_bytes", 0)
            speedup = "-" if lvl == base else ratio(t_base, t_mlc)
            ort_cols = (f"{t_ort * 1e3:8.2f} {ratio(t_ort, t_mlc):>7s} {np.max(np.abs(got - want)):9.1e}"
                        if t_ort is not None else f"{'-':>8s} {'-':>7s} {'-':>9s}")
            compile_s = f"{t_compile:.1f}" + ("*" if from_cache else "")
            print(f"{name:12s} {lvl:3d} {exe.kernel_count:7d} {mib(exe.workspace_bytes):>9s} {mib(naive):>9s} "
                  f"{ratio(exe.workspace_bytes, naive):>10s} {compile_s:>9s} {t_mlc * 1e3:9.2f} {calls:5d} "
                  f"{speedup:>7s} {ort_cols}", flush=True)
    if cached_any:
        print(f"* object code served from the mlc cache ({cdir}): compile time without LLVM's code generation")
    if ort is None:
        print("ONNX Runtime skipped: onnxruntime is not installed")
    for n in notes:
        print(n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
