"""The Open Inference Protocol over REST (aiohttp): health, server and model metadata,
inference with JSON tensors and the binary tensor extension, and the model repository
extension. Every error is a JSON ``{"error": "..."}`` with the protocol's status."""
from __future__ import annotations

import json
import logging
import time

import numpy as np
from aiohttp import web

from .protocol import InferError, datatype_of, from_json_data, from_raw, requested_outputs, to_raw

log = logging.getLogger("mlc.serve")

HEADER_LENGTH = "Inference-Header-Content-Length"
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")   # probes need no credentials


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_app(service) -> web.Application:
    """The aiohttp application of ``service`` (server.InferenceService)."""

    @web.middleware
    async def errors(request, handler):
        if service.api_key and request.path not in OPEN_PATHS:
            if request.headers.get("Authorization", "") != f"Bearer {service.api_key}":
                return _error(401, "missing or wrong credentials: send the header 'Authorization: Bearer <api key>'")
        try:
            return await handler(request)
        except InferError as e:
            return _error(e.status, str(e))
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body larger than the server's limit of {service.max_request_bytes} bytes "
                               "(--max-request-bytes)")
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return _error(e.status, e.reason if e.status != 404 else f"no endpoint {request.method} {request.path}")
        except Exception as e:   # a bug of the server's: logged, answered, and the server stays up
            log.exception("%s %s failed", request.method, request.path)
            return _error(500, f"internal error: {type(e).__name__}: {e}")

    app = web.Application(middlewares=[errors], client_max_size=service.max_request_bytes)

    async def live(request):
        return web.json_response({"live": True})

    async def ready(request):
        ok = service.is_ready()
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    async def server_metadata(request):
        return web.json_response(service.server_metadata())

    async def model_metadata(request):
        name, version = request.match_info["name"], request.match_info.get("version")
        model, _ = service.repository.get(name, version)
        return web.json_response(model.metadata(service.repository.versions(name)))

    async def model_ready(request):
        name, version = request.match_info["name"], request.match_info.get("version")
        service.repository.get(name, version)   # 404 / 503 when not served
        return web.json_response({"name": name, "ready": True})

    async def infer(request):
        return await _infer(service, request)

    async def index(request):
        body = await _json_body(request, allow_empty=True)
        return web.json_response(service.repository.index(bool(body.get("ready", False))))

    async def load(request):
        await service.load(request.match_info["name"])
        return web.json_response({})

    async def unload(request):
        await service.unload(request.match_info["name"])
        return web.json_response({})

    r = app.router
    r.add_get("/v2/health/live", live)
    r.add_get("/v2/health/ready", ready)
    r.add_get("/v2", server_metadata)
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        r.add_get(base, model_metadata)
        r.add_get(base + "/ready", model_ready)
        r.add_post(base + "/infer", infer)
    r.add_post("/v2/repository/index", index)
    r.add_post("/v2/repository/models/{name}/load", load)
    r.add_post("/v2/repository/models/{name}/unload", unload)
    return app


async def _json_body(request, allow_empty=False) -> dict:
    raw = await request.read()
    if not raw and allow_empty:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InferError(f"the request body is not valid JSON: {e}")
    if not isinstance(body, dict):
        raise InferError("the request body must be a JSON object")
    return body


def _parse_infer(raw: bytes, header_length):
    """(the request's JSON header, {input name: array}, requested outputs) of an infer body."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise InferError(f"{HEADER_LENGTH}: expected a byte count, got {header_length!r}")
        if not 0 <= n <= len(raw):
            raise InferError(f"{HEADER_LENGTH} {n} is outside the body's {len(raw)} bytes")
        head, binary = raw[:n], memoryview(raw)[n:]
    else:
        head, binary = raw, memoryview(b"")
    try:
        body = json.loads(head)
    except (ValueError, UnicodeDecodeError) as e:
        raise InferError(f"the inference request is not valid JSON: {e}")
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise InferError("an inference request is a JSON object with a list 'inputs' of tensors "
                         "({\"name\", \"shape\", \"datatype\", \"data\"})")
    given, offset = {}, 0
    for t in body["inputs"]:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise InferError("each input must be an object with a 'name', 'shape', 'datatype' and 'data'")
        name = t["name"]
        for key in ("shape", "datatype"):
            if key not in t:
                raise InferError(f"input '{name}': no '{key}'")
        if name in given:
            raise InferError(f"input '{name}' is given twice")
        params = t.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InferError(f"input '{name}': binary_data_size {size!r} runs past the {len(binary)} bytes "
                                 f"of binary data after the JSON header ({HEADER_LENGTH})")
            given[name] = from_raw(name, t["datatype"], t["shape"], bytes(binary[offset:offset + size]))
            offset += size
        else:
            if "data" not in t:
                raise InferError(f"input '{name}': no 'data' (nor a binary_data_size parameter)")
            given[name] = from_json_data(name, t["datatype"], t["shape"], t["data"])
    if offset != len(binary):
        raise InferError(f"{len(binary) - offset} bytes of binary data after the JSON header are not claimed by "
                         "any input's binary_data_size")
    outputs = body.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                for o in outputs):
        raise InferError("'outputs' must be a list of objects with a 'name'")
    return body, given, outputs


async def _infer(service, request) -> web.Response:
    t0 = time.perf_counter()
    name, version = request.match_info["name"], request.match_info.get("version")
    status, label = 200, None
    try:
        model, _ = service.repository.get(name, version)
        label = name
        raw = await request.read()
        body, given, wanted = _parse_infer(raw, request.headers.get(HEADER_LENGTH))
        positions = requested_outputs(model, [o["name"] for o in wanted])
        outs = await service.infer(name, version, given)
        params = body.get("parameters") or {}
        binary_all = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
        binary_of = {o["name"]: bool((o.get("parameters") or {}).get("binary_data", binary_all)) for o in wanted}
        tensors, blobs = [], []
        for i in positions:
            spec, arr = model.outputs[i], np.asarray(outs[i])
            t = {"name": spec.name, "datatype": datatype_of(arr.dtype), "shape": list(arr.shape)}
            if binary_of.get(spec.name, binary_all):
                blob = to_raw(arr)
                t["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                t["data"] = arr.ravel().tolist()
            tensors.append(t)
        head = {"model_name": name, "model_version": model.version, "outputs": tensors}
        if "id" in body:
            head["id"] = body["id"]
        if not blobs:
            return web.json_response(head)
        text = json.dumps(head).encode()
        return web.Response(body=b"".join([text] + blobs), content_type="application/octet-stream",
                            headers={HEADER_LENGTH: str(len(text))})
    except Exception as e:
        status = getattr(e, "status", 500)
        raise
    finally:
        seconds = time.perf_counter() - t0
        service.metrics.request(label or "(unknown)", "http", seconds, status)
        log.debug("infer protocol=http model=%s version=%s status=%d latency_ms=%.3f", name, version or "",
                  status, seconds * 1e3)
