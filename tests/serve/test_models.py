"""Model loading and the model repository: versions, config.json, model libraries,
models mlc serve refuses (with the reason in the index), and TLS on both protocols."""
from __future__ import annotations

import json
import os
import shutil
import ssl
import urllib.error
import urllib.request

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import make_cnn, make_mlp, mlp_ref, reference, start_server, require_serve_libraries

require_serve_libraries()
from mlc.serve.models import LoadError, load_onnx


def get(server, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{server.ports['http']}{path}",
                                 data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _infer_mlp_body(n):
    return {"inputs": [{"name": "x", "shape": [n, 6], "datatype": "FP32", "data": [0.25] * (6 * n)},
                       {"name": "k", "shape": [n, 2], "datatype": "INT64", "data": [1, 2] * n}]}


def test_repository_versions_and_config(tmp_path):
    root = tmp_path / "repo"
    for v in ("1", "2"):
        (root / "mlp" / v).mkdir(parents=True)
        make_mlp(root / "mlp" / v / "model.onnx")
    (root / "cnn" / "3").mkdir(parents=True)
    make_cnn(root / "cnn" / "3" / "model.onnx")
    (root / "cnn" / "config.json").write_text(json.dumps({"max_batch_size": 4}))
    (root / "empty").mkdir()   # no version folder with a model: not a model
    s = start_server(model_repository=str(root))
    try:
        assert get(s, "/v2/health/ready") == (200, {"ready": True})
        assert get(s, "/v2/models/mlp")[1]["versions"] == ["1", "2"]
        assert get(s, "/v2/models/cnn")[1]["versions"] == ["3"]
        index = get(s, "/v2/repository/index", {})[1]
        assert sorted((m["name"], m["version"], m["state"]) for m in index) == [
            ("cnn", "3", "READY"), ("mlp", "1", "READY"), ("mlp", "2", "READY")]
        for path in ("/v2/models/mlp/versions/2/infer", "/v2/models/mlp/infer"):   # no version: the newest
            status, r = get(s, path, _infer_mlp_body(2))
            assert status == 200 and r["model_version"] == "2"
            np.testing.assert_allclose(np.array(r["outputs"][0]["data"]).reshape(2, 5),
                                       mlp_ref(np.full((2, 6), 0.25, np.float32), 0)[0], rtol=1e-5)
        img = np.zeros((5, 3, 4, 4), np.float32)
        status, r = get(s, "/v2/models/cnn/infer", {"inputs": [
            {"name": "image", "shape": [5, 3, 4, 4], "datatype": "FP32", "data": img.ravel().tolist()}]})
        assert status == 400 and "batch dimension 5, expected 1 to 4" in r["error"]
        # a model added to the folder later is loaded on request
        (root / "late" / "1").mkdir(parents=True)
        make_mlp(root / "late" / "1" / "model.onnx")
        assert get(s, "/v2/models/late")[0] == 404
        assert get(s, "/v2/repository/models/late/load", {}) == (200, {})
        assert get(s, "/v2/models/late/ready") == (200, {"name": "late", "ready": True})
    finally:
        s.stop()


def test_a_model_that_cannot_load_keeps_the_server_unready(tmp_path):
    root = tmp_path / "repo"
    (root / "good" / "1").mkdir(parents=True)
    make_mlp(root / "good" / "1" / "model.onnx")
    (root / "bad" / "1").mkdir(parents=True)
    (root / "bad" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    s = start_server(model_repository=str(root))
    try:
        assert get(s, "/v2/health/live") == (200, {"live": True})
        assert get(s, "/v2/health/ready") == (503, {"ready": False})
        assert get(s, "/v2/models/good/ready")[0] == 200
        status, r = get(s, "/v2/models/bad/ready")
        assert status == 404 and "unknown model 'bad'" in r["error"]
        bad = [m for m in get(s, "/v2/repository/index", {})[1] if m["name"] == "bad"]
        assert bad[0]["state"] == "UNAVAILABLE" and "model.onnx" in bad[0]["reason"]
        status, r = get(s, "/v2/repository/models/bad/load", {})
        assert status == 400 and "cannot load model 'bad'" in r["error"]
    finally:
        s.stop()


def test_symbolic_inner_dimension_is_refused(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "L"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "L"])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    p = tmp_path / "seq.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(p))
    with pytest.raises(LoadError, match=r"input 'x' has symbolic dimensions other than the first \(\[None, None\]\)"):
        load_onnx(str(p), "seq", "1")


def test_model_library(tmp_path):
    """A model library (mlc compile -o x.so) is served at its fixed shapes."""
    import mlc
    from mlc.codegen.cross import ToolchainNotFound
    from mlc.frontend.onnx import from_onnx, load_model
    path = make_cnn(tmp_path / "cnn.onnx")
    exe = mlc.compile(from_onnx(load_model(path), input_shapes={"image": [2, 3, 4, 4]}), target="host")
    try:
        exe.export(str(tmp_path / "cnnlib.so"))
    except ToolchainNotFound as e:
        pytest.skip(f"no C compiler to build a model library: {e}")
    s = start_server([str(tmp_path / "cnnlib.so")])
    try:
        status, meta = get(s, "/v2/models/cnnlib")
        assert status == 200 and meta["platform"] == "mlc_library"
        assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [2, 3, 4, 4]}]
        assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [2, 10]}]
        img = np.random.default_rng(9).standard_normal((2, 3, 4, 4)).astype(np.float32)
        status, r = get(s, "/v2/models/cnnlib/infer", {"inputs": [
            {"name": "image", "shape": [2, 3, 4, 4], "datatype": "FP32", "data": img.ravel().tolist()}]})
        assert status == 200
        np.testing.assert_allclose(np.array(r["outputs"][0]["data"], np.float32).reshape(2, 10),
                                   reference(path, image=img)[0], rtol=1e-4, atol=1e-5)
    finally:
        s.stop()


def _self_signed(tmp_path):
    pytest.importorskip("cryptography", reason="the TLS test makes its certificate with cryptography")
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_tls_on_both_protocols(tmp_path):
    tg = pytest.importorskip("tritonclient.grpc", reason="the test talks gRPC with tritonclient[grpc]")
    cert, key = _self_signed(tmp_path)
    s = start_server([make_mlp(tmp_path / "mlp.onnx")], tls_cert=cert, tls_key=key)
    try:
        ctx = ssl.create_default_context(cafile=cert)
        with urllib.request.urlopen(f"https://localhost:{s.ports['http']}/v2/models/mlp", context=ctx,
                                    timeout=60) as r:
            assert json.loads(r.read())["name"] == "mlp"
        with pytest.raises((urllib.error.URLError, ConnectionError)):   # plain HTTP is not served
            urllib.request.urlopen(f"http://localhost:{s.ports['http']}/v2/health/live", timeout=60)
        c = tg.InferenceServerClient(f"localhost:{s.ports['grpc']}", ssl=True, root_certificates=cert)
        assert c.is_server_ready()
        x, k = np.ones((1, 6), np.float32), np.ones((1, 2), np.int64)
        ins = [tg.InferInput("x", [1, 6], "FP32"), tg.InferInput("k", [1, 2], "INT64")]
        ins[0].set_data_from_numpy(x)
        ins[1].set_data_from_numpy(k)
        np.testing.assert_allclose(c.infer("mlp", ins).as_numpy("y"), mlp_ref(x, k)[0], rtol=1e-5)
    finally:
        s.stop()


def test_onnxruntime_backend(tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs onnxruntime")
    m = load_onnx(make_cnn(tmp_path / "cnn.onnx"), "cnn", "1", max_batch=4, backend="onnxruntime")
    assert m.platform == "onnxruntime_onnx" and sorted(m.runners) == [1, 2, 4]
    assert [s.metadata() for s in m.outputs] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    img = np.random.default_rng(4).standard_normal((4, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(m.run([img], 4)[0], reference(tmp_path / "cnn.onnx", image=img)[0], rtol=1e-4,
                               atol=1e-5)


def test_repository_rejects_two_files_with_one_name(tmp_path):
    from mlc.serve.models import Repository
    a = make_mlp(tmp_path / "mlp.onnx")
    os.makedirs(tmp_path / "b")
    b = shutil.copy(a, tmp_path / "b" / "mlp.onnx")
    with pytest.raises(LoadError, match="two models named 'mlp'"):
        Repository([a, str(b)])


def test_names_mlc_sanitizes_are_served_as_the_model_spells_them(tmp_path):
    """ONNX names such as 'data:0' (TensorFlow's exporters) reach the compiled code,
    which holds them sanitized, in the right order."""
    a = helper.make_tensor_value_info("data:0", TensorProto.FLOAT, ["N", 3])
    b = helper.make_tensor_value_info("scale/1", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("out:0", TensorProto.FLOAT, ["N", 3])
    g = helper.make_graph([helper.make_node("Sub", ["scale/1", "data:0"], ["out:0"])], "g", [a, b], [y])
    p = tmp_path / "tf.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(p))
    m = load_onnx(str(p), "tf", "1", max_batch=2)
    assert [s.name for s in m.inputs] == ["data:0", "scale/1"] and m.outputs[0].name == "out:0"
    x, s = np.array([[1, 2, 3]], np.float32), np.array([[10, 20, 30]], np.float32)
    np.testing.assert_array_equal(m.run([x, s], 1)[0], s - x)
