"""Prometheus metrics of a server, labelled by model: requests and failures (by
protocol), end-to-end latency, time in the batching queue, batch sizes and the time
the model ran. Each server has its own registry, so several can live in one process."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (the metrics page's content type)

_LATENCY = (.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10)


class Metrics:
    def __init__(self, max_batch: int = 8):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("mlc_serve_requests", "inference requests received", ["model", "protocol"],
                                registry=r)
        self.failures = Counter("mlc_serve_failures", "inference requests that failed, by HTTP status",
                                ["model", "protocol", "status"], registry=r)
        self.latency = Histogram("mlc_serve_request_seconds", "inference request latency, from the request "
                                 "decoded to the response encoded", ["model", "protocol"], buckets=_LATENCY,
                                 registry=r)
        self.queue = Histogram("mlc_serve_queue_seconds", "time a request waited for its batch to start",
                               ["model"], buckets=_LATENCY, registry=r)
        self.compute = Histogram("mlc_serve_compute_seconds", "time the model ran one batch", ["model"],
                                 buckets=_LATENCY, registry=r)
        sizes, b = [], 1
        while b < max(1, max_batch):
            sizes.append(b)
            b *= 2
        self.batch_size = Histogram("mlc_serve_batch_size", "rows run together in one batch (before padding)",
                                    ["model"], buckets=sizes + [max(1, max_batch)], registry=r)

    def request(self, model: str, protocol: str, seconds: float, status: int = 200) -> None:
        self.requests.labels(model, protocol).inc()
        if status != 200:
            self.failures.labels(model, protocol, str(status)).inc()
        else:
            self.latency.labels(model, protocol).observe(seconds)

    def batch(self, model: str, rows: int, waits: list[float], seconds: float) -> None:
        self.batch_size.labels(model).observe(rows)
        self.compute.labels(model).observe(seconds)
        q = self.queue.labels(model)
        for w in waits:
            q.observe(w)

    def text(self) -> bytes:
        return generate_latest(self.registry)
