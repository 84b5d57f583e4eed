"""The `mlc` command, run as a user would."""
import os
import subprocess
import sys

import numpy as np
import pytest

import mlc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "mlc.cli", *args], env=env, capture_output=True, text=True)


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"mlc {mlc.__version__}"


def test_ir_prints_every_level():
    r = run("ir", "mlp")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for header in ("graph", "fused", "tensor", "loop", "llvm"):
        assert f";; ===== {header} =====" in out
    assert "graph @mlp(" in out and "kernel @softmax_2(" in out and "func @matmul_add_relu_0(" in out
    assert "define void @\"mlc_entry\"" in out


def test_ir_asm_level_and_bad_input():
    r = run("ir", "gelu", "--level", "asm")
    assert r.returncode == 0 and "mlc_entry:" in r.stdout
    r = run("ir", "nosuch")
    assert r.returncode != 0 and "unknown example 'nosuch'; available: gelu, mlp" in r.stderr
    r = run("ir", "mlp", "--level", "bogus")
    assert r.returncode != 0 and "unknown IR level 'bogus'" in r.stderr


def test_demo_runs_and_checks_against_numpy():
    r = run("demo", "--batch", "8")
    assert r.returncode == 0, r.stderr
    assert "demo OK" in r.stdout and "max relative error vs numpy" in r.stdout


LIGHT = os.path.join(os.path.dirname(__import__("onnx").__file__), "backend", "test", "data", "light")


def _light_input(model_path):
    import numpy as np
    import onnx
    m = onnx.load(model_path)
    produced = {o for n in m.graph.node for o in n.output}
    (vi,) = [vi for vi in m.graph.input if vi.name not in produced and vi.name not in {i.name for i in m.graph.initializer}]
    shape = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
    n = int(np.prod(shape))
    return vi.name, (np.arange(n).reshape(shape) / n).astype(np.float32)   # what ONNX's runner feeds it


def test_run_onnx_model_matches_stored_output(tmp_path):
    import numpy as np
    import onnx
    from onnx import numpy_helper
    model = os.path.join(LIGHT, "light_squeezenet.onnx")
    name, x = _light_input(model)
    np.save(tmp_path / "x.npy", x)
    r = run("run", model, "--input", f"{name}=" + str(tmp_path / "x.npy"), "--output-dir", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "output softmaxout_1: float32[1, 1000, 1, 1]" in r.stdout
    got = np.load(tmp_path / "out" / "softmaxout_1.npy")
    want = numpy_helper.to_array(onnx.load_tensor(os.path.join(LIGHT, "light_squeezenet_output_0.pb")))
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-7)


def test_run_asks_for_inputs_or_random_inputs(tmp_path):
    model = os.path.join(LIGHT, "light_squeezenet.onnx")
    r = run("run", model)
    assert r.returncode != 0
    assert "no data for input(s) data_0: f32[1,3,224,224]; give --input name=file.npy, or --random-inputs" in r.stderr
    r = run("run", model, "--input", "nosuch=" + str(tmp_path / "x.npy"))
    assert r.returncode != 0 and "cannot read input 'nosuch'" in r.stderr


def test_run_reports_unsupported_ops_in_one_message(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    nodes = [helper.make_node("Foo", ["x"], ["a"]), helper.make_node("Bar", ["a"], ["y"])]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, tmp_path / "m.onnx")
    r = run("run", str(tmp_path / "m.onnx"), "--random-inputs")
    assert r.returncode == 1
    assert "2 op type(s) mlc does not support: Bar (domain ai.onnx, opset 17; 1 node), Foo" in r.stderr


def test_symbolic_input_shape_names_the_shape_option(tmp_path):
    import numpy as np
    import onnx
    import pytest
    from onnx import TensorProto, helper

    from mlc.cli import main

    def save(name, dims):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / name)
        return str(tmp_path / name)

    sym = save("sym.onnx", ["N", 3, 224, 224])
    with pytest.raises(SystemExit, match=r"^mlc compile: input 'x' has symbolic dimension 'N'; give a static "
                                         r"shape with --shape x=1,3,224,224$"):
        main(["compile", sym, "-o", str(tmp_path / "m.so")])
    with pytest.raises(SystemExit, match=r"^mlc run: input 'x' has symbolic dimensions 'B', 'T'; give a static "
                                         r"shape with --shape x=1,1,8$"):
        main(["run", save("two.onnx", ["B", "T", 8]), "--random-inputs"])
    with pytest.raises(SystemExit, match=r"input 'x' declares no shape; give a static shape with --shape "
                                         r"x=D0,D1,\.\.\."):
        main(["compile", save("none.onnx", None)])
    with pytest.raises(SystemExit, match=r"^mlc compile: --shape takes NAME=D0,D1,\.\.\. \(sizes >= 0\), got "
                                         r"'x=-1,3'$"):
        main(["compile", sym, "--shape", "x=-1,3"])
    # the suggested option works
    np.save(tmp_path / "x.npy", np.full((1, 3, 2, 2), -1.0, np.float32))
    assert main(["run", sym, "--shape", "x=1,3,2,2", "--input", f"x={tmp_path / 'x.npy'}"]) == 0


def test_run_on_a_cuda_target_emulated_gives_the_cpu_outputs(tmp_path, monkeypatch, capsys):
    from mlc.cli import main
    monkeypatch.setenv("MLC_CUDA_EMULATE", "1")
    model = os.path.join(LIGHT, "light_squeezenet.onnx")
    assert main(["run", model, "--random-inputs", "--output-dir", str(tmp_path / "cpu")]) == 0
    assert main(["run", model, "--target", "cuda", "--random-inputs", "--output-dir", str(tmp_path / "gpu")]) == 0
    assert "compiled for cuda-sm90" in capsys.readouterr().out
    cpu, gpu = (np.load(next((tmp_path / d).glob("*.npy"))) for d in ("cpu", "gpu"))
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-6)
    monkeypatch.delenv("MLC_CUDA_EMULATE")
    from mlc.runtime.cuda import CudaUnavailable, cupy_module
    try:
        cupy_module()
    except CudaUnavailable:
        with pytest.raises(SystemExit, match="mlc run: .*MLC_CUDA_EMULATE=1"):
            main(["run", model, "--target", "cuda-sm90", "--random-inputs"])
