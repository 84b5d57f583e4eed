"""ONNX's backend conformance suite run with mlc and with ONNX Runtime, in one run.

    python benchmarks/bench_onnx_conformance.py [--limit N] [--filter REGEX] [--json PATH]

Every case of the suite's node, simple, pytorch-converted and pytorch-operator kinds
(the "real" light models are left out: their expected outputs are not stored, the
suite computes them with ONNX's Python reference, which takes minutes per model) runs
on mlc's ONNX backend (mlc.interop.onnx_backend) and on an ONNX Runtime CPU session,
each compared with the stored outputs as ONNX's test runner compares them
(Runner.assert_similar_outputs, with the case's rtol/atol: 1e-3/1e-7 unless the case
says otherwise). mlc runs every case, including those its backend test excludes by
rule, so its passes are measured, not predicted.

Prints the cases, those ONNX Runtime passes, those mlc passes, those both pass and
mlc's share of ONNX Runtime's passes; then the cases ONNX Runtime passes and mlc does
not, grouped by reason (an op type or element type the importer does not take, a
known failure of the backend test, or the error). The figures are also given without
the cases that use an element type of 8 bits or fewer other than int8/uint8 (float8,
float4, int4/uint4, int2/uint2) or bfloat16, and without int8/uint8 as well. Needs
onnxruntime (`pip install ".[bench]"`).
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import importlib.util
import json
import os
import re
import signal
import sys
import time
import warnings
from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx.backend.test.loader import load_model_tests
from onnx.backend.test.runner import Runner

from mlc.interop.onnx_backend import MlcBackend

KINDS = ("node", "simple", "pytorch-converted", "pytorch-operator")

# element types the issue allows mlc to leave out: 8 bits and fewer (int8/uint8 counted
# separately) and bfloat16
_LOW_NAMES = ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0", "FLOAT4E2M1",
              "INT4", "UINT4", "INT2", "UINT2", "BFLOAT16")
LOW = {getattr(TensorProto, n) for n in _LOW_NAMES if hasattr(TensorProto, n)}
BYTE = {TensorProto.INT8, TensorProto.UINT8}


def _backend_test_rules():
    """rule_reason and KNOWN_FAILURES from tests/interop/test_onnx_backend.py: the one
    place that says which cases mlc's backend test leaves out and why. (Importing it
    also builds that module's test list: a few seconds.)"""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "tests", "interop", "test_onnx_backend.py")
    spec = importlib.util.spec_from_file_location("_mlc_onnx_backend_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    known = {name: reason for reason, names in mod.KNOWN_FAILURES.items() for name in names}
    return mod.rule_reason, known


def _load_proto(path: str, type_proto):
    """One stored input or output, as ONNX's test runner reads it."""
    with open(path, "rb") as f:
        data = f.read()
    if type_proto.HasField("sequence_type"):
        seq = onnx.SequenceProto()
        seq.ParseFromString(data)
        return numpy_helper.to_list(seq)
    if type_proto.HasField("optional_type"):
        opt = onnx.OptionalProto()
        opt.ParseFromString(data)
        return numpy_helper.to_optional(opt)
    t = onnx.TensorProto()
    t.ParseFromString(data)
    return numpy_helper.to_array(t)


def _normalize(x):
    return numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x


def load_case(case):
    """(model, [(inputs, expected outputs), ...]) of one suite case."""
    if case.model_dir is None:   # node cases: generated in memory
        return case.model, [([_normalize(x) for x in ins], [_normalize(x) for x in outs])
                            for ins, outs in case.data_sets]
    model = onnx.load(os.path.join(case.model_dir, "model.onnx"))
    sets = []
    for d in sorted(glob.glob(os.path.join(case.model_dir, "test_data_set*"))):
        n_in = len(glob.glob(os.path.join(d, "input_*.pb")))
        n_out = len(glob.glob(os.path.join(d, "output_*.pb")))
        ins = [_load_proto(os.path.join(d, f"input_{i}.pb"), model.graph.input[i].type) for i in range(n_in)]
        outs = [_load_proto(os.path.join(d, f"output_{i}.pb"), model.graph.output[i].type) for i in range(n_out)]
        sets.append((ins, outs))
    return model, sets


def _graphs(graph):
    yield graph
    for n in graph.node:
        for a in n.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                yield from _graphs(g)


def elem_types(model, sets) -> set[int]:
    """Every element type the case names: declared values, weights, constants, the
    target types of casts and quantizations, and the stored data's."""
    types = set()
    for g in _graphs(model.graph):
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            if vi.type.HasField("tensor_type"):
                types.add(vi.type.tensor_type.elem_type)
        types.update(t.data_type for t in g.initializer)
        for n in g.node:
            for a in n.attribute:
                if a.name in ("to", "output_dtype", "dtype") and a.type == onnx.AttributeProto.INT:
                    types.add(a.i)
                elif a.type == onnx.AttributeProto.TENSOR:
                    types.add(a.t.data_type)

    def add(x):
        if isinstance(x, np.ndarray):
            try:
                types.add(onnx.helper.np_dtype_to_tensor_dtype(x.dtype))
            except (KeyError, TypeError, ValueError):
                pass
        elif isinstance(x, (list, tuple)):
            for y in x:
                add(y)
    for ins, outs in sets:
        add(ins)
        add(outs)
    types.discard(0)
    return types


class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout()


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:160]


def run_engine(run, model, sets, rtol, atol, timeout_s):
    """None when every data set matches the stored outputs, else why not."""
    signal.alarm(timeout_s)
    try:
        for ins, expected in sets:
            outs = run(model, ins)
            try:
                Runner.assert_similar_outputs(expected, outs, rtol=rtol, atol=atol)
            except AssertionError as e:
                msg = " ".join(str(e).split())
                kind = ("wrong shape" if "incorrect shape" in msg else
                        "wrong element type" if "dtype(" in msg else
                        "wrong number of outputs" if "Items are not equal" in msg else "wrong values")
                return f"mismatch: {kind}", msg[:300]
        return None
    except CaseTimeout:
        return "timeout", f"more than {timeout_s} s"
    except Exception as e:   # a refusal at import or compile, or a crash in running: the case fails
        return "error", _first_line(e)
    finally:
        signal.alarm(0)


def run_mlc(model, ins):
    return list(MlcBackend.prepare(model).run(ins))


def _low_type(x) -> int | None:
    """x's ONNX element type when it is one ONNX Runtime's Python layer cannot take as a
    numpy array (bfloat16, float8, int4, ...: ml_dtypes arrays), else None."""
    try:
        t = onnx.helper.np_dtype_to_tensor_dtype(x.dtype)
    except (KeyError, TypeError, ValueError):
        return None
    return t if t in LOW else None


def _to_ortvalue(ort, x):
    """An ONNX Runtime value holding x's bits, in the layout ONNX stores (4-bit types packed)."""
    t = _low_type(x)
    if t is None:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x))
    raw = numpy_helper.from_array(x).raw_data
    v = ort.OrtValue.ortvalue_from_shape_and_type(list(x.shape), t)
    if v.tensor_size_in_bytes() != len(raw):
        raise ValueError(f"{x.dtype}{list(x.shape)}: {len(raw)} bytes, ONNX Runtime holds {v.tensor_size_in_bytes()}")
    ctypes.memmove(v.data_ptr(), raw, len(raw))
    return v


def _from_ortvalue(v):
    if v.element_type() not in LOW:
        return v.numpy()
    p = onnx.TensorProto()
    p.data_type = v.element_type()
    p.dims.extend(v.shape())
    p.raw_data = ctypes.string_at(v.data_ptr(), v.tensor_size_in_bytes())
    return numpy_helper.to_array(p)


def run_ort(model, ins):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 4   # a model ONNX Runtime refuses is counted, not logged
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    # a 0-d input is stored as a numpy scalar: ONNX Runtime takes it as a 0-d array
    ins = [np.asarray(x) if isinstance(x, np.generic) else x for x in ins]
    names = [model.graph.input[i].name for i in range(len(ins))]
    declared = [o.type.tensor_type.elem_type for o in model.graph.output if o.type.HasField("tensor_type")]
    if not any(isinstance(x, np.ndarray) and _low_type(x) for x in ins) and not set(declared) & LOW:
        return sess.run(None, dict(zip(names, ins)))
    # bfloat16, float8, int4 ... go in and come out as raw bits (the Python layer has no numpy type for them)
    outs = sess.run_with_ort_values(None, {n: _to_ortvalue(ort, x) for n, x in zip(names, ins)})
    return [_from_ortvalue(v) for v in outs]


def _pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:.2f}%" if b else "-"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, help="run only the first N cases (after --filter)")
    p.add_argument("--filter", help="run only the cases whose name matches this regular expression (re.search)")
    p.add_argument("--timeout", type=int, default=300, help="seconds per case and engine (default 300)")
    p.add_argument("--json", help="write each case's results here")
    p.add_argument("--list", action="store_true", help="list every case ONNX Runtime passes and mlc does not")
    args = p.parse_args(argv)

    import onnxruntime as ort
    ort.set_default_logger_severity(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the case generators divide by zero on purpose
        rule_reason, known = _backend_test_rules()
        cases = [(kind, c) for kind in KINDS for c in load_model_tests(kind=kind)]
    if args.filter:
        cases = [(k, c) for k, c in cases if re.search(args.filter, c.name)]
    if args.limit is not None:
        cases = cases[:args.limit]
    signal.signal(signal.SIGALRM, _alarm)

    results = []
    t0 = time.perf_counter()
    for i, (kind, case) in enumerate(cases):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                model, sets = load_case(case)
            except Exception as e:
                print(f"  {case.name}: cannot load its data: {_first_line(e)}", file=sys.stderr)
                continue
            types = elem_types(model, sets)
            r_ort = run_engine(run_ort, model, sets, case.rtol, case.atol, args.timeout)
            r_mlc = run_engine(run_mlc, model, sets, case.rtol, case.atol, args.timeout)
            rule = rule_reason(model)
        results.append({
            "name": case.name, "kind": kind, "ort": r_ort is None, "mlc": r_mlc is None,
            "ort_error": r_ort, "mlc_error": r_mlc, "rule": rule, "known": known.get(case.name),
            "low": bool(types & LOW), "byte": bool(types & BYTE),
            "types": sorted(onnx.helper.tensor_dtype_to_string(t).replace("TensorProto.", "") for t in types),
        })
        if (i + 1) % 100 == 0:
            print(f"  ... {i + 1}/{len(cases)} cases, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t0

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    report(results, ort.__version__, elapsed, args.list)


def _reason(r) -> str:
    if r["rule"]:
        return r["rule"]
    if r["known"]:
        return "known failure: " + r["known"]
    kind, detail = r["mlc_error"]
    if kind == "error":
        # the same refusal for many cases reads as one reason: drop node labels, operand
        # types, source locations and numbers
        detail = re.split(r"; operand types: | \(at /", detail)[0]
        detail = re.sub(r"node \d+ '[^']*' ", "", detail)
        detail = re.sub(r"\b\d+(\.\d+)?(e-?\d+)?\b", "N", detail)
        return detail
    return kind


def report(results, ort_version: str, elapsed: float, list_all: bool) -> None:
    subsets = [("all cases", lambda r: True),
               ("no low-precision", lambda r: not r["low"]),
               ("nor int8/uint8", lambda r: not r["low"] and not r["byte"])]
    print(f"ONNX backend suite (onnx {onnx.__version__}; kinds {', '.join(KINDS)}; the 'real' models left out), "
          f"ONNX Runtime {ort_version} (CPU) vs mlc, {elapsed:.0f} s")
    print("low-precision: a case that uses float8, float4, int4/uint4, int2/uint2 or bfloat16")
    cols = [[r for r in results if keep(r)] for _, keep in subsets]
    width = max(len(t) for t, _ in subsets) + 2
    print(" " * 26 + "".join(f"{t:>{width}}" for t, _ in subsets))
    rows = [("cases", lambda rs: len(rs)),
            ("passed by ONNX Runtime", lambda rs: sum(r["ort"] for r in rs)),
            ("passed by mlc", lambda rs: sum(r["mlc"] for r in rs)),
            ("passed by both", lambda rs: sum(r["ort"] and r["mlc"] for r in rs)),
            ("ORT passes, mlc not", lambda rs: sum(r["ort"] and not r["mlc"] for r in rs)),
            ("mlc passes, ORT not", lambda rs: sum(r["mlc"] and not r["ort"] for r in rs))]
    for label, count in rows:
        print(f"{label:<26}" + "".join(f"{count(rs):>{width}}" for rs in cols))
    print(f"{'both / ORT passes':<26}" + "".join(
        f"{_pct(sum(r['ort'] and r['mlc'] for r in rs), sum(r['ort'] for r in rs)):>{width}}" for rs in cols))
    print(f"{'mlc / ORT passes':<26}" + "".join(
        f"{_pct(sum(r['mlc'] for r in rs), sum(r['ort'] for r in rs)):>{width}}" for rs in cols))

    missed = [r for r in results if r["ort"] and not r["mlc"]]
    groups: dict[str, list] = defaultdict(list)
    for r in missed:
        groups[_reason(r)].append(r)
    print(f"\nPassed by ONNX Runtime, not by mlc: {len(missed)} cases "
          f"({sum(not r['low'] for r in missed)} without float8/4, int4/2, bfloat16), by reason:")
    for reason, rs in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        names = [r["name"] for r in rs]
        shown = names if list_all or len(names) <= 6 else names[:6] + [f"... {len(names) - 6} more"]
        low = sum(r["low"] for r in rs)
        print(f"  {len(rs):4d}{f' ({low} low-precision)' if low else '':<22} {reason}")
        print(f"        {', '.join(shown)}")
    ort_only = [r for r in results if r["mlc"] and not r["ort"]]
    if ort_only:
        print(f"\nPassed by mlc, not by ONNX Runtime: {len(ort_only)} cases")
        for r in ort_only[:40]:
            print(f"  {r['name']}: {r['ort_error'][0]}: {r['ort_error'][1][:120]}")


if __name__ == "__main__":
    main()
