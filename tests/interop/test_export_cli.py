"""`mlc export MODEL --format onnx|mlir|mlir-loop|relax -o FILE`: each MODEL form (an
.onnx file, a module:function entry point, a bundled example), each format checked by
the field's own tools (onnx.checker and ONNX Runtime; TVMScript parsed back and built
by TVM; MLIR text parsed by xDSL)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

import mlc
from mlc import ops
from mlc.cli import main
from mlc.examples import EXAMPLES

R = np.random.default_rng(0)


def example_graph(name):
    fn, make_inputs = EXAMPLES[name]
    args = make_inputs()
    return mlc.trace(fn, *args), args


def check_onnx_file(path, graph, args):
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime runs the exported model")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {v.name: np.asarray(a) for v, a in zip(graph.inputs, args)}
    for got, want in zip(sess.run(None, feeds), ops.run_reference(graph, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_export_a_bundled_example_as_onnx(name, tmp_path, capsys):
    out = tmp_path / f"{name}.onnx"
    assert main(["export", name, "--format", "onnx", "-o", str(out)]) == 0
    assert f"-> {out} (onnx)" in capsys.readouterr().out
    check_onnx_file(out, *example_graph(name))


ENTRY = """
import numpy as np
import mlc

def model():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    def f(x):
        y = mlc.relu(mlc.conv(x, w, pads=(1, 1, 1, 1)))
        return mlc.softmax(mlc.global_avg_pool(y).reshape(2, 4), axis=-1)
    return f, (rng.standard_normal((2, 3, 6, 6)).astype(np.float32),)
"""


def entry_point(tmp_path, monkeypatch):
    (tmp_path / "my_net.py").write_text(textwrap.dedent(ENTRY))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    sys.modules.pop("my_net", None)
    fn, args = importlib.import_module("my_net").model()
    return mlc.trace(fn, *args), args


def test_export_an_entry_point_as_onnx_and_relax(tmp_path, monkeypatch):
    graph, args = entry_point(tmp_path, monkeypatch)
    assert main(["export", "my_net:model", "--format", "onnx", "-o", "net.onnx"]) == 0
    check_onnx_file(tmp_path / "net.onnx", graph, args)
    tvm = pytest.importorskip("tvm", reason="--format relax needs apache-tvm (pip install 'mlc[tvm]')")
    from tvm import relax
    assert main(["export", "my_net:model", "--format", "relax", "-o", "net.py"]) == 0
    text = (tmp_path / "net.py").read_text()
    assert "@I.ir_module" in text and "R.nn.conv2d" in text and "metadata = tvm.ir.load_json(" in text
    mod = tvm.script.from_source(text)   # the TVMScript parses back, with its constants
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(args[0])).numpy()
    np.testing.assert_allclose(got, ops.run_reference(graph, *args)[0], rtol=1e-5, atol=1e-6)


def test_export_an_onnx_file_as_relax_and_back_to_onnx(tmp_path):
    tvm = pytest.importorskip("tvm", reason="--format relax needs apache-tvm (pip install 'mlc[tvm]')")
    from tvm import relax
    from mlc.frontend.onnx import from_onnx
    src = tmp_path / "mlp.onnx"
    graph, args = example_graph("mlp")
    assert main(["export", "mlp", "--format", "onnx", "-o", str(src)]) == 0
    assert main(["export", str(src), "--format", "relax", "-o", str(tmp_path / "mlp.relax.py")]) == 0
    mod = tvm.script.from_source((tmp_path / "mlp.relax.py").read_text())
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(np.asarray(a)) for a in args])
    out = out.numpy() if hasattr(out, "numpy") else out[0].numpy()
    np.testing.assert_allclose(out, ops.run_reference(from_onnx(str(src)), *args)[0], rtol=1e-5, atol=1e-6)
    assert main(["export", str(src), "--format", "onnx", "-o", str(tmp_path / "again.onnx")]) == 0
    check_onnx_file(tmp_path / "again.onnx", from_onnx(str(src)), args)


@pytest.mark.parametrize("fmt", ["mlir", "mlir-loop"])
def test_export_as_mlir(fmt, tmp_path, capsys):
    out = tmp_path / "mlp.mlir"
    try:
        import mlc.interop.mlir  # noqa: F401
        import xdsl  # noqa: F401
    except ImportError:
        with pytest.raises(SystemExit, match=f"mlc export --format {fmt}: .*mlir extra"):
            main(["export", "mlp", "--format", fmt, "-o", str(out)])
        return
    assert main(["export", "mlp", "--format", fmt, "-o", str(out)]) == 0
    text = out.read_text()
    assert "func.func" in text
    assert ("linalg." in text) if fmt == "mlir" else ("memref" in text)
    from xdsl.context import Context
    from xdsl.dialects import get_all_dialects
    from xdsl.parser import Parser
    ctx = Context()   # every upstream dialect xDSL knows, none unregistered
    for dialect, factory in get_all_dialects().items():
        ctx.register_dialect(dialect, factory)
    Parser(ctx, text).parse_module().verify()


def test_export_refusals_and_bad_arguments_end_the_command_with_one_line(tmp_path, monkeypatch):
    (tmp_path / "odd.py").write_text("import numpy as np, mlc\n"
                                     "def model():\n"
                                     "    return (lambda x: mlc.top_k(x, k=2)[0]), (np.ones((2, 5), np.float32),)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit, match=r"mlc export --format onnx: op top_k has no ONNX export yet"):
        main(["export", "odd:model", "--format", "onnx", "-o", "odd.onnx"])
    if _has("tvm"):
        with pytest.raises(SystemExit, match=r"mlc export --format relax: @.* has ops with no Relax export: top_k"):
            main(["export", "odd:model", "--format", "relax", "-o", "odd.relax"])
    assert not os.path.exists("odd.onnx") and not os.path.exists("odd.relax")
    with pytest.raises(SystemExit, match="neither an .onnx file nor a bundled example"):
        main(["export", "nothing", "--format", "onnx", "-o", "x.onnx"])
    with pytest.raises(SystemExit):   # argparse: an unknown format
        main(["export", "mlp", "--format", "tflite", "-o", "x"])


def _has(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def test_the_mlc_command_exports(tmp_path):
    out = tmp_path / "gelu.onnx"
    r = subprocess.run([sys.executable, "-m", "mlc.cli", "export", "gelu", "--format", "onnx", "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    check_onnx_file(out, *example_graph("gelu"))


def test_a_missing_extra_ends_the_command_with_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tvm", None)   # as if apache-tvm were not installed
    with pytest.raises(SystemExit, match=r"mlc export --format relax: .*needs TVM: pip install 'mlc\[tvm\]'"):
        main(["export", "mlp", "--format", "relax", "-o", str(tmp_path / "m.py")])
    monkeypatch.setitem(sys.modules, "mlc.interop.mlir", None)   # as if the MLIR exporter were missing
    for fmt in ("mlir", "mlir-loop"):
        with pytest.raises(SystemExit, match=rf"mlc export --format {fmt}: the MLIR exporter is unavailable .*"
                                             r"needs the mlir extra: pip install 'mlc\[mlir\]'"):
            main(["export", "mlp", "--format", fmt, "-o", str(tmp_path / "m.mlir")])
    assert not list(tmp_path.iterdir())
