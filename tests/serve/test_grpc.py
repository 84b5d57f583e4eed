"""mlc serve over gRPC, through tritonclient.grpc and through the server's own
messages: every RPC, raw and typed tensor contents, and the status codes of bad requests."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import make_mlp, mlp_ref, reference, start_server, require_serve_libraries

require_serve_libraries()

grpc = pytest.importorskip("grpc")
tg = pytest.importorskip("tritonclient.grpc", reason="the tests talk to the server with tritonclient[grpc]")


@pytest.fixture(scope="module")
def client(server):
    return tg.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")


def _inputs(x, k):
    i1 = tg.InferInput("x", list(x.shape), "FP32")
    i2 = tg.InferInput("k", list(k.shape), "INT32" if k.dtype == np.int32 else "INT64")
    i1.set_data_from_numpy(x)
    i2.set_data_from_numpy(k)
    return [i1, i2]


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp") and client.is_model_ready("cnn", "1")
    assert not client.is_model_ready("nope")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "mlc" and "binary_tensor_data" in meta["extensions"]
    m = client.get_model_metadata("mlp", as_json=True)
    assert m["platform"] == "mlc_onnx" and m["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in m["inputs"]] == [("x", "FP32", ["-1", "6"]),
                                                                               ("k", "INT64", ["-1", "2"])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in m["outputs"]] == [("y", "FP32", ["-1", "5"]),
                                                                                ("s", "INT64", ["-1", "2"])]


def test_infer(client, model_dir):
    rng = np.random.default_rng(5)
    x, k = rng.standard_normal((4, 6)).astype(np.float32), rng.integers(-9, 9, (4, 2))
    r = client.infer("mlp", _inputs(x, k), request_id="g1")
    assert r.get_response().id == "g1" and r.get_response().model_version == "1"
    y_ref, s_ref = mlp_ref(x, k)
    np.testing.assert_allclose(r.as_numpy("y"), y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(r.as_numpy("s"), s_ref)
    only = client.infer("mlp", _inputs(x, k), outputs=[tg.InferRequestedOutput("s")])
    assert [o.name for o in only.get_response().outputs] == ["s"]
    img = rng.standard_normal((3, 3, 4, 4)).astype(np.float32)
    i = tg.InferInput("image", list(img.shape), "FP32")
    i.set_data_from_numpy(img)
    np.testing.assert_allclose(client.infer("cnn", [i]).as_numpy("logits"),
                               reference(model_dir["cnn"], image=img)[0], rtol=1e-4, atol=1e-5)


def test_typed_contents(server):
    """Inputs in InferTensorContents (not raw bytes), with the server's own messages."""
    from mlc.serve import grpc_predict_v2_pb2 as pb
    channel = grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}")
    infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                request_serializer=pb.ModelInferRequest.SerializeToString,
                                response_deserializer=pb.ModelInferResponse.FromString)
    req = pb.ModelInferRequest(model_name="mlp")
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 6)
    req.inputs.add(name="x", datatype="FP32", shape=[2, 6]).contents.fp32_contents.extend(x.ravel().tolist())
    req.inputs.add(name="k", datatype="INT64", shape=[2, 2]).contents.int64_contents.extend([1, 2, 3, 4])
    resp = infer(req, timeout=60)
    assert [(o.name, o.datatype, list(o.shape)) for o in resp.outputs] == [("y", "FP32", [2, 5]), ("s", "INT64", [2, 2])]
    np.testing.assert_allclose(np.frombuffer(resp.raw_output_contents[0], "<f4").reshape(2, 5), mlp_ref(x, 0)[0],
                               rtol=1e-5, atol=1e-6)
    assert np.frombuffer(resp.raw_output_contents[1], "<i8").tolist() == [3, 5, 7, 9]
    del req.inputs[0].contents.fp32_contents[-1]
    with pytest.raises(grpc.RpcError) as e:
        infer(req, timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'x': 11 values in contents.fp32_contents, but shape [2, 6] holds 12" in e.value.details()
    channel.close()


@pytest.mark.parametrize("make, code, message", [
    (lambda: _inputs(np.zeros((1, 7), np.float32), np.zeros((1, 2), np.int64)), "INVALID_ARGUMENT",
     "input 'x': shape [1, 7], expected [-1, 6]"),
    (lambda: _inputs(np.zeros((1, 6), np.float32), np.zeros((1, 2), np.int32)), "INVALID_ARGUMENT",
     "input 'k': datatype INT32, expected INT64"),
    (lambda: _inputs(np.zeros((1, 6), np.float32), np.zeros((1, 2), np.int64))[:1], "INVALID_ARGUMENT",
     "missing input k: INT64[-1, 2]"),
    (lambda: _inputs(np.zeros((2, 6), np.float32), np.zeros((3, 2), np.int64)), "INVALID_ARGUMENT",
     "input 'k': batch dimension 3, but other inputs have 2"),
])
def test_bad_requests(client, make, code, message):
    with pytest.raises(tg.InferenceServerException) as e:
        client.infer("mlp", make())
    assert e.value.status() == f"StatusCode.{code}" and message in e.value.message()


def test_unknown_model_and_unimplemented(client):
    with pytest.raises(tg.InferenceServerException) as e:
        client.infer("nope", _inputs(np.zeros((1, 6), np.float32), np.zeros((1, 2), np.int64)))
    assert e.value.status() == "StatusCode.NOT_FOUND" and "unknown model 'nope'" in e.value.message()
    with pytest.raises(tg.InferenceServerException) as e:
        client.get_model_metadata("nope")
    assert e.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(tg.InferenceServerException) as e:   # Triton's statistics RPC: not part of the protocol
        client.get_inference_statistics("mlp")
    assert e.value.status() == "StatusCode.UNIMPLEMENTED"
    assert client.is_server_live()


def test_repository(client):
    index = client.get_model_repository_index(as_json=True)["models"]
    assert sorted((m["name"], m["state"]) for m in index) == [("cnn", "READY"), ("mlp", "READY")]
    client.unload_model("cnn")
    assert not client.is_model_ready("cnn")
    client.load_model("cnn")
    assert client.is_model_ready("cnn")
    with pytest.raises(tg.InferenceServerException) as e:
        client.load_model("nope")
    assert e.value.status() == "StatusCode.NOT_FOUND"


def test_auth_and_message_limit(tmp_path):
    s = start_server([make_mlp(tmp_path / "mlp.onnx")], api_key="k3y", max_request_bytes=1000)
    try:
        c = tg.InferenceServerClient(f"127.0.0.1:{s.ports['grpc']}")
        assert c.is_server_live()   # the health checks need no key
        with pytest.raises(tg.InferenceServerException) as e:
            c.get_model_metadata("mlp")
        assert e.value.status() == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(tg.InferenceServerException) as e:
            c.get_model_metadata("mlp", headers={"authorization": "Bearer nope"})
        assert e.value.status() == "StatusCode.UNAUTHENTICATED"
        ok = {"authorization": "Bearer k3y"}
        assert c.get_model_metadata("mlp", headers=ok).name == "mlp"
        x, k = np.ones((1, 6), np.float32), np.ones((1, 2), np.int64)
        np.testing.assert_allclose(c.infer("mlp", _inputs(x, k), headers=ok).as_numpy("y"), mlp_ref(x, k)[0],
                                   rtol=1e-5)
        big = tg.InferInput("x", [8, 6], "FP32")
        big.set_data_from_numpy(np.ones((8, 6), np.float32))
        pad = tg.InferInput("k", [8, 2], "INT64")
        pad.set_data_from_numpy(np.ones((8, 2), np.int64))
        with pytest.raises(tg.InferenceServerException) as e:
            c.infer("mlp", [big, pad], headers=ok, request_id="p" * 1000)
        assert e.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    finally:
        s.stop()


def test_generated_module_matches_the_proto(tmp_path):
    """grpc_predict_v2_pb2 holds exactly what grpcio-tools makes of grpc_predict_v2.proto."""
    protoc = pytest.importorskip("grpc_tools.protoc", reason="regenerating the messages needs grpcio-tools")
    import importlib.util
    import os

    from mlc.serve import grpc_predict_v2_pb2 as pb
    folder = os.path.dirname(pb.__file__)
    assert protoc.main(["protoc", f"-I{folder}", f"--python_out={tmp_path}",
                        os.path.join(folder, "grpc_predict_v2.proto")]) == 0
    text = (tmp_path / "grpc_predict_v2_pb2.py").read_text()
    start = text.index("AddSerializedFile(") + len("AddSerializedFile(")
    fresh = eval(text[start:text.index(")\n", start)])   # the serialized FileDescriptorProto, a bytes literal
    assert fresh == pb.DESCRIPTOR.serialized_pb
    spec = importlib.util.find_spec("tritonclient.grpc.service_pb2")
    if spec is not None:   # and Triton's copy of the protocol numbers its fields the same
        from tritonclient.grpc import service_pb2 as triton
        for name, mine in pb.DESCRIPTOR.message_types_by_name.items():
            theirs = triton.DESCRIPTOR.message_types_by_name[name]
            assert [(f.name, f.number, f.type) for f in mine.fields] == \
                   [(f.name, f.number, f.type) for f in theirs.fields[:len(mine.fields)]], name
