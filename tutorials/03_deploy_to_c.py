"""Tutorial 3: compile an ONNX model ahead of time into a shared library and run it
from a C program, with no Python at run time.

    python tutorials/03_deploy_to_c.py [--keep DIR]

What it does, as you would in a shell:

    mlc compile model.onnx -o model.so         # model.so (code + weights) and model.h
    mlc inspect model.so                        # signature, target, sizes; verifies the file
    cc -O2 run_model.c -I. model.so -Wl,-rpath,'$ORIGIN' -o run_model
    ./run_model input.bin --output output.bin

then checks the C program's outputs against mlc.load (the same library from Python)
and numpy, exports a second library with its weights in a side file, and shows what
happens to a damaged library: it is refused, never run.
"""
import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import mlc

HERE = os.path.dirname(os.path.abspath(__file__))
C_EXAMPLE = os.path.join(HERE, "c_api", "run_model.c")


def make_onnx_model(path: str) -> dict:
    """A small classifier: 64 features -> 32 (ReLU) -> 10 classes (softmax)."""
    rng = np.random.default_rng(0)
    w = {"W1": rng.standard_normal((64, 32)).astype(np.float32) * 0.2, "b1": np.full(32, 0.1, np.float32),
         "W2": rng.standard_normal((32, 10)).astype(np.float32) * 0.2, "b2": np.zeros(10, np.float32)}
    nodes = [helper.make_node("Gemm", ["image", "W1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["a"]),
             helper.make_node("Gemm", ["a", "W2", "b2"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "classifier",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(v, k) for k, v in w.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return w


def numpy_reference(x, w):
    h = np.maximum(x @ w["W1"] + w["b1"], 0)
    z = h @ w["W2"] + w["b2"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sh(*cmd, cwd, check=True) -> subprocess.CompletedProcess:
    """Run a command as the shell would, printing it and its output."""
    shown = [os.path.basename(c) if c == sys.executable else c for c in cmd]
    print("$ " + " ".join(shlex.quote(c) for c in shown))
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    out = (r.stdout + r.stderr).rstrip()
    if out:
        print("  " + out.replace("\n", "\n  "))
    if check and r.returncode != 0:
        raise SystemExit(f"command failed with exit code {r.returncode}")
    return r


def main(d: str) -> None:
    mlc_cli = [sys.executable, "-m", "mlc.cli"]
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise SystemExit("this tutorial needs a C compiler (cc, gcc or clang)")
    w = make_onnx_model(os.path.join(d, "model.onnx"))
    print(f"wrote {d}/model.onnx\n")

    # 1. compile ahead of time: model.so + model.h
    sh(*mlc_cli, "compile", "model.onnx", "-o", "model.so", cwd=d)
    sh(*mlc_cli, "inspect", "model.so", cwd=d)

    # 2. a C program linked against the library with the generated header
    shutil.copy(C_EXAMPLE, d)
    sh(cc, "-O2", "-Wall", "run_model.c", "-I.", "model.so", "-Wl,-rpath,$ORIGIN", "-lpthread", "-o", "run_model",
       cwd=d)
    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    x.tofile(os.path.join(d, "input.bin"))
    sh("./run_model", "input.bin", "--output", "output.bin", "--repeat", "1000", "--threads", "4", cwd=d)
    from_c = np.fromfile(os.path.join(d, "output.bin"), np.float32).reshape(1, 10)

    # 3. the same library from Python: mlc.load checks arguments like a compiled function
    model = mlc.load(os.path.join(d, "model.so"))
    print(f"\nmlc.load: {model}")
    from_python = model(x)
    print(f"C matches Python bit for bit: {np.array_equal(from_c, from_python)}")
    print(f"matches numpy: {np.allclose(from_c, numpy_reference(x, w), rtol=1e-5, atol=1e-6)}")
    try:
        model(x.astype(np.float64))
    except TypeError as e:
        print(f"wrong dtype from Python: TypeError: {e}")

    # 4. weights in a side file, verified when the model is created
    print()
    sh(*mlc_cli, "compile", "model.onnx", "-o", "model_ext.so", "--params", "external", cwd=d)
    sh(cc, "-O2", "run_model.c", "-DMODEL_HEADER=\"model_ext.h\"", "-I.", "model_ext.so", "-Wl,-rpath,$ORIGIN",
       "-lpthread", "-o", "run_model_ext", cwd=d)
    sh("./run_model_ext", "input.bin", cwd=d)
    with open(os.path.join(d, "model_ext.params"), "r+b") as f:   # truncate the weights file
        f.truncate(os.path.getsize(f.name) - 100)
    r = sh("./run_model_ext", "input.bin", cwd=d, check=False)
    print(f"truncated weights refused: {r.returncode != 0}")

    # 5. a damaged library is refused, from C and from Python
    print()
    lib = os.path.join(d, "model.so")
    shutil.copy(lib, lib + ".good")
    with open(lib, "r+b") as f:   # flip one bit in the middle of the code and data
        f.seek(os.path.getsize(lib) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x10]))
    r = sh("./run_model", "input.bin", cwd=d, check=False)
    print(f"damaged library refused by C: {r.returncode != 0}")
    try:
        mlc.load(lib)
    except mlc.LibraryError as e:
        print(f"damaged library refused by mlc.load: {e}")
    shutil.move(lib + ".good", lib)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep the files (default: a temporary folder)")
    args = p.parse_args()
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        main(os.path.abspath(args.keep))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
