"""The dynamic batcher on a stand-in model: which requests run together, padding to the
compiled sizes, results split back to their owners, a failing model, and the drain."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from mlc.serve.batcher import Batcher
from mlc.serve.models import Model, batch_sizes
from mlc.serve.protocol import InferError, TensorSpec


class Gated:
    """A model computing y = 2x + 1 per row; each call waits for ``gate`` after saying it started."""

    def __init__(self, max_batch=8, fail_on=None):
        self.calls, self.started, self.gate = [], threading.Event(), threading.Event()
        self.fail_on = fail_on

        def run(arrays):
            (x,) = arrays
            self.calls.append(x.shape[0])
            self.started.set()
            assert self.gate.wait(30)
            if self.fail_on is not None and x.shape[0] == self.fail_on:
                raise RuntimeError("stand-in failure")
            return [2 * x + 1]
        self.model = Model("gated", "1", "test", "", [TensorSpec("x", "FP32", (-1, 3))],
                           [TensorSpec("y", "FP32", (-1, 3))], max_batch, {b: run for b in batch_sizes(max_batch)})


def rows(n, start):
    return np.arange(start * 3, (start + n) * 3, dtype=np.float32).reshape(n, 3)


def test_batch_sizes():
    assert batch_sizes(1) == [1]
    assert batch_sizes(8) == [1, 2, 4, 8]
    assert batch_sizes(12) == [1, 2, 4, 8, 12]


def test_queued_requests_run_as_one_padded_batch():
    g = Gated()
    b = Batcher(g.model, max_delay_s=0.001)
    try:
        first = b.submit([rows(1, 0)])
        assert g.started.wait(30)             # the worker is busy with the first request
        later = [b.submit([rows(1, i)]) for i in range(1, 6)]   # five requests queue meanwhile
        g.gate.set()
        assert first.result(30)[0].tolist() == (2 * rows(1, 0) + 1).tolist()
        for i, f in enumerate(later, 1):
            (y,) = f.result(30)
            np.testing.assert_array_equal(y, 2 * rows(1, i) + 1)
        assert g.calls == [1, 8]              # 5 rows padded to the compiled size 8
        assert (b.batches, b.requests) == (2, 6)
    finally:
        b.close()


def test_a_request_that_does_not_fit_waits_for_the_next_batch():
    g = Gated()
    b = Batcher(g.model, max_delay_s=0.001)
    try:
        first = b.submit([rows(2, 0)])
        assert g.started.wait(30)
        later = [b.submit([rows(3, 10 * i)]) for i in range(1, 4)]   # 3 + 3 fit in 8, the third does not
        g.gate.set()
        first.result(30)
        for i, f in enumerate(later, 1):
            np.testing.assert_array_equal(f.result(30)[0], 2 * rows(3, 10 * i) + 1)
        assert g.calls == [2, 8, 4]
    finally:
        b.close()


def test_a_failing_batch_fails_its_requests_only():
    g = Gated(fail_on=4)
    g.gate.set()
    b = Batcher(g.model, max_delay_s=0.0)
    try:
        with pytest.raises(InferError, match="model 'gated' failed: RuntimeError: stand-in failure") as e:
            b.submit([rows(3, 0)]).result(30)
        assert e.value.status == 500
        np.testing.assert_array_equal(b.submit([rows(2, 0)]).result(30)[0], 2 * rows(2, 0) + 1)
    finally:
        b.close()


def test_close_finishes_queued_requests_then_refuses():
    g = Gated()
    b = Batcher(g.model, max_delay_s=0.0, instances=2)
    futures = [b.submit([rows(1, i)]) for i in range(20)]
    g.gate.set()
    b.close()
    for i, f in enumerate(futures):
        np.testing.assert_array_equal(f.result(0)[0], 2 * rows(1, i) + 1)
    assert sum(g.calls) >= 20 and b.requests == 20
    with pytest.raises(InferError, match="being unloaded"):
        b.submit([rows(1, 0)])


def test_server_batches_concurrent_requests(model_dir):
    """Through the server (two instances of the model): with a wide batching window,
    concurrent clients' requests share batches (the batch-size metric sees batches of
    more than one row), and each client gets its own rows back."""
    from concurrent.futures import ThreadPoolExecutor

    from conftest import mlp_ref, require_serve_libraries, start_server
    require_serve_libraries()
    tg = pytest.importorskip("tritonclient.grpc", reason="the test talks to the server with tritonclient[grpc]")
    s = start_server([model_dir["mlp"]], max_batch=8, max_delay_ms=200, instances=2, http_port=-1)
    try:
        def client(i):
            c = tg.InferenceServerClient(f"127.0.0.1:{s.ports['grpc']}")
            x, k = rows(1, i), np.array([[i, -i]], np.int64)
            ins = [tg.InferInput("x", [1, 6], "FP32"), tg.InferInput("k", [1, 2], "INT64")]
            ins[0].set_data_from_numpy(np.concatenate([x, x], 1))
            ins[1].set_data_from_numpy(k)
            r = c.infer("mlp", ins)
            np.testing.assert_allclose(r.as_numpy("y"), mlp_ref(np.concatenate([x, x], 1), k)[0], rtol=1e-5)
            np.testing.assert_array_equal(r.as_numpy("s"), k * 2 + 1)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(client, range(32)))
        _, batcher = s.server.service.repository.get("mlp")
        assert batcher.requests == 32 and batcher.batches < 32
        text = s.server.metrics.text().decode()
        count = [ln for ln in text.splitlines() if ln.startswith('mlc_serve_batch_size_count{model="mlp"}')]
        ones = [ln for ln in text.splitlines() if ln.startswith('mlc_serve_batch_size_bucket{le="1.0",model="mlp"}')]
        assert float(count[0].split()[-1]) == batcher.batches
        assert float(ones[0].split()[-1]) < batcher.batches   # some batch held more than one row
    finally:
        s.stop()
