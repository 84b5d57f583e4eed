"""mlc serve over REST: every endpoint, JSON and binary tensors, and every bad request
answered with the protocol's status and a message naming what was wrong."""
from __future__ import annotations

import json
import struct
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import make_mlp, mlp_ref, reference, start_server, require_serve_libraries

require_serve_libraries()


def http(server, method, path, body=None, headers=None):
    """(status, headers, body bytes) of a raw HTTP request."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{server.ports['http']}{path}", data=data, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def jhttp(server, method, path, body=None, headers=None):
    status, _, raw = http(server, method, path, body, headers)
    return status, json.loads(raw)


def test_health_and_server_metadata(server):
    assert jhttp(server, "GET", "/v2/health/live") == (200, {"live": True})
    assert jhttp(server, "GET", "/v2/health/ready") == (200, {"ready": True})
    status, meta = jhttp(server, "GET", "/v2")
    assert status == 200 and meta["name"] == "mlc"
    assert {"binary_tensor_data", "model_repository"} <= set(meta["extensions"])


def test_model_metadata_shows_dynamic_batch(server):
    status, meta = jhttp(server, "GET", "/v2/models/mlp")
    assert status == 200
    assert meta == {"name": "mlp", "versions": ["1"], "platform": "mlc_onnx",
                    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 6]},
                               {"name": "k", "datatype": "INT64", "shape": [-1, 2]}],
                    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 5]},
                                {"name": "s", "datatype": "INT64", "shape": [-1, 2]}]}
    assert jhttp(server, "GET", "/v2/models/mlp/versions/1")[1] == meta
    assert jhttp(server, "GET", "/v2/models/cnn")[1]["inputs"] == [
        {"name": "image", "datatype": "FP32", "shape": [-1, 3, 4, 4]}]
    assert jhttp(server, "GET", "/v2/models/mlp/ready") == (200, {"name": "mlp", "ready": True})
    assert jhttp(server, "GET", "/v2/models/mlp/versions/1/ready")[0] == 200


def test_infer_json(server):
    x = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
    k = np.arange(6, dtype=np.int64).reshape(3, 2)
    status, r = jhttp(server, "POST", "/v2/models/mlp/infer", {
        "id": "req-7",
        "inputs": [{"name": "x", "shape": [3, 6], "datatype": "FP32", "data": x.ravel().tolist()},
                   {"name": "k", "shape": [3, 2], "datatype": "INT64", "data": k.tolist()}]})   # nested is fine too
    assert status == 200, r
    assert r["id"] == "req-7" and r["model_name"] == "mlp" and r["model_version"] == "1"
    y_ref, s_ref = mlp_ref(x, k)
    out = {o["name"]: o for o in r["outputs"]}
    assert out["y"]["datatype"] == "FP32" and out["y"]["shape"] == [3, 5]
    np.testing.assert_allclose(np.array(out["y"]["data"], np.float32).reshape(3, 5), y_ref, rtol=1e-5, atol=1e-5)
    assert out["s"]["datatype"] == "INT64" and out["s"]["data"] == s_ref.ravel().tolist()


def test_infer_binary_extension(server, model_dir):
    """Inputs as raw bytes after the JSON header (Inference-Header-Content-Length), and one
    output asked for in binary, the other in JSON."""
    img = np.random.default_rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32)
    head = json.dumps({"inputs": [{"name": "image", "shape": [2, 3, 4, 4], "datatype": "FP32",
                                   "parameters": {"binary_data_size": img.nbytes}}],
                       "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    status, headers, raw = http(server, "POST", "/v2/models/cnn/infer", head + img.tobytes(),
                                {"Inference-Header-Content-Length": str(len(head)),
                                 "Content-Type": "application/octet-stream"})
    assert status == 200, raw
    n = int(headers["Inference-Header-Content-Length"])
    meta = json.loads(raw[:n])
    (o,) = meta["outputs"]
    assert o["name"] == "logits" and o["shape"] == [2, 10] and o["parameters"]["binary_data_size"] == 80
    got = np.frombuffer(raw[n:], "<f4").reshape(2, 10)
    (want,) = reference(model_dir["cnn"], image=img)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_binary_data_output_parameter(server):
    x = np.ones((1, 6), np.float32)
    status, headers, raw = http(server, "POST", "/v2/models/mlp/infer", {
        "parameters": {"binary_data_output": True},
        "inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP32", "data": x.ravel().tolist()},
                   {"name": "k", "shape": [1, 2], "datatype": "INT64", "data": [3, 4]}],
        "outputs": [{"name": "s"}]})
    assert status == 200
    n = int(headers["Inference-Header-Content-Length"])
    meta = json.loads(raw[:n])
    assert [o["name"] for o in meta["outputs"]] == ["s"]
    assert struct.unpack("<2q", raw[n:]) == (7, 9)


def test_tritonclient_http(server, model_dir):
    th = pytest.importorskip("tritonclient.http", reason="the tests talk to the server with tritonclient[http]")
    c = th.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("cnn")
    assert c.get_model_metadata("cnn")["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    img = np.random.default_rng(3).standard_normal((5, 3, 4, 4)).astype(np.float32)
    for binary in (True, False):
        i = th.InferInput("image", list(img.shape), "FP32")
        i.set_data_from_numpy(img, binary_data=binary)
        r = c.infer("cnn", [i], outputs=[th.InferRequestedOutput("logits", binary_data=binary)])
        np.testing.assert_allclose(r.as_numpy("logits"), reference(model_dir["cnn"], image=img)[0],
                                   rtol=1e-4, atol=1e-5)
    index = c.get_model_repository_index()
    assert {(m["name"], m["state"]) for m in index} == {("mlp", "READY"), ("cnn", "READY")}
    with pytest.raises(Exception, match="unknown model 'nope'"):
        c.infer("nope", [i])


def _mlp_body(x_shape=(1, 6), x_type="FP32", k=True, x_data=None):
    n = int(np.prod(x_shape))
    inputs = [{"name": "x", "shape": list(x_shape), "datatype": x_type,
               "data": x_data if x_data is not None else [0.5] * n}]
    if k:
        inputs.append({"name": "k", "shape": [x_shape[0] if len(x_shape) else 1, 2], "datatype": "INT64",
                       "data": [1, 2] * (x_shape[0] if len(x_shape) else 1)})
    return {"inputs": inputs}


@pytest.mark.parametrize("body, status, message", [
    (_mlp_body((1, 7)), 400, "input 'x': shape [1, 7], expected [-1, 6]"),
    (_mlp_body((6,)), 400, "input 'x': shape [6], expected [-1, 6]"),
    (_mlp_body(x_type="FP64"), 400, "input 'x': datatype FP64, expected FP32"),
    (_mlp_body(x_type="FP128"), 400, "input 'x': unknown datatype 'FP128'"),
    (_mlp_body(k=False), 400, "missing input k: INT64[-1, 2] for model 'mlp'"),
    (_mlp_body((9, 6)), 400, "input 'x': batch dimension 9, expected 1 to 8"),
    (_mlp_body(x_data=[1.0, 2.0]), 400, "input 'x': 2 elements in 'data', but shape [1, 6] holds 6"),
    (_mlp_body(x_data=["a"] * 6), 400, "input 'x': 'data' must hold FP32 values"),
    ({"inputs": [_mlp_body()["inputs"][0], {"name": "k", "shape": [1, 2], "datatype": "INT64",
                                            "data": [1, 2 ** 64]}]}, 400, "input 'k': 'data' must hold INT64 values"),
    ({"inputs": [_mlp_body()["inputs"][0], {"name": "k", "shape": [1, 2], "datatype": "INT8", "data": [1, 300]}]},
     400, "input 'k': value 300 is out of INT8's range [-128, 127]"),
    ({"inputs": [_mlp_body()["inputs"][0], {"name": "k", "shape": [1, 2], "datatype": "INT64", "data": [1.5, 2]}]},
     400, "input 'k': 'data' must hold INT64 values"),
    ({"inputs": [{"name": "z", "shape": [1], "datatype": "FP32", "data": [1]}]}, 400,
     "model 'mlp' has no input 'z'; its inputs are x: FP32[-1, 6], k: INT64[-1, 2]"),
    ({"inputs": "x"}, 400, "a JSON object with a list 'inputs'"),
    ({**_mlp_body(), "outputs": [{"name": "q"}]}, 400, "model 'mlp' has no output 'q'"),
])
def test_bad_requests(server, body, status, message):
    got, r = jhttp(server, "POST", "/v2/models/mlp/infer", body)
    assert got == status and message in r["error"], r


def test_bad_json_and_binary_sizes(server):
    status, r = jhttp(server, "POST", "/v2/models/mlp/infer", b"{not json")
    assert status == 400 and "not valid JSON" in r["error"]
    head = json.dumps({"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 24}},
                                  {"name": "k", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]}).encode()
    for extra, message in ((b"\0" * 20, "binary_data_size 24 runs past the 20 bytes"),
                           (b"\0" * 28, "4 bytes of binary data after the JSON header are not claimed")):
        status, _, raw = http(server, "POST", "/v2/models/mlp/infer", head + extra,
                              {"Inference-Header-Content-Length": str(len(head))})
        assert status == 400 and message in json.loads(raw)["error"]
    head2 = json.dumps({"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP32",
                                    "parameters": {"binary_data_size": 20}},
                                   {"name": "k", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]}).encode()
    status, _, raw = http(server, "POST", "/v2/models/mlp/infer", head2 + b"\0" * 20,
                          {"Inference-Header-Content-Length": str(len(head2))})
    assert status == 400 and "input 'x': 20 bytes of data, but FP32 shape [1, 6] takes 24" in json.loads(raw)["error"]


def test_unknown_model_version_and_endpoint(server):
    for path in ("/v2/models/nope", "/v2/models/nope/ready"):
        status, r = jhttp(server, "GET", path)
        assert status == 404 and "unknown model 'nope'" in r["error"]
    status, r = jhttp(server, "POST", "/v2/models/nope/infer", _mlp_body())
    assert status == 404 and "unknown model 'nope'" in r["error"]
    status, r = jhttp(server, "GET", "/v2/models/mlp/versions/3")
    assert status == 404 and "model 'mlp' has no version '3' (versions: 1)" in r["error"]
    status, r = jhttp(server, "GET", "/v2/nothing/here")
    assert status == 404 and "no endpoint GET /v2/nothing/here" in r["error"]
    assert jhttp(server, "GET", "/v2/health/live")[0] == 200   # still up


def test_repository_index_load_unload(server):
    status, index = jhttp(server, "POST", "/v2/repository/index", {})
    assert status == 200 and sorted(m["name"] for m in index) == ["cnn", "mlp"]
    assert all(m["state"] == "READY" and m["version"] == "1" for m in index)
    assert jhttp(server, "POST", "/v2/repository/models/cnn/unload", b"") == (200, {})
    status, r = jhttp(server, "GET", "/v2/models/cnn/ready")
    assert status == 404 and "unknown model 'cnn' (unloaded)" in r["error"]
    assert {m["name"]: m["state"] for m in jhttp(server, "POST", "/v2/repository/index", b"")[1]}["cnn"] == "UNAVAILABLE"
    assert [m["name"] for m in jhttp(server, "POST", "/v2/repository/index", {"ready": True})[1]] == ["mlp"]
    assert jhttp(server, "POST", "/v2/repository/models/cnn/load", b"") == (200, {})
    assert jhttp(server, "GET", "/v2/models/cnn/ready")[0] == 200
    status, r = jhttp(server, "POST", "/v2/repository/models/nope/load", b"")
    assert status == 404 and "no model 'nope'" in r["error"]


def test_concurrent_clients(server, model_dir):
    """16 clients at once, each checking its own answer against numpy: the batcher mixes
    their requests into batches and splits every result back to its owner."""
    def client(seed):
        rng = np.random.default_rng(100 + seed)
        for _ in range(8):
            n = int(rng.integers(1, 4))
            x = rng.standard_normal((n, 6)).astype(np.float32)
            k = rng.integers(-50, 50, (n, 2))
            status, r = jhttp(server, "POST", "/v2/models/mlp/infer", {"inputs": [
                {"name": "x", "shape": [n, 6], "datatype": "FP32", "data": x.ravel().tolist()},
                {"name": "k", "shape": [n, 2], "datatype": "INT64", "data": k.ravel().tolist()}]})
            assert status == 200, r
            out = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in r["outputs"]}
            y_ref, s_ref = mlp_ref(x, k)
            np.testing.assert_allclose(out["y"], y_ref, rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(out["s"], s_ref)
        return True
    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(client, range(16)))


def test_metrics_page(server):
    assert jhttp(server, "POST", "/v2/models/mlp/infer", _mlp_body())[0] == 200
    assert jhttp(server, "POST", "/v2/models/mlp/infer", _mlp_body(k=False))[0] == 400
    port = server.ports["metrics"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    assert 'mlc_serve_requests_total{model="mlp",protocol="http"}' in text
    assert 'mlc_serve_failures_total{model="mlp",protocol="http",status="400"}' in text
    assert 'mlc_serve_batch_size_bucket{le="1.0",model="mlp"}' in text
    assert "mlc_serve_queue_seconds_count" in text and "mlc_serve_request_seconds_bucket" in text


def test_request_size_limit_and_auth(tmp_path):
    path = make_mlp(tmp_path / "mlp.onnx")
    s = start_server([path], max_request_bytes=2000, api_key="s3cret")
    try:
        auth = {"Authorization": "Bearer s3cret"}
        assert jhttp(s, "GET", "/v2/health/ready")[0] == 200        # probes need no key
        status, r = jhttp(s, "GET", "/v2/models/mlp")
        assert status == 401 and "Authorization: Bearer" in r["error"]
        assert jhttp(s, "GET", "/v2/models/mlp", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert jhttp(s, "GET", "/v2/models/mlp", headers=auth)[0] == 200
        big = _mlp_body((8, 6), x_data=[0.123456789] * 48)
        big["pad"] = "x" * 3000
        status, r = jhttp(s, "POST", "/v2/models/mlp/infer", big, headers=auth)
        assert status == 413 and "larger than the server's limit of 2000 bytes" in r["error"]
        status, r = jhttp(s, "POST", "/v2/models/mlp/infer", _mlp_body(), headers=auth)
        assert status == 200 and len(r["outputs"]) == 2
    finally:
        s.stop()


def test_fixed_shape_model_is_not_batched(tmp_path):
    """A model without a symbolic first dimension is served at its own shapes."""
    path = make_mlp(tmp_path / "fixed.onnx", batch_dim=2)
    s = start_server([path])
    try:
        meta = jhttp(s, "GET", "/v2/models/fixed")[1]
        assert meta["inputs"][0]["shape"] == [2, 6]
        status, r = jhttp(s, "POST", "/v2/models/fixed/infer", _mlp_body((1, 6)))
        assert status == 400 and "input 'x': shape [1, 6], expected [2, 6]" in r["error"]
        x = np.arange(12, dtype=np.float32).reshape(2, 6) / 10
        status, r = jhttp(s, "POST", "/v2/models/fixed/infer", {"inputs": [
            {"name": "x", "shape": [2, 6], "datatype": "FP32", "data": x.ravel().tolist()},
            {"name": "k", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]}]})
        assert status == 200
        np.testing.assert_allclose(np.array(r["outputs"][0]["data"]).reshape(2, 5), mlp_ref(x, 0)[0], rtol=1e-5)
    finally:
        s.stop()


def test_draining_server_is_unready_and_refuses_new_requests(server):
    svc = server.server.service
    svc.draining = True
    try:
        assert jhttp(server, "GET", "/v2/health/ready") == (503, {"ready": False})
        assert jhttp(server, "GET", "/v2/health/live") == (200, {"live": True})
        status, r = jhttp(server, "POST", "/v2/models/mlp/infer", _mlp_body())
        assert status == 503 and r["error"] == "the server is shutting down"
    finally:
        svc.draining = False
    assert jhttp(server, "POST", "/v2/models/mlp/infer", _mlp_body())[0] == 200
