"""Each rule of the simplify tables (mlc/passes/graph_rules.py), text in, text out:
parse a small graph, run the rule's table with the rewrite engine, compare the
printed result, and check that the hit was counted for that rule."""
from collections import Counter
from textwrap import dedent

import pytest

from mlc.ir.graph import parse_graph, print_graph
from mlc.passes import graph_rules
from mlc.passes.graph_rules import CHAINS, FOLD_BATCH_NORM, IDENTITIES
from mlc.passes.rewrite import Rule, rewrite


def run(table, text):
    hits = Counter()
    out = rewrite(parse_graph(dedent(text).strip()), table, hits)
    return print_graph(out), hits


def same(got, want):
    assert got == dedent(want).strip(), got


X_ONLY = """
    graph @g(%x: f32[2,3]) {
      return %x
    }"""

IDENTITY_CASES = [
    ("add_zero", """
        graph @g(%x: f32[2,3]) {
          %0 = constant() {value=dense<f32[3]: [0.0, 0.0, 0.0]>} : f32[3]
          %1 = add(%x, %0) : f32[2,3]
          return %1
        }"""),
    ("zero_add", """
        graph @g(%x: f32[2,3]) {
          %0 = constant() {value=dense<f32[]: [0.0]>} : f32[]
          %1 = add(%0, %x) : f32[2,3]
          return %1
        }"""),
    ("sub_zero", """
        graph @g(%x: f32[2,3]) {
          %0 = constant() {value=dense<f32[]: [0.0]>} : f32[]
          %1 = sub(%x, %0) : f32[2,3]
          return %1
        }"""),
    ("mul_one", """
        graph @g(%x: f32[2,3]) {
          %0 = constant() {value=dense<f32[1,3]: [1.0, 1.0, 1.0]>} : f32[1,3]
          %1 = mul(%x, %0) : f32[2,3]
          return %1
        }"""),
    ("div_one", """
        graph @g(%x: f32[2,3]) {
          %0 = constant() {value=dense<f32[]: [1.0]>} : f32[]
          %1 = div(%x, %0) : f32[2,3]
          return %1
        }"""),
    ("identity_transpose", """
        graph @g(%x: f32[2,3]) {
          %0 = transpose(%x) {axes=[0, 1]} : f32[2,3]
          return %0
        }"""),
    ("cast_to_same_type", """
        graph @g(%x: f32[2,3]) {
          %0 = cast(%x) {dtype=f32} : f32[2,3]
          return %0
        }"""),
    ("copy_to_same_type", """
        graph @g(%x: f32[2,3]) {
          %0 = copy(%x) : f32[2,3]
          return %0
        }"""),
    ("reshape_to_same_type", """
        graph @g(%x: f32[2,3]) {
          %0 = reshape(%x) {shape=[2, 3]} : f32[2,3]
          return %0
        }"""),
    ("broadcast_to_to_same_type", """
        graph @g(%x: f32[2,3]) {
          %0 = broadcast_to(%x) {shape=[2, 3]} : f32[2,3]
          return %0
        }"""),
]


@pytest.mark.parametrize("rule,text", IDENTITY_CASES, ids=[c[0] for c in IDENTITY_CASES])
def test_identity_rule(rule, text):
    got, hits = run(IDENTITIES, text)
    same(got, X_ONLY)
    assert hits == {rule: 1}


def test_identities_keep_what_changes_the_value_or_the_type():
    text = """
        graph @g(%x: f32[2,3]) {
          %0 = constant() {value=dense<f32[]: [2.0]>} : f32[]
          %1 = mul(%x, %0) : f32[2,3]
          %2 = constant() {value=dense<f32[2,1,3]: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]>} : f32[2,1,3]
          %3 = add(%1, %2) : f32[2,2,3]
          %4 = cast(%3) {dtype=f64} : f64[2,2,3]
          %5 = transpose(%4) {axes=[0, 2, 1]} : f64[2,3,2]
          return %5
        }"""
    got, hits = run(IDENTITIES, text)
    same(got, text)   # x * 2, a broadcasting + 0, a real cast and a real transpose all stay
    assert not hits


def test_identity_rules_come_from_the_op_records():
    from mlc import ops
    named = {r.op for r in IDENTITIES if r.name.endswith("_to_same_type")}
    assert named == {n for n, op in ops.REGISTRY.items() if op.identity_when_same_type}
    assert {"cast", "copy", "reshape", "broadcast_to", "expand_dims", "squeeze"} <= named


def test_transpose_of_transpose_is_one_transpose():
    got, hits = run(CHAINS, """
        graph @g(%x: f32[2,3,4]) {
          %0 = transpose(%x) {axes=[1, 0, 2]} : f32[3,2,4]
          %1 = transpose(%0) {axes=[0, 2, 1]} : f32[3,4,2]
          return %1
        }""")
    same(got, """
        graph @g(%x: f32[2,3,4]) {
          %0 = transpose(%x) {axes=[1, 2, 0]} : f32[3,4,2]
          return %0
        }""")
    assert hits == {"transpose_of_transpose": 1}


def test_transpose_of_its_inverse_is_the_input():
    got, hits = run(CHAINS, """
        graph @g(%x: f32[2,3,4]) {
          %0 = transpose(%x) {axes=[1, 2, 0]} : f32[3,4,2]
          %1 = transpose(%0) {axes=[2, 0, 1]} : f32[2,3,4]
          return %1
        }""")
    same(got, """
        graph @g(%x: f32[2,3,4]) {
          return %x
        }""")
    assert hits == {"transpose_of_transpose": 1}


def test_reshape_of_views_is_one_reshape():
    got, hits = run(CHAINS, """
        graph @g(%x: f32[2,3,4]) {
          %0 = expand_dims(%x) {axis=[0]} : f32[1,2,3,4]
          %1 = squeeze(%0) {axis=[0]} : f32[2,3,4]
          %2 = reshape(%1) {shape=[6, 4]} : f32[6,4]
          %3 = reshape(%2) {shape=[24]} : f32[24]
          return %3
        }""")
    same(got, """
        graph @g(%x: f32[2,3,4]) {
          %0 = reshape(%x) {shape=[24]} : f32[24]
          return %0
        }""")
    # %2 and %3 each collapse onto %x in the one sweep that sees them
    assert hits == {"reshape_of_views": 2}


def test_reshape_of_views_back_to_the_input_type_is_the_input():
    got, hits = run(CHAINS, """
        graph @g(%x: f32[2,3]) {
          %0 = expand_dims(%x) {axis=[0]} : f32[1,2,3]
          %1 = reshape(%0) {shape=[2, 3]} : f32[2,3]
          return %1
        }""")
    same(got, X_ONLY)
    assert hits == {"reshape_of_views": 1}


def test_reshape_of_a_transpose_stays():
    text = """
        graph @g(%x: f32[2,3]) {
          %0 = transpose(%x) {axes=[1, 0]} : f32[3,2]
          %1 = reshape(%0) {shape=[6]} : f32[6]
          return %1
        }"""
    got, hits = run(CHAINS, text)
    same(got, text)   # a transpose moves bytes: it is no view
    assert not hits


CONV_BN = """
    graph @g(%x: f32[1,1,2,2]) {
      %0 = constant() {value=dense<f32[2,1,1,1]: [1.0, 1.0]>} : f32[2,1,1,1]
      %1 = conv(%x, %0) {strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1, auto_pad="NOTSET", kernel_shape=[1, 1]} : f32[1,2,2,2]
      %2 = constant() {value=dense<f32[2]: [2.0, 3.0]>} : f32[2]
      %3 = constant() {value=dense<f32[2]: [1.0, 1.0]>} : f32[2]
      %4 = constant() {value=dense<f32[2]: [0.0, 1.0]>} : f32[2]
      %5 = constant() {value=dense<f32[2]: [1.0, 1.0]>} : f32[2]
      %6 = batch_norm(%1, %2, %3, %4, %5) {epsilon=0.0} : f32[1,2,2,2]
      return %6
    }"""


def test_batch_norm_folds_into_conv_weights():
    # scale 2, 3 (variance 1, epsilon 0) multiplies output channels 0, 1 of the weight;
    # the shift is bias - mean * scale = 1, -2
    got, hits = run(FOLD_BATCH_NORM, CONV_BN)
    same(got, """
        graph @g(%x: f32[1,1,2,2]) {
          %0 = constant() {value=dense<f32[2,1,1,1]: [2.0, 3.0]>} : f32[2,1,1,1]
          %1 = conv(%x, %0) {strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1, auto_pad="NOTSET", kernel_shape=[1, 1]} : f32[1,2,2,2]
          %2 = constant() {value=dense<f32[2,1,1]: [1.0, -2.0]>} : f32[2,1,1]
          %3 = add(%1, %2) : f32[1,2,2,2]
          return %3
        }""")
    assert hits == {"batch_norm_into_weights": 1}


def test_batch_norm_folds_a_bias_add_and_matmul_columns():
    # y = x @ w + bias; the bias (0.5, 1) goes through the scale: shift = 1 + 0.5*2, 1 - 1*3 + 1*3
    got, hits = run(FOLD_BATCH_NORM, """
        graph @g(%x: f32[4,3]) {
          %0 = constant() {value=dense<f32[3,2]: [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]>} : f32[3,2]
          %1 = matmul(%x, %0) : f32[4,2]
          %2 = constant() {value=dense<f32[2]: [0.5, 1.0]>} : f32[2]
          %3 = add(%1, %2) : f32[4,2]
          %4 = constant() {value=dense<f32[2]: [2.0, 3.0]>} : f32[2]
          %5 = constant() {value=dense<f32[2]: [1.0, 1.0]>} : f32[2]
          %6 = constant() {value=dense<f32[2]: [0.0, 1.0]>} : f32[2]
          %7 = constant() {value=dense<f32[2]: [1.0, 1.0]>} : f32[2]
          %8 = batch_norm(%3, %4, %5, %6, %7) {epsilon=0.0} : f32[4,2]
          return %8
        }""")
    same(got, """
        graph @g(%x: f32[4,3]) {
          %0 = constant() {value=dense<f32[3,2]: [2.0, 3.0, 2.0, 3.0, 2.0, 3.0]>} : f32[3,2]
          %1 = matmul(%x, %0) : f32[4,2]
          %2 = constant() {value=dense<f32[2]: [2.0, 1.0]>} : f32[2]
          %3 = add(%1, %2) : f32[4,2]
          return %3
        }""")
    assert hits == {"batch_norm_into_weights": 1}


def test_batch_norm_stays_when_the_conv_result_has_another_reader():
    text = CONV_BN.replace("return %6", "return %6, %1")
    got, hits = run(FOLD_BATCH_NORM, text)
    same(got, text)
    assert not hits


def test_batch_norm_stays_after_a_batched_matmul():
    # [2, 4, 3] @ [3, 4]: axis 1 of the result is a row of x, not a column of the weight
    text = """
        graph @g(%x: f32[2,4,3]) {
          %0 = constant() {value=dense<f32[3,4]: [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]>} : f32[3,4]
          %1 = matmul(%x, %0) : f32[2,4,4]
          %2 = constant() {value=dense<f32[4]: [1.0, 1.0, 1.0, 1.0]>} : f32[4]
          %3 = batch_norm(%1, %2, %2, %2, %2) {epsilon=0.0} : f32[2,4,4]
          return %3
        }"""
    got, hits = run(FOLD_BATCH_NORM, text)
    same(got, text)
    assert not hits


def test_the_simplify_pass_runs_the_three_tables_to_a_fixed_point():
    # batch_norm with unit statistics folds into conv + 0; the next sweep drops the + 0
    hits = Counter()
    text = """
        graph @g(%x: f32[1,1,2,2]) {
          %0 = constant() {value=dense<f32[2,1,1,1]: [1.0, 1.0]>} : f32[2,1,1,1]
          %1 = conv(%x, %0) {strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1, auto_pad="NOTSET", kernel_shape=[1, 1]} : f32[1,2,2,2]
          %2 = constant() {value=dense<f32[2]: [1.0, 1.0]>} : f32[2]
          %3 = constant() {value=dense<f32[2]: [0.0, 0.0]>} : f32[2]
          %4 = batch_norm(%1, %2, %3, %3, %2) {epsilon=0.0} : f32[1,2,2,2]
          return %4
        }"""
    got = print_graph(graph_rules.simplify(parse_graph(dedent(text).strip()), hits))
    same(got, """
        graph @g(%x: f32[1,1,2,2]) {
          %0 = constant() {value=dense<f32[2,1,1,1]: [1.0, 1.0]>} : f32[2,1,1,1]
          %1 = conv(%x, %0) {strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1, auto_pad="NOTSET", kernel_shape=[1, 1]} : f32[1,2,2,2]
          return %1
        }""")
    assert hits == {"batch_norm_into_weights": 1, "add_zero": 1}


def test_a_table_that_never_settles_is_an_error():
    flip = Rule("flip", "neg", lambda n, ins, b, single_use: b.node("neg", ins, {}, [n.outputs[0].type]))
    with pytest.raises(RuntimeError, match="did not settle.*flip"):
        rewrite(parse_graph(dedent("""
            graph @g(%x: f32[2]) {
              %0 = neg(%x) : f32[2]
              return %0
            }""").strip()), [flip])
