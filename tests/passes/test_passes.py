"""Graph passes, fusion, the pass manager and memory planning.

Each pass is checked three ways: the graph text after it (what it did), the
reference interpreter's numbers before and after (what it preserved), and that
running it twice changes nothing more (idempotence). Random graphs run every pass
in test_random_graphs.py; these tests pin down each rewrite.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import mlc
from mlc import ops
from mlc.ir.graph import GraphBuilder
from mlc.passes import simplify
from mlc.passes.fuse import fuse, unfused
from mlc.passes.manager import PASSES, PIPELINES, Pass, PassManager

RNG = np.random.default_rng(7)


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def body(graph) -> list[str]:
    """The graph's node lines without the constants' data (for readable assertions)."""
    return [line.strip() for line in str(graph).splitlines()[1:-2]]


def op_names(graph) -> list[str]:
    return [n.op for n in graph.nodes if n.op != "constant"]


def check_pass(name: str, graph, inputs, rtol=1e-5, atol=1e-6):
    """Run pass ``name``; numbers must agree with the graph before it, and a second
    run must change nothing. Returns the graph after it."""
    after = PASSES[name].run(graph)
    ops.verify(after)
    for got, want in zip(ops.run_reference(after, *inputs), ops.run_reference(graph, *inputs)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    assert str(PASSES[name].run(after)) == str(after), f"{name} is not idempotent"
    return after


# ----------------------------------------------------------------------------- simplification passes

def test_dce_drops_unused_nodes():
    x = rand(4, 5)

    def f(x):
        mlc.exp(x)            # computed, never used
        return mlc.relu(x)

    g = mlc.trace(f, x)
    assert op_names(g) == ["exp", "relu"]
    assert op_names(check_pass("dce", g, [x])) == ["relu"]


def test_cse_merges_identical_nodes_and_constants():
    x = rand(4, 5)
    w = rand(5, 3)

    def f(x):
        a = mlc.tanh(x) @ w
        b = mlc.tanh(x) @ w    # the same op on the same input, and an identical constant
        return a + b

    g = mlc.trace(f, x)
    assert op_names(g) == ["tanh", "matmul", "tanh", "matmul", "add"]
    after = check_pass("dce", check_pass("cse", g, [x]), [x])
    assert op_names(after) == ["tanh", "matmul", "add"]
    assert sum(n.op == "constant" for n in after.nodes) == 1
    import re
    assert re.search(r"= add\((%\d+), \1\)", body(after)[-1])


def test_constant_folding_evaluates_and_respects_the_size_cap():
    x = rand(3, 64)
    x2 = rand(3, 256)
    small = rand(64, 8)
    big = rand(256, 256)     # 256 KiB: above the 64 KiB cap

    def f(x, x2):
        y = x @ mlc.transpose(mlc.exp(small), axes=(0, 1))     # exp of a small constant: folded
        z = x2 @ big + x2 @ mlc.transpose(big)                   # big is read twice: its transpose is not folded
        return y, z

    g = mlc.trace(f, x, x2)
    after = check_pass("fold_constants", g, [x, x2], atol=1e-4)   # sums of 256 products: BLAS orders them by host
    assert "exp" not in op_names(after)
    assert op_names(after).count("transpose") == 1
    # a big constant with one reader is folded: the result replaces it
    g2 = mlc.trace(lambda x: x @ mlc.transpose(big), rand(3, 256))
    after2 = check_pass("fold_constants", g2, [rand(3, 256)], atol=1e-4)
    assert op_names(after2) == ["matmul"]
    assert sum(n.attrs["value"].nbytes for n in after2.nodes if n.op == "constant") == big.nbytes


def test_simplify_removes_identities_and_merges_chains():
    x = rand(2, 3, 4)

    def f(x):
        a = (x + 0.0) * 1.0 / 1.0 - 0.0
        b = mlc.transpose(mlc.transpose(a, axes=(1, 2, 0)), axes=(2, 0, 1))   # back to the identity
        c = mlc.reshape(mlc.reshape(b, (6, 4)), (24,))
        d = mlc.transpose(mlc.transpose(x, axes=(1, 0, 2)), axes=(0, 2, 1))
        return c, mlc.cast(d, mlc.float32)

    g = mlc.trace(f, x)
    after = check_pass("simplify", g, [x])
    assert body(after) == ["%0 = reshape(%x) {shape=[24]} : f32[24]",
                           "%1 = transpose(%x) {axes=[1, 2, 0]} : f32[3,4,2]"]


def _conv_bn_graph(with_bias: bool):
    b = GraphBuilder("convbn", ops.infer)
    x = b.input("x", mlc.TensorType((1, 3, 8, 8), mlc.float32))
    w = b.constant(rand(4, 3, 3, 3))
    y = simplify.emit(b, "conv", [x, w], pads=[1, 1, 1, 1])
    if with_bias:
        y = simplify.emit(b, "add", [y, b.constant(rand(4, 1, 1))])
    stats = [b.constant(rand(4)), b.constant(rand(4)), b.constant(rand(4)), b.constant(np.abs(rand(4)) + 0.5)]
    z = simplify.emit(b, "batch_norm", [y, *stats], epsilon=1e-5)
    return b.build([simplify.emit(b, "relu", [z])])


@pytest.mark.parametrize("with_bias", [False, True])
def test_batch_norm_folds_into_the_conv(with_bias):
    g = _conv_bn_graph(with_bias)
    x = rand(1, 3, 8, 8)
    after = check_pass("simplify", g, [x], rtol=1e-4, atol=1e-5)
    assert op_names(after) == ["conv", "add", "relu"]


def test_batch_norm_folds_into_a_matmul():
    b = GraphBuilder("mmbn", ops.infer)
    x = b.input("x", mlc.TensorType((5, 6), mlc.float32))
    y = simplify.emit(b, "matmul", [x, b.constant(rand(6, 4))])
    stats = [b.constant(rand(4)), b.constant(rand(4)), b.constant(rand(4)), b.constant(np.abs(rand(4)) + 0.5)]
    g = b.build([simplify.emit(b, "batch_norm", [y, *stats], epsilon=1e-3)])
    after = check_pass("simplify", g, [rand(5, 6)], rtol=1e-4, atol=1e-5)
    assert op_names(after) == ["matmul", "add"]


def test_batch_norm_stays_when_the_conv_output_has_another_reader():
    b = GraphBuilder("shared", ops.infer)
    x = b.input("x", mlc.TensorType((1, 3, 8, 8), mlc.float32))
    y = simplify.emit(b, "conv", [x, b.constant(rand(4, 3, 1, 1))])
    stats = [b.constant(rand(4)), b.constant(rand(4)), b.constant(rand(4)), b.constant(np.abs(rand(4)) + 0.5)]
    g = b.build([simplify.emit(b, "batch_norm", [y, *stats], epsilon=1e-5), y])
    assert "batch_norm" in op_names(check_pass("simplify", g, [rand(1, 3, 8, 8)]))


def test_infer_types_recomputes_result_types():
    x = rand(3, 4)
    g = mlc.trace(lambda x: mlc.exp(x).sum(axis=0), x)
    assert str(check_pass("infer_types", g, [x])) == str(g)


# ----------------------------------------------------------------------------- fusion

def _mlp(x, w1, b1, w2):
    h = mlc.relu(x @ w1 + b1)
    return mlc.softmax(h @ w2, axis=-1)


def test_fusion_groups_epilogues_and_prints_kernels():
    args = (rand(8, 16), rand(16, 32), rand(32), rand(32, 4))
    fused = fuse(mlc.trace(_mlp, *args))
    assert [[n.op for n in g] for g in fused.groups] == [["matmul", "add", "relu"], ["matmul"], ["softmax"]]
    text = str(fused)
    assert "  kernel @matmul_add_relu_0 {\n    %0 = matmul(%x, %w1)" in text
    assert len(unfused(mlc.trace(_mlp, *args)).groups) == 5


def test_fusion_does_not_create_cycles():
    # y = exp(x) feeds both a reduction and, through it, an add back with exp(x):
    # exp, add can share a kernel only if the sum is computed before it -- it is not.
    x = rand(6, 8)

    def f(x):
        e = mlc.exp(x)
        s = mlc.sum(e, axis=1, keepdims=True)
        return e / s + mlc.tanh(e)

    g = mlc.trace(f, x)
    fused = fuse(g)
    pos = {id(n): k for k, grp in enumerate(fused.groups) for n in grp}
    for k, grp in enumerate(fused.groups):
        for n in grp:
            for v in n.inputs:
                if v.producer is not None and id(v.producer) in pos:
                    assert pos[id(v.producer)] <= k, "a kernel reads a value computed by a later kernel"
    np.testing.assert_allclose(mlc.compile(g)(x), ops.run_reference(g, x)[0], rtol=1e-5)


def test_prologue_is_inlined_into_a_reduction_not_recomputed_in_a_matmul():
    x, w = rand(16, 32), rand(32, 24)

    def f(x, w):
        return mlc.sum(mlc.exp(x), axis=1), mlc.tanh(x) @ w

    exe = mlc.compile(f, x, w)
    tensor = exe.ir("tensor")
    # the sum reads exp(x) once per element: inlined into its body
    assert "kernel @exp_sum_0(A: f32[16,32]) -> f32[16] {\n  out[i] = sum[k < 32] exp(A[i, k])" in tensor
    # the matmul reads tanh(x) 24 times per element: tanh is computed once, by its own kernel
    assert "kernel @tanh_1(" in tensor and "out[i, j] = sum[k < 32] A[i, k] * B[k, j]" in tensor
    s, m = exe(x, w)
    np.testing.assert_allclose(s, np.exp(x).sum(axis=1), rtol=1e-5)
    np.testing.assert_allclose(m, np.tanh(x) @ w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k", [64, 600])     # 600: the reduction is cut into cache blocks
def test_epilogue_applied_to_accumulators_matches_numpy(k):
    x, w, b, r = rand(60, k), rand(k, 40), rand(40), rand(60, 40)

    def f(x, w, b, r):
        return mlc.tanh(x @ w + b) + r

    exe = mlc.compile(f, x, w, b, r)
    assert exe.kernel_count == 1
    loop = exe.ir("loop")
    assert "tanh(acc[" in loop
    np.testing.assert_allclose(exe(x, w, b, r), np.tanh(x @ w + b) + r, rtol=2e-4, atol=2e-5)


def test_opt_levels_give_the_same_numbers_and_fewer_kernels():
    args = (rand(8, 16), rand(16, 32), rand(32), rand(32, 4))
    results, kernels = [], []
    for level in PIPELINES:
        exe = mlc.compile(_mlp, *args, opt_level=level)
        results.append(exe(*args))
        kernels.append(exe.kernel_count)
    assert kernels == [5, 5, 3, 3]
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], rtol=1e-6)
    with pytest.raises(ValueError, match="optimization level"):
        mlc.compile(_mlp, *args, opt_level=7)


# ----------------------------------------------------------------------------- memory

def test_in_place_reuse_and_memory_report():
    x = rand(64, 256)

    def chain(x):
        a = mlc.exp(x)
        b = mlc.sum(a, axis=1, keepdims=True)     # a reduction between elementwise kernels
        c = mlc.tanh(a - b)
        return mlc.sigmoid(c) * 2.0

    exe = mlc.compile(chain, x, opt_level=0)
    assert exe.stats["in_place"] >= 1
    np.testing.assert_allclose(exe(x), ops.run_reference(mlc.trace(chain, x), x)[0], rtol=1e-5)
    report = exe.memory_report()
    assert "workspace:" in report and "naive sum:" in report and "in place:" in report
    assert exe.workspace_bytes < exe.stats["intermediate_bytes"]
    assert "in place: " in exe.ir("loop")


def test_in_place_is_refused_where_the_output_reads_other_elements():
    x = rand(32, 32)
    # the transpose reads element (j, i) to write (i, j): it must not overwrite its input
    exe = mlc.compile(lambda x: mlc.transpose(mlc.exp(x)) + 1.0, x, opt_level=0)
    np.testing.assert_allclose(exe(x), np.exp(x).T + 1.0, rtol=1e-6)
    assert "in place" not in exe.ir("loop").split("func @transpose")[1].split("func @")[0]


# ----------------------------------------------------------------------------- the pass manager

def test_verifier_after_each_pass_names_the_broken_pass(monkeypatch):
    def broken(graph):
        g = graph.copy()
        g.outputs = [g.inputs[0]] * 2 + g.outputs   # wrong number of results is fine; a bad node type is not
        n = next(n for n in g.nodes if n.op == "exp")
        n.outputs[0].type = mlc.TensorType((99,), mlc.float32)
        return g

    monkeypatch.setitem(PASSES, "broken", Pass("broken", broken, "a pass that corrupts types"))
    monkeypatch.setitem(PIPELINES, 1, ["broken"])
    x = rand(3)
    with pytest.raises(RuntimeError, match="pass broken produced an invalid graph: .*exp"):
        PassManager(1, verify=True).run(mlc.trace(lambda x: mlc.exp(x), x))


def test_dumps_every_stage_in_order(tmp_path):
    args = (rand(8, 16), rand(16, 32), rand(32), rand(32, 4))
    pm = PassManager(2, dump_dir=tmp_path, time_passes=True)
    mlc.compile(_mlp, *args, pm=pm)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["00-input.graph.txt", "01-infer_types.graph.txt", "02-fold_constants.graph.txt",
                     "03-simplify.graph.txt", "04-cse.graph.txt", "05-hoist_loop_invariants.graph.txt",
                     "06-dce.graph.txt", "07-conv_layout.graph.txt",
                     "08-fuse.graph.txt", "09-lower.tensor.txt", "10-inline.tensor.txt",
                     "11-simplify_indices.tensor.txt", "12-reindex_reductions.tensor.txt", "13-schedule.loop.txt",
                     "14-partition.loop.txt", "15-lower_accumulate.loop.txt", "16-simplify_loops.loop.txt",
                     "17-plan.memory.txt", "18-codegen.llvm.txt"]
    assert "kernel @matmul_add_relu_0" in (tmp_path / "08-fuse.graph.txt").read_text()
    assert "define void @\"mlc_entry\"" in (tmp_path / "18-codegen.llvm.txt").read_text()
    report = pm.timing_report()
    for name in ("fold_constants", "fuse", "lower", "schedule", "codegen", "total"):
        assert name in report


def test_jit_dumps_through_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLC_DUMP_IR", str(tmp_path))
    f = mlc.jit(lambda x: mlc.exp(x) + 1.0)
    f(rand(4))
    f(rand(5))           # a second specialization gets its own folder
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 2 and all((tmp_path / d / "00-input.graph.txt").exists() for d in folders)


def test_cli_compile_reports_kernels_and_times_passes(tmp_path):
    from mlc.cli import main
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["compile", "mlp", "--time-passes", "--dump-ir", str(tmp_path / "ir")]) == 0
    text = out.getvalue()
    assert "5 ops -> 5 after graph passes -> 3 kernels" in text
    assert "fold_constants" in text and "workspace:" in text
    assert (tmp_path / "ir" / "08-fuse.graph.txt").exists()
    with pytest.raises(SystemExit, match="neither an .onnx file nor a bundled example"):
        main(["compile", "nosuchmodel"])


def test_default_level_verifies_under_tests():
    assert os.environ.get("MLC_VERIFY") == "1" and PassManager().verify


# ----------------------------------------------------------------------------- layout selection

@pytest.mark.parametrize("xs, ws, attrs, matrix", [
    ((1, 8, 7, 7), (16, 8, 3, 3), {"pads": [1, 1, 1, 1]}, True),                 # narrow rows
    ((2, 8, 9, 9), (6, 8, 3, 2), {"strides": [2, 1], "pads": [1, 0, 0, 1], "dilations": [1, 2]}, True),
    ((1, 16, 20, 20), (8, 16, 1, 1), {}, True),                                  # pointwise
    ((1, 4, 20, 20), (8, 4, 3, 3), {"pads": [1, 1, 1, 1]}, False),               # wide rows stay direct
    ((1, 8, 7, 7), (8, 2, 3, 3), {"pads": [1, 1, 1, 1], "group": 4}, True),      # grouped 3x3, narrow: batched
    ((1, 8, 20, 20), (8, 2, 3, 3), {"pads": [1, 1, 1, 1], "group": 4}, False),   # grouped 3x3, wide: direct
    ((2, 12, 7, 5), (8, 3, 1, 1), {"group": 4}, True),                           # grouped 1x1: batched matmul
    ((1, 8, 6, 6), (8, 1, 1, 1), {"group": 8}, False),                           # depthwise 1x1 stays direct
])
def test_conv_layout_moves_narrow_and_pointwise_convs_to_matrix_form(xs, ws, attrs, matrix):
    x, w = rand(*xs), rand(*ws)
    g = mlc.trace(lambda x: mlc.relu(mlc.conv(x, w, **attrs)), x)
    after = check_pass("conv_layout", g, [x], rtol=1e-4, atol=1e-4)
    assert ("conv" not in op_names(after)) == matrix
    if matrix:
        assert "matmul" in op_names(after) and op_names(after)[-2:] == ["reshape", "relu"]
    exe = mlc.compile(g)
    np.testing.assert_allclose(exe(x), ops.run_reference(g, x)[0], rtol=1e-4, atol=1e-4)


def test_transformer_block_at_every_level_matches_numpy():
    from mlc.examples import transformer_block, transformer_inputs, transformer_numpy
    args = transformer_inputs(seq=16, hidden=64, heads=4, ffn=128)
    want = transformer_numpy(*args, heads=4)
    kernels = []
    for level in (0, 2):
        exe = mlc.compile(lambda *a: transformer_block(*a, heads=4), *args, opt_level=level)
        np.testing.assert_allclose(exe(*args), want, rtol=1e-4, atol=1e-4)
        kernels.append(exe.kernel_count)
    assert kernels[1] < kernels[0] // 2


def test_cli_inspect_prints_kernels_and_draws_them(tmp_path, monkeypatch):
    import contextlib
    import io
    import mlc.viz
    from mlc.cli import main
    monkeypatch.setattr(mlc.viz.shutil, "which", lambda name: None)     # as on a machine without Graphviz
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["inspect", "mlp"]) == 0
        assert main(["inspect", "mlp", "-O0", "--graph", str(tmp_path / "g.svg")]) == 0
    text = out.getvalue()
    assert "5 ops -> 3 kernels" in text and "kernel @matmul_add_relu_0 {" in text
    assert "5 ops -> 5 kernels" in text and "dot -Tsvg" in text
    assert (tmp_path / "g.dot").read_text().startswith("digraph")


def test_fold_never_expands_a_broadcast_into_a_big_constant():
    from mlc.passes.simplify import fold_constants
    g = mlc.trace(lambda x: x * mlc.broadcast_to(np.float32(2.0), (256, 256)), np.ones((256, 256), np.float32))
    folded = fold_constants(g)
    assert any(n.op == "broadcast_to" for n in folded.nodes)
    assert all(n.attrs["value"].nbytes <= 4 for n in folded.nodes if n.op == "constant")
