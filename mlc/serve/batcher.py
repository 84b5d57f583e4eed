"""Dynamic batching: the requests for one model wait in a queue; a worker thread takes
the first, gathers the ones that arrive within ``max_delay`` of it (up to ``max_batch``
rows in all), runs them as one batch padded up to the next compiled size, and hands
each request its own rows of the outputs.

``instances`` workers serve one model: while one runs a batch, the next gathers. The
model's code releases the GIL while it runs (a ctypes call into native code), so the
workers' runs overlap, and the event loop serving the network stays responsive.
A model that is not batched (fixed shapes) goes through the same queue one request
at a time.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from .protocol import InferError

log = logging.getLogger("mlc.serve")

_STOP = object()


class _Pending:
    __slots__ = ("arrays", "rows", "future", "t_enqueue")

    def __init__(self, arrays, rows):
        self.arrays, self.rows, self.future, self.t_enqueue = arrays, rows, Future(), time.perf_counter()


class Batcher:
    """Runs one model's requests on ``instances`` worker threads. ``submit(arrays)``
    returns a Future of the output arrays (InferError 500 when the model fails)."""

    def __init__(self, model, max_delay_s: float = 0.002, instances: int = 1, metrics=None):
        self.model = model
        self.max_batch = model.max_batch
        self.max_delay_s = max(0.0, max_delay_s)
        self.metrics = metrics
        self.batches = 0            # batches run, and the requests in them (for tests and logs)
        self.requests = 0
        self._queue: queue.Queue = queue.Queue()
        self._carry = None          # a request taken while gathering that did not fit the batch
        self._gather = threading.Lock()
        self._count = threading.Lock()
        self._closed = False
        self._workers = [threading.Thread(target=self._work, name=f"mlc-serve-{model.name}-{i}", daemon=True)
                         for i in range(max(1, instances))]
        for w in self._workers:
            w.start()

    def submit(self, arrays: list[np.ndarray]) -> Future:
        if self._closed:
            raise InferError(f"model '{self.model.name}' is being unloaded", 503)
        rows = arrays[0].shape[0] if self.max_batch and arrays else 1
        p = _Pending(arrays, rows)
        self._queue.put(p)
        return p.future

    def close(self, wait: bool = True) -> None:
        """Stop taking requests; the workers finish the ones queued, then end."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if wait:
            for w in self._workers:
                w.join()
            while True:   # a request that raced with close() is answered, not lost
                try:
                    p = self._queue.get_nowait()
                except queue.Empty:
                    break
                if p is not _STOP:
                    p.future.set_exception(InferError(f"model '{self.model.name}' is being unloaded", 503))

    # the workers

    def _work(self) -> None:
        while True:
            with self._gather:
                batch = self._collect()
            if batch is None:
                return
            self._run(batch)

    def _next(self, timeout=None):
        if self._carry is not None:
            p, self._carry = self._carry, None
            return p
        return self._queue.get(timeout=timeout) if timeout is not None else self._queue.get()

    def _collect(self):
        first = self._next()
        if first is _STOP:
            self._queue.put(_STOP)   # for the other workers
            return None
        batch, rows = [first], first.rows
        if not self.max_batch:
            return batch
        deadline = first.t_enqueue + self.max_delay_s
        while rows < self.max_batch:
            left = deadline - time.perf_counter()
            try:
                p = self._next(timeout=max(left, 0.0)) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if p is _STOP:
                self._queue.put(_STOP)
                break
            if rows + p.rows > self.max_batch:
                self._carry = p
                break
            batch.append(p)
            rows += p.rows
        return batch

    def _run(self, batch: list[_Pending]) -> None:
        model, t0 = self.model, time.perf_counter()
        rows = sum(p.rows for p in batch)
        try:
            if model.max_batch:
                size = model.padded_size(rows)
                arrays = []
                for k in range(len(model.inputs)):
                    parts = [p.arrays[k] for p in batch]
                    if size > rows:
                        parts.append(np.zeros((size - rows,) + parts[0].shape[1:], parts[0].dtype))
                    arrays.append(parts[0] if len(parts) == 1 else np.concatenate(parts))
                outs = model.run(arrays, size)
            else:
                size = 0
                outs = model.run(batch[0].arrays, 0)
        except Exception as e:   # the model failed: every request in the batch gets the error
            log.exception("model %s failed on a batch of %d", model.name, rows)
            err = InferError(f"model '{model.name}' failed: {type(e).__name__}: {e}", 500)
            for p in batch:
                p.future.set_exception(err)
            if self.metrics:
                self.metrics.batch(model.name, rows, [t0 - p.t_enqueue for p in batch], time.perf_counter() - t0)
            return
        t1 = time.perf_counter()
        with self._count:
            self.batches += 1
            self.requests += len(batch)
        if self.metrics:
            self.metrics.batch(model.name, rows, [t0 - p.t_enqueue for p in batch], t1 - t0)
        log.debug("batch model=%s requests=%d rows=%d padded=%d run_ms=%.3f", model.name, len(batch), rows, size,
                  (t1 - t0) * 1e3)
        start = 0
        for p in batch:
            if model.max_batch:
                mine = [o[start:start + p.rows] for o in outs] if len(batch) > 1 or size > rows else list(outs)
                start += p.rows
            else:
                mine = list(outs)
            p.future.set_result(mine)
