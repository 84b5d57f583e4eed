"""``mlc serve``: models behind the Open Inference Protocol (KServe v2) over REST and
gRPC, with dynamic batching, Prometheus metrics, a drain on SIGTERM, bearer-token
auth and TLS. docs/serving.md is the user's guide.

Modules: ``protocol`` (datatypes, tensors in and out, request checks), ``models``
(loading and the repository), ``batcher`` (dynamic batching), ``http`` (REST, aiohttp),
``grpc`` (gRPC, grpcio), ``metrics`` (prometheus-client), ``server`` (the listeners,
readiness, drain; ``BackgroundServer`` runs one in a thread). The network libraries
are the optional extra ``serve`` (``pip install 'mlc[serve]'``) and are imported
only when a server starts: ``import mlc`` never needs them.
"""
from __future__ import annotations


def config_from_args(args):
    """A ServeConfig from ``mlc serve``'s parsed arguments."""
    from .server import ServeConfig
    return ServeConfig(models=list(args.models), model_repository=args.model_repository, host=args.host,
                       http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                       max_batch=args.max_batch, max_delay_ms=args.max_delay_ms, instances=args.instances,
                       max_request_bytes=args.max_request_bytes, api_key=args.api_key or None,
                       tls_cert=args.tls_cert, tls_key=args.tls_key, target=args.target or "host",
                       backend=args.backend, drain_seconds=args.drain_seconds)


def main(args) -> int:
    """``mlc serve``: serve until SIGTERM or SIGINT (then drain and exit 0)."""
    import os

    from ..logs import configure
    from .server import run
    spec = os.environ.get("MLC_LOG", "")   # MLC_LOG as everywhere in mlc; the server's own lines at info
    if args.log_level:
        spec += f",serve={args.log_level}"
    elif not spec:
        spec = "serve=info"
    try:
        configure(spec)
    except ValueError as e:
        raise SystemExit(f"mlc serve: {e}")
    if args.max_batch < 1:
        raise SystemExit("mlc serve: --max-batch must be at least 1")
    if args.instances < 1:
        raise SystemExit("mlc serve: --instances must be at least 1")
    return run(config_from_args(args))
