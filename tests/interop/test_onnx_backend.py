"""ONNX's own conformance suite (onnx.backend.test) with mlc as the backend.

Which cases run is decided here, in one place, with the reason for every case
left out, grouped by cause:

* by rule, from the model itself: an op type the importer does not map, an
  element type mlc does not have, an opset older than mlc imports, a non-default domain;
* by name, in KNOWN_FAILURES, for the few cases that fail for another reason.

So when an op is added, its cases start running by themselves, and a case that
then fails is a visible failure, not a silent exclusion.
"""
from __future__ import annotations

import os
import re
import warnings
from collections import defaultdict

import onnx
import onnx.backend.test
from onnx import helper

from mlc.frontend import onnx as mlc_onnx
from mlc.interop.onnx_backend import MlcBackend
from mlc.ir.types import dtype as mlc_dtype

KNOWN_FAILURES: dict[str, list[str]] = {
    "training-mode Dropout with a nonzero ratio draws random numbers: its outputs cannot match stored ones": [
        "test_training_dropout", "test_training_dropout_default", "test_training_dropout_mask",
        "test_training_dropout_default_mask",
    ],
    "Range with float bounds given as graph inputs: the output shape depends on input values "
    "(only integer inputs are specialized)": [
        "test_range_float16_type_positive_delta", "test_range_float_type_positive_delta",
    ],
    "an input without a static shape (optional-typed input)": ["test_identity_opt"],
    "a sequence indexed by a Loop's iteration number (SequenceMap's expansion): positions in a sequence must be "
    "known at import time": [
        "test_sequence_map_identity_1_sequence_expanded", "test_sequence_map_identity_2_sequences_expanded",
        "test_sequence_map_identity_1_sequence_1_tensor_expanded", "test_sequence_map_add_2_sequences_expanded",
        "test_sequence_map_add_1_sequence_1_tensor_expanded", "test_sequence_map_extract_shapes_expanded",
    ],
    "Loop whose body slices with bounds computed from the iteration number (a size known only at run time)": [
        "test_loop11", "test_loop13_seq",
    ],
    "Einsum taking a diagonal (a repeated index in one operand) is refused at import": ["test_einsum_batch_diagonal"],
    "float16 attention expanded into primitive ops: mlc computes each op on float16 exactly as "
    "numpy does, the reference accumulates differently; outside the test's tolerance": [
        "test_attention_4d_causal_fp16_expanded",
    ],
    "float16 Attention: mlc's softmax and matmul compute float16 in float32 and round once, the reference "
    "rounds to float16 at each step; 2 of 192 outputs differ by 2 float16 ulps (rel 1.2e-3 > rtol 1e-3)": [
        "test_attention_4d_causal_fp16",
    ],
    "Col2Im over 3 spatial axes: mlc's col2im op is 2-D (refused at import with that message)": ["test_col2im_5d"],
    "inverse DFT of a real signal's spectrum: the stored imaginary parts hold numpy's FFT rounding residue "
    "(1.9e-7) where mlc's cos/sin matmul gives ~3e-15; the test's absolute tolerance is 1e-7": [
        "test_dft_inverse", "test_dft_inverse_opset19",
    ],
}


def _elem_dtype_ok(elem_type: int) -> bool:
    try:
        mlc_dtype(helper.tensor_dtype_to_np_dtype(elem_type))
        return True
    except (TypeError, KeyError, ValueError):
        return False


def _elem_name(elem_type: int) -> str:
    return helper.tensor_dtype_to_string(elem_type).replace("TensorProto.", "")


def _all_nodes(graph):
    """The graph's nodes and, depth first, those of its subgraphs (Loop, Scan, If bodies)."""
    for n in graph.node:
        yield n
        for a in n.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                yield from _all_nodes(g)


def rule_reason(model: onnx.ModelProto) -> str | None:
    """Why this model cannot run on mlc, judged from the model alone (None: it should)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        return "domain not supported: the model uses only non-default (e.g. training) domains"
    if opset < mlc_onnx.MIN_OPSET:
        return f"opset not supported: opset {opset} is older than {mlc_onnx.MIN_OPSET}"
    ops = {n.op_type for n in _all_nodes(model.graph)
           if (n.domain or "ai.onnx") != "ai.onnx" or n.op_type not in mlc_onnx.CONVERTERS}
    if ops:
        return "op not supported: " + ", ".join(sorted(ops))
    # training-mode statistics outputs are imported from opset 14 on (training_mode); the
    # older spelling (is_test, saved mean and variance outputs) is not
    extra_outputs = {n.op_type for n in model.graph.node if len([o for o in n.output if o]) > 1
                     and n.op_type == "BatchNormalization"}
    if extra_outputs and opset < 14:
        return "op output not supported (saved statistics): " + ", ".join(sorted(extra_outputs))
    elem_types = [vi.type.tensor_type.elem_type for vi in list(model.graph.input) + list(model.graph.output)
                  if vi.type.HasField("tensor_type")]
    elem_types += [t.data_type for t in model.graph.initializer]
    elem_types += [a.i for n in model.graph.node for a in n.attribute if n.op_type == "Cast" and a.name == "to"]
    bad = sorted({_elem_name(t) for t in elem_types if t and not _elem_dtype_ok(t)})
    if bad:
        return "dtype not supported: " + ", ".join(bad)
    if any(not vi.type.HasField("tensor_type") and not vi.type.HasField("sequence_type") for vi in model.graph.input):
        return "input type not supported: maps and optionals"
    return None


def _models():
    """(test name, model) for every case the backend suite generates. The "real"
    models are the light versions shipped inside the onnx package."""
    from onnx.backend.test.case import node as node_cases
    from onnx.backend.test.loader import load_model_tests
    for case in node_cases.collect_testcases():
        yield case.name, case.model
    for kind in ("simple", "pytorch-converted", "pytorch-operator"):
        for case in load_model_tests(kind=kind):
            yield case.name, onnx.load(os.path.join(case.model_dir, "model.onnx"), load_external_data=False)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(onnx.backend.test.__file__))))
    for case in load_model_tests(kind="real"):
        yield case.name, onnx.load(os.path.join(root, case.url))


def exclusions() -> dict[str, list[str]]:
    """cause -> test names (without the device suffix)."""
    by_cause: dict[str, list[str]] = defaultdict(list)
    for name, model in _models():
        reason = rule_reason(model)
        if reason:
            by_cause[reason].append(name)
    for reason, names in KNOWN_FAILURES.items():
        by_cause[reason].extend(names)
    return dict(by_cause)


with warnings.catch_warnings():
    warnings.simplefilter("ignore")   # the case generators divide by zero on purpose
    EXCLUDED = exclusions()
    backend_test = onnx.backend.test.BackendTest(MlcBackend, __name__)

for names in EXCLUDED.values():
    for name in names:
        backend_test.exclude(f"^{re.escape(name)}_(cpu|cuda)$")

globals().update(backend_test.test_cases)


def test_exclusions_are_explained_and_do_not_hide_supported_ops():
    assert all(reason and names for reason, names in EXCLUDED.items())
    known = {n for names in KNOWN_FAILURES.values() for n in names}
    assert len(known) == sum(len(v) for v in KNOWN_FAILURES.values())   # each listed once
    # the rule refuses nothing the importer maps: e.g. every Add/Relu/MatMul node case runs
    for name in ("test_add", "test_relu", "test_matmul_2d", "test_softmax_axis_0", "test_reduce_sum_keepdims_example",
                 "test_add_int16", "test_mod_uint16", "test_less_equal_uint32_expanded", "test_top_k_uint64"):
        assert not any(name in names for names in EXCLUDED.values()), name
    assert rule_reason(onnx.load_from_string(_tiny_model_bytes("Relu"))) is None
    assert rule_reason(onnx.load_from_string(_tiny_model_bytes("NoSuchOp"))) == "op not supported: NoSuchOp"


def _tiny_model_bytes(op_type: str) -> bytes:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    g = helper.make_graph([helper.make_node(op_type, ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()

