"""The server: the REST, gRPC and metrics listeners on one asyncio loop, the model
repository behind them, readiness (after every model is compiled), and the drain on
shutdown (SIGTERM: the listeners stop taking requests, those in flight finish, then
the process exits 0)."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import sys
import threading
from dataclasses import dataclass, field

from .protocol import InferError

log = logging.getLogger("mlc.serve")


@dataclass
class ServeConfig:
    models: list = field(default_factory=list)   # model files: name = the file's stem, version 1
    model_repository: str | None = None        # DIR/<name>/<version>/model.onnx|model.so
    host: str = "0.0.0.0"
    http_port: int = 8000                      # 0: any free port; -1: off
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 8
    max_delay_ms: float = 2.0
    instances: int = 1
    max_request_bytes: int = 64 << 20
    api_key: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    target: str = "host"
    backend: str = "mlc"                       # or "onnxruntime" (a baseline for benchmarks)
    drain_seconds: float = 30.0


class InferenceService:
    """What both protocols serve: readiness, metadata, the repository and inference."""

    def __init__(self, config: ServeConfig, metrics):
        from .batcher import Batcher
        from .models import Repository
        self.config = config
        self.metrics = metrics
        self.api_key = config.api_key
        self.max_request_bytes = config.max_request_bytes
        self.ready = False
        self.draining = False
        self.in_flight = 0

        def make_batcher(model, cfg):
            return Batcher(model, float(cfg.get("max_delay_ms", config.max_delay_ms)) / 1e3,
                           int(cfg.get("instances", config.instances)), metrics)
        self.repository = Repository(config.models, config.model_repository, max_batch=config.max_batch,
                                     target=config.target, backend=config.backend, make_batcher=make_batcher)

    def is_ready(self) -> bool:
        return self.ready and not self.draining

    def server_metadata(self) -> dict:
        from ..version import __version__
        return {"name": "mlc", "version": __version__, "extensions": ["binary_tensor_data", "model_repository"]}

    async def infer(self, name: str, version, given: dict) -> list:
        """The outputs of one request: checked, queued for its model's batcher, awaited."""
        from .protocol import check_inputs
        if self.draining:
            raise InferError("the server is shutting down", 503)
        model, batcher = self.repository.get(name, version)
        arrays = check_inputs(model, given)
        self.in_flight += 1
        try:
            return await asyncio.wrap_future(batcher.submit(arrays))
        finally:
            self.in_flight -= 1

    async def load(self, name: str) -> None:
        from .models import LoadError
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.repository.load, name)
        except LoadError as e:
            raise InferError(f"cannot load model '{name}': {e}", 400)

    async def unload(self, name: str) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.repository.unload, name)


def _ssl_context(config: ServeConfig):
    if not (config.tls_cert or config.tls_key):
        return None
    if not (config.tls_cert and config.tls_key):
        raise SystemExit("mlc serve: TLS needs both --tls-cert and --tls-key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.tls_cert, config.tls_key)
    return ctx


class Server:
    """One server; ``await start()`` binds the ports (``self.ports``) and loads the
    models in the background (``self.loaded`` is set when done; readiness follows),
    ``await stop()`` drains and closes."""

    def __init__(self, config: ServeConfig):
        from .metrics import Metrics
        self.config = config
        self.metrics = Metrics(config.max_batch)
        self.service = InferenceService(config, self.metrics)
        self.ports: dict[str, int] = {}
        self.loaded: asyncio.Event | None = None
        self.load_errors: list[str] = []
        self._runners = []
        self._grpc = None

    async def start(self) -> None:
        from aiohttp import web
        from . import grpc as grpc_front
        from .http import make_app
        cfg = self.config
        self.loaded = asyncio.Event()
        tls = _ssl_context(cfg)
        if cfg.http_port >= 0:
            self.ports["http"] = await self._site(make_app(self.service), cfg.http_port, tls)
        if cfg.metrics_port >= 0:
            self.ports["metrics"] = await self._site(self._metrics_app(web), cfg.metrics_port, None)
        if cfg.grpc_port >= 0:
            self._grpc = grpc_front.make_server(self.service, cfg.max_request_bytes)
            address = f"{cfg.host}:{cfg.grpc_port}"
            if tls:
                with open(cfg.tls_key, "rb") as k, open(cfg.tls_cert, "rb") as c:
                    import grpc
                    port = self._grpc.add_secure_port(address, grpc.ssl_server_credentials([(k.read(), c.read())]))
            else:
                port = self._grpc.add_insecure_port(address)
            await self._grpc.start()
            self.ports["grpc"] = port
        asyncio.get_running_loop().create_task(self._load_all())

    async def _site(self, app, port: int, tls) -> int:
        from aiohttp import web
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.config.host, port, ssl_context=tls).start()
        self._runners.append(runner)
        return runner.addresses[-1][1]

    def _metrics_app(self, web):
        async def page(request):
            return web.Response(body=self.metrics.text(), headers={"Content-Type": "text/plain; version=0.0.4"})
        app = web.Application()
        app.router.add_get("/metrics", page)
        return app

    async def _load_all(self) -> None:
        from .models import LoadError
        loop = asyncio.get_running_loop()
        for name in self.service.repository.names():
            try:
                await loop.run_in_executor(None, self.service.repository.load, name)
            except LoadError as e:
                self.load_errors.append(str(e))
                log.error("model %s not loaded: %s", name, e)
        self.service.ready = not self.load_errors
        self.loaded.set()

    async def stop(self) -> None:
        """Drain: readiness goes false and new inference requests get 503 at once,
        requests in flight finish (up to ``drain_seconds``), then everything closes."""
        svc = self.service
        svc.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_seconds
        while svc.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._grpc is not None:
            await self._grpc.stop(grace=max(0.0, deadline - loop.time()))
        for runner in self._runners:
            await runner.cleanup()
        await loop.run_in_executor(None, svc.repository.close)


def _check_libraries() -> None:
    missing = []
    for module, package in (("aiohttp", "aiohttp"), ("grpc", "grpcio"), ("prometheus_client", "prometheus-client")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise SystemExit(f"mlc serve needs {', '.join(missing)}: pip install 'mlc[serve]'")


def _describe(server: Server) -> str:
    scheme = "https" if server.config.tls_cert else "http"
    host = server.config.host
    parts = []
    if "http" in server.ports:
        parts.append(f"HTTP {scheme}://{host}:{server.ports['http']}")
    if "grpc" in server.ports:
        parts.append(f"gRPC {host}:{server.ports['grpc']}")
    if "metrics" in server.ports:
        parts.append(f"metrics http://{host}:{server.ports['metrics']}/metrics")
    return ", ".join(parts)


async def _serve(config: ServeConfig) -> int:
    server = Server(config)
    try:
        await server.start()
    except (OSError, RuntimeError) as e:   # a port taken, an address not here, a bad certificate
        raise SystemExit(f"mlc serve: cannot start listening on {config.host}: {e}")
    print(f"mlc serve: listening: {_describe(server)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loaded = asyncio.ensure_future(server.loaded.wait())
    done, _ = await asyncio.wait([loaded, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    if loaded in done:
        if server.load_errors:
            print("mlc serve: not ready: " + "; ".join(server.load_errors), file=sys.stderr, flush=True)
        else:
            names = ", ".join(server.service.repository.names()) or "none"
            print(f"mlc serve: ready: models {names}", flush=True)
        await stop.wait()
    print(f"mlc serve: stopping: draining {server.service.in_flight} request(s) in flight", flush=True)
    await server.stop()
    print("mlc serve: stopped", flush=True)
    return 0


def run(config: ServeConfig) -> int:
    """Serve until SIGTERM or SIGINT; the exit status."""
    _check_libraries()
    if not config.models and not config.model_repository:
        raise SystemExit("mlc serve: give model files (.onnx, .so) or --model-repository DIR")
    for f in config.models:
        if not os.path.isfile(f):
            raise SystemExit(f"mlc serve: no such model file: {f}")
    if config.model_repository and not os.path.isdir(config.model_repository):
        raise SystemExit(f"mlc serve: --model-repository {config.model_repository}: no such folder")
    return asyncio.run(_serve(config))


class BackgroundServer:
    """A server on its own event loop in a thread of this process (tests, notebooks,
    embedding): ``start()`` returns once the ports are bound (``ports``) and, with
    ``wait_ready``, every model loaded; ``stop()`` drains and joins."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.server: Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mlc-serve", daemon=True)

    @property
    def ports(self) -> dict:
        return self.server.ports

    def start(self, wait_ready: bool = True, timeout: float = 300) -> "BackgroundServer":
        _check_libraries()
        self._thread.start()

        async def up():
            self.server = Server(self.config)
            await self.server.start()
        asyncio.run_coroutine_threadsafe(up(), self._loop).result(timeout)
        if wait_ready:
            asyncio.run_coroutine_threadsafe(self.server.loaded.wait(), self._loop).result(timeout)
        return self

    def call(self, coro, timeout: float = 300):
        """Run a coroutine on the server's loop; its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self) -> None:
        if self.server is not None:
            self.call(self.server.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
