"""The Open Inference Protocol over gRPC (grpcio's asyncio server): the service
``inference.GRPCInferenceService`` of grpc_predict_v2.proto. Tensors arrive as typed
contents or raw bytes and leave as raw bytes (``raw_output_contents``), as Triton's
clients expect. RPCs of Triton's larger service that mlc does not serve (streaming,
shared memory, statistics) answer UNIMPLEMENTED."""
from __future__ import annotations

import logging
import time

import grpc
import numpy as np

from . import grpc_predict_v2_pb2 as pb
from .protocol import InferError, datatype_of, from_raw, requested_outputs, to_raw, DATATYPES

log = logging.getLogger("mlc.serve")

SERVICE = "inference.GRPCInferenceService"
OPEN_METHODS = {f"/{SERVICE}/ServerLive", f"/{SERVICE}/ServerReady"}   # probes need no credentials

_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
          404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
          503: grpc.StatusCode.UNAVAILABLE, 500: grpc.StatusCode.INTERNAL}

# the typed contents field each datatype travels in (FP16 only as raw bytes)
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents"}


def _input_arrays(req) -> dict[str, np.ndarray]:
    raw = list(req.raw_input_contents)
    if raw and len(raw) != len(req.inputs):
        raise InferError(f"{len(raw)} raw_input_contents for {len(req.inputs)} inputs: give one per input, in order")
    given = {}
    for k, t in enumerate(req.inputs):
        if t.name in given:
            raise InferError(f"input '{t.name}' is given twice")
        if raw:
            given[t.name] = from_raw(t.name, t.datatype, t.shape, raw[k])
            continue
        field = _CONTENTS.get(t.datatype)
        if field is None:
            if t.datatype in DATATYPES:
                raise InferError(f"input '{t.name}': {t.datatype} data must be sent in raw_input_contents")
            from_raw(t.name, t.datatype, t.shape, b"")   # the unknown datatype's error
        values = getattr(t.contents, field)
        dims = [int(d) for d in t.shape]
        count = int(np.prod(dims)) if dims else 1
        if any(d < 0 for d in dims):
            raise InferError(f"input '{t.name}': shape {dims} has a negative dimension")
        if len(values) != count:
            raise InferError(f"input '{t.name}': {len(values)} values in contents.{field}, but shape {dims} "
                             f"holds {count}")
        given[t.name] = np.asarray(values, dtype=DATATYPES[t.datatype]).reshape(dims)
    return given


class Servicer:
    """The RPCs, on ``service`` (server.InferenceService)."""

    def __init__(self, service):
        self.service = service

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.service.is_ready())

    async def ModelReady(self, request, context):
        try:
            self.service.repository.get(request.name, request.version or None)
            return pb.ModelReadyResponse(ready=True)
        except InferError:
            return pb.ModelReadyResponse(ready=False)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(**self.service.server_metadata())

    async def ModelMetadata(self, request, context):
        model, _ = await self._get(request.name, request.version, context)
        m = model.metadata(self.service.repository.versions(request.name))
        return pb.ModelMetadataResponse(
            name=m["name"], versions=m["versions"], platform=m["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in m["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in m["outputs"]])

    async def ModelInfer(self, request, context):
        t0, status, label = time.perf_counter(), 200, None
        name, version = request.model_name, request.model_version or None
        try:
            model, _ = self.service.repository.get(name, version)
            label = name
            given = _input_arrays(request)
            positions = requested_outputs(model, [o.name for o in request.outputs])
            outs = await self.service.infer(name, version, given)
            resp = pb.ModelInferResponse(model_name=name, model_version=model.version, id=request.id)
            for i in positions:
                arr = np.asarray(outs[i])
                resp.outputs.add(name=model.outputs[i].name, datatype=datatype_of(arr.dtype), shape=arr.shape)
                resp.raw_output_contents.append(to_raw(arr))
            return resp
        except InferError as e:
            status = e.status
            await context.abort(_CODES.get(e.status, grpc.StatusCode.UNKNOWN), str(e))
        except Exception as e:
            if isinstance(e, grpc.aio.AbortError):
                raise
            status = 500
            log.exception("ModelInfer failed")
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}")
        finally:
            seconds = time.perf_counter() - t0
            self.service.metrics.request(label or "(unknown)", "grpc", seconds, status)
            log.debug("infer protocol=grpc model=%s version=%s status=%d latency_ms=%.3f", name, version or "",
                      status, seconds * 1e3)

    async def RepositoryIndex(self, request, context):
        rows = self.service.repository.index(request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**r) for r in rows])

    async def RepositoryModelLoad(self, request, context):
        await self._call(self.service.load(request.model_name), context)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        await self._call(self.service.unload(request.model_name), context)
        return pb.RepositoryModelUnloadResponse()

    async def _get(self, name, version, context):
        try:
            return self.service.repository.get(name, version or None)
        except InferError as e:
            await context.abort(_CODES[e.status], str(e))

    async def _call(self, coro, context):
        try:
            return await coro
        except InferError as e:
            await context.abort(_CODES.get(e.status, grpc.StatusCode.UNKNOWN), str(e))


_METHODS = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
    "RepositoryIndex": (pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
    "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse),
    "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, pb.RepositoryModelUnloadResponse),
}


class _Auth(grpc.aio.ServerInterceptor):
    """Every RPC but the health checks needs the metadata ``authorization: Bearer <key>``."""

    def __init__(self, key: str):
        self.expected = f"Bearer {key}"

        async def deny(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong credentials: send the metadata "
                                                                 "'authorization: Bearer <api key>'")
        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(self, continuation, details):
        if details.method in OPEN_METHODS:
            return await continuation(details)
        if dict(details.invocation_metadata or ()).get("authorization") == self.expected:
            return await continuation(details)
        return self._deny


def make_server(service, max_message_bytes: int) -> grpc.aio.Server:
    """The gRPC server of ``service``, without ports yet."""
    servicer = Servicer(service)
    handlers = {name: grpc.unary_unary_rpc_method_handler(getattr(servicer, name),
                                                          request_deserializer=req.FromString,
                                                          response_serializer=resp.SerializeToString)
                for name, (req, resp) in _METHODS.items()}
    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max(max_message_bytes, 64 << 20))]
    server = grpc.aio.server(interceptors=[_Auth(service.api_key)] if service.api_key else None, options=options)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    return server
