"""mlc.viz: the DOT picture of a fused graph, and writing it to a file."""
import os
import re
import shutil
import sys

import numpy as np
import pytest

import mlc
import mlc.viz
from mlc.ir.graph import GraphBuilder
from mlc.ir.types import TensorType
from mlc.passes.fuse import FusedGraph, fuse, unfused
from mlc.viz import to_dot, write_graph

# A DOT double-quoted string: anything but a quote or backslash, or a backslash escape.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_HTML_LABEL = re.compile(r"label=<.*>\];$", re.M)
_DECL = re.compile(r"^\s*(\w+) \[", re.M)
_EDGE = re.compile(r"^\s*(\w+) -> (\w+) \[(.*)\];$", re.M)
_CLUSTER = re.compile(r"subgraph (cluster_\d+) \{\n\s*label=\"([^\"]*)\"(.*?)\n\s*\}", re.S)


def _f(x, w, b):
    return mlc.relu(x @ w + b).sum(axis=1)


@pytest.fixture
def graph():
    rng = np.random.default_rng(0)
    return mlc.trace(_f, rng.standard_normal((4, 8), dtype=np.float32),
                     rng.standard_normal((8, 16), dtype=np.float32),
                     rng.standard_normal((16,), dtype=np.float32))


def _ops_of(text: str) -> dict[str, str]:
    """Node id -> op name (the bold first line of an op box)."""
    return dict(re.findall(r"^\s*(n\d+) \[.*?label=<<B>(\w+)</B>", text, re.M))


def _check_sane(text: str) -> None:
    """Quoted strings all close, braces balance outside strings, and every edge joins
    declared nodes."""
    assert text.startswith("digraph G {") and text.rstrip().endswith("}")
    bare = _STRING.sub('""', _HTML_LABEL.sub("];", text))
    assert bare.count('"') % 2 == 0
    assert bare.count("{") == bare.count("}")
    depth = 0
    for ch in bare:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    declared = set(_DECL.findall(text)) - {"node", "edge"}
    edges = _EDGE.findall(text)
    assert edges
    for a, b, _ in edges:
        assert a in declared and b in declared, (a, b)


def test_fused_graph_has_one_cluster_with_the_kernel(graph):
    fused = fuse(graph)
    text = to_dot(fused)
    _check_sane(text)
    ops = _ops_of(text)
    assert sorted(ops.values()) == ["add", "matmul", "relu", "sum"]

    clusters = _CLUSTER.findall(text)
    assert len(clusters) == 1
    name, label, body = clusters[0]
    assert label == fused.kernel_names()[0] == "matmul_add_relu_0"
    assert "fillcolor" in body
    in_cluster = set(re.findall(r"^\s*(n\d+) \[", body, re.M))
    assert sorted(ops[n] for n in in_cluster) == ["add", "matmul", "relu"]

    by_ops = {(ops.get(a, a), ops.get(b, b)): attrs for a, b, attrs in _EDGE.findall(text)}
    # in-kernel values are dashed, the values between kernels solid; all labelled with type and size
    for pair in [("matmul", "add"), ("add", "relu")]:
        assert "style=dashed" in by_ops[pair]
        assert 'label="f32[4,16] 256 B"' in by_ops[pair]
    assert "dashed" not in by_ops[("relu", "sum")]
    assert 'label="f32[4,16] 256 B"' in by_ops[("relu", "sum")]
    assert by_ops[("in0", "matmul")] == 'label="f32[4,8] 128 B"'
    assert by_ops[("in1", "matmul")] == 'label="f32[8,16] 512 B"'
    assert by_ops[("in2", "add")] == 'label="f32[16] 64 B"'
    assert by_ops[("sum", "out0")] == 'label="f32[4] 16 B"'

    # inputs and outputs are ellipses with name and type
    assert re.search(r'in0 \[shape=ellipse.*label="x\\nf32\[4,8\]"', text)
    assert re.search(r'in2 \[shape=ellipse.*label="b\\nf32\[16\]"', text)
    assert re.search(r'out0 \[shape=ellipse.*label="output 0\\nf32\[4\]"', text)


def test_unfused_graph_has_no_clusters(graph):
    text = to_dot(unfused(graph))
    _check_sane(text)
    assert "subgraph" not in text and "cluster" not in text
    assert "dashed" not in text                # every value goes through memory
    assert len(_ops_of(text)) == 4


def test_output_is_deterministic(graph):
    assert to_dot(fuse(graph)) == to_dot(fuse(graph))
    assert re.findall(r"^\s*(n\d+) \[", to_dot(fuse(graph)), re.M) == ["n0", "n1", "n2", "n3"]


def test_constants_are_listed_in_the_op_label_not_drawn():
    b = GraphBuilder("consts", infer=mlc.ops.infer)
    x = b.input("x", TensorType((2, 3), "f32"))
    w = b.constant(np.ones((3, 5), np.float32))
    half = b.constant(np.float32(0.5))
    (y,) = b.node("matmul", [x, w])
    (z,) = b.node("mul", [y, half])
    text = to_dot(fuse(b.build([z])))
    _check_sane(text)
    assert "constant" not in text
    assert len(_ops_of(text)) == 2
    assert "b: f32[3,5]" in text                # matmul's second operand is named b
    assert "b: f32[] = 0.5" in text             # a scalar constant shows its value
    assert not any("constant" in a + b for a, b, _ in _EDGE.findall(text))


def test_conv_label_shows_kernel_and_strides():
    b = GraphBuilder("c", infer=mlc.ops.infer)
    x = b.input("x", TensorType((1, 3, 8, 8), "f32"))
    w = b.constant(np.ones((4, 3, 3, 3), np.float32))
    (y,) = b.node("conv", [x, w], {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (0, 0, 0, 0),
                                   "dilations": (1, 1), "group": 1, "auto_pad": "NOTSET"})
    text = to_dot(unfused(b.build([y])))
    assert "kernel 3x3  stride 2x2" in text
    assert "w: f32[4,3,3,3]" in text


def test_labels_are_escaped():
    b = GraphBuilder("g", infer=mlc.ops.infer)
    x = b.input('say "hi"\\', TensorType((2,), "f32"))   # not a valid IR name, but must not break DOT
    (y,) = b.node("relu", [x])
    text = to_dot(unfused(b.build([y])), title='a "quoted" \\ title <&>')
    _check_sane(text)
    assert 'label="a \\"quoted\\" \\\\ title <&>"' in text
    assert 'label="say \\"hi\\"\\\\\\nf32[2]"' in text


def test_write_dot(graph, tmp_path):
    path = tmp_path / "g.dot"
    written, message = write_graph(fuse(graph), str(path), title="t")
    assert written == str(path)
    assert path.read_text() == to_dot(fuse(graph), title="t")
    assert str(path) in message and "\n" not in message


def test_svg_without_graphviz_falls_back_to_dot(graph, tmp_path, monkeypatch):
    monkeypatch.setattr(mlc.viz.shutil, "which", lambda name: None)
    written, message = write_graph(fuse(graph), str(tmp_path / "g.svg"))
    assert written == str(tmp_path / "g.dot")
    assert not (tmp_path / "g.svg").exists()
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    assert "Graphviz" in message and "dot -Tsvg" in message and "g.dot" in message
    assert "\n" not in message


def test_bad_suffix_raises(graph, tmp_path):
    with pytest.raises(ValueError, match=r"\.dot, \.svg or \.png"):
        write_graph(fuse(graph), str(tmp_path / "g.pdf"))
    with pytest.raises(ValueError):
        write_graph(fuse(graph), str(tmp_path / "noext"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="uses a shell script as a stand-in for dot")
def test_render_calls_dot_and_reports_its_failure(graph, tmp_path, monkeypatch):
    """A stand-in ``dot``: writes its stdin to the -o file, or fails."""
    fake = tmp_path / "fake_dot"
    fake.write_text('#!/bin/sh\n[ "$1" = "-Tpng" ] || { echo "bad format $1" >&2; exit 3; }\ncat > "$3"\n')
    fake.chmod(0o755)
    monkeypatch.setattr(mlc.viz.shutil, "which", lambda name: str(fake))
    written, message = write_graph(fuse(graph), str(tmp_path / "g.png"))
    assert written == str(tmp_path / "g.png")
    assert (tmp_path / "g.png").read_text() == to_dot(fuse(graph))
    with pytest.raises(RuntimeError, match=r"exit status 3.*bad format -Tsvg"):
        write_graph(fuse(graph), str(tmp_path / "g.svg"))


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not installed")
def test_render_svg_with_graphviz(graph, tmp_path):
    written, _ = write_graph(fuse(graph), str(tmp_path / "g.svg"), title='q "x"')
    svg = open(written, encoding="utf-8").read()
    assert svg.startswith("<?xml") or "<svg" in svg
    assert "matmul_add_relu_0" in svg


def test_squeezenet_clusters_match_multi_node_kernels():
    onnx = pytest.importorskip("onnx")
    from mlc.driver import Compiled
    from mlc.frontend.onnx import from_onnx
    from mlc.passes.manager import PassManager
    from mlc.target import Target

    light = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                         "light_squeezenet.onnx")
    if not os.path.exists(light):
        pytest.skip("onnx's light squeezenet model is not installed")
    fused: FusedGraph = Compiled(from_onnx(onnx.load(light)), Target.get("host"), PassManager(2)).fused
    text = to_dot(fused)
    _check_sane(text)
    clusters = _CLUSTER.findall(text)
    multi = [k for k, g in enumerate(fused.groups) if len(g) > 1]
    assert len(clusters) == len(multi) > 0
    assert [label for _, label, _ in clusters] == [fused.kernel_names()[k] for k in multi]
    # one box per op, none for the constants
    assert len(_ops_of(text)) == sum(len(g) for g in fused.groups)
    assert "constant" not in text
