"""A bounded load test of `mlc serve` on loopback.

A small CNN with a dynamic batch dimension is served: 3x32x32 images, two 3x3
convolutions (16 and 32 channels) with max pooling, then a VGG-style classifier of two
fully connected 2048-wide layers and a 10-way output. The classifier's 32 MB of weights
make one image a matrix-vector product bound by memory, which a batch reads once for
all its rows: the case dynamic batching is for. It is served by `python -m mlc.serve`
in a process of its own, once per configuration:

  mlc, batching     --max-batch 16 --max-delay-ms 2 (compiled for 1, 2, 4, 8, 16)
  mlc, no batching  --max-batch 1
  onnxruntime, batching / no batching: the same server with --backend onnxruntime,
                    ONNX Runtime's CPU session in place of mlc's code (the baseline)

and loaded by --clients concurrent clients (default 64; one asyncio process, aiohttp,
each request one image as raw bytes through the binary tensor extension) for --seconds
(default 30). Every answer is checked against ONNX Runtime's output for that image; a
wrong answer, a failed request or a timeout counts as an error. Prints throughput,
p50/p99 latency and errors per configuration, and the batching speed-up.

    python benchmarks/bench_serve.py --seconds 10
    python benchmarks/bench_serve.py --configs mlc-batch,mlc-nobatch --clients 32
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

CONFIGS = {
    "mlc-batch": ["--max-batch", "16", "--max-delay-ms", "2"],
    "mlc-nobatch": ["--max-batch", "1"],
    "ort-batch": ["--backend", "onnxruntime", "--max-batch", "16", "--max-delay-ms", "2"],
    "ort-nobatch": ["--backend", "onnxruntime", "--max-batch", "1"],
}


def make_cnn(path: str) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (w(16, 3, 3, 3), "w1"), (np.zeros(16, np.float32), "b1"), (w(32, 16, 3, 3), "w2"),
        (np.zeros(32, np.float32), "b2"), (w(2048, 2048).T.copy(), "fc1"), (np.zeros(2048, np.float32), "fb1"),
        (w(2048, 2048).T.copy(), "fc2"), (np.zeros(2048, np.float32), "fb2"), (w(10, 2048).T.copy(), "fc3"))]
    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p2"], ["f"]),
             helper.make_node("MatMul", ["f", "fc1"], ["h"]), helper.make_node("Add", ["h", "fb1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["hr"]),
             helper.make_node("MatMul", ["hr", "fc2"], ["h2"]), helper.make_node("Add", ["h2", "fb2"], ["h2b"]),
             helper.make_node("Relu", ["h2b"], ["h2r"]),
             helper.make_node("MatMul", ["h2r", "fc3"], ["logits"])]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def start_server(model: str, extra: list[str]):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "mlc.serve", model, "--host", "127.0.0.1", "--http-port", "0",
                          "--grpc-port", "-1", "--metrics-port", "0", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    port, metrics, seen = None, None, []
    for line in p.stdout:
        seen.append(line)
        m = re.search(r"HTTP http://[\d.]+:(\d+).*metrics http://[\d.]+:(\d+)", line)
        if m:
            port, metrics = int(m.group(1)), int(m.group(2))
        if "mlc serve: ready" in line:
            return p, port, metrics
        if "not ready" in line:
            break
    p.kill()
    raise SystemExit("the server did not start:\n" + "".join(seen))


def batch_totals(metrics_port: int) -> tuple[float, float]:
    """(rows run, batches run) so far, from the server's batch-size histogram."""
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as r:
        text = r.read().decode()
    found = {}
    for line in text.splitlines():
        for key in ("sum", "count"):
            if line.startswith(f'mlc_serve_batch_size_{key}{{model="cnn"}}'):
                found[key] = float(line.split()[-1])
    return found.get("sum", 0.0), found.get("count", 0.0)


async def load(port: int, images: np.ndarray, want: np.ndarray, clients: int, seconds: float):
    import aiohttp
    url = f"http://127.0.0.1:{port}/v2/models/cnn/infer"
    bodies = []
    for img in images:
        raw = img[None].tobytes()
        head = json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                       "parameters": {"binary_data_size": len(raw)}}],
                           "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
        bodies.append((head + raw, {"Inference-Header-Content-Length": str(len(head)),
                                    "Content-Type": "application/octet-stream"}))
    latencies, errors = [], [0]
    stop_at = time.perf_counter() + seconds

    async def client(session, c):
        i = c
        while time.perf_counter() < stop_at:
            body, headers = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    raw = await r.read()
                    ok = r.status == 200
                    if ok:
                        n = int(r.headers["Inference-Header-Content-Length"])
                        got = np.frombuffer(raw[n:], "<f4")
                        ok = got.shape == (10,) and np.allclose(got, want[i % len(bodies)], rtol=1e-3, atol=1e-4)
            except (aiohttp.ClientError, asyncio.TimeoutError, KeyError, ValueError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors[0] += 1
            i += clients

    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session, c) for c in range(clients)))
        wall = time.perf_counter() - t0
    return np.array(latencies), errors[0], wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="load per configuration (default 30)")
    ap.add_argument("--clients", type=int, default=64, help="concurrent clients (default 64)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, among {', '.join(CONFIGS)}")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring (default 2)")
    args = ap.parse_args(argv)
    try:
        import aiohttp  # noqa: F401
        import onnxruntime as ort
    except ImportError as e:
        raise SystemExit(f"bench_serve needs the serve and bench extras: {e}")
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in names if c not in CONFIGS]
    if bad:
        raise SystemExit(f"unknown configuration(s) {bad}; choose among {', '.join(CONFIGS)}")
    tmp = tempfile.mkdtemp(prefix="bench_serve_")
    model = os.path.join(tmp, "cnn.onnx")
    make_cnn(model)
    images = np.random.default_rng(1).standard_normal((16, 3, 32, 32)).astype(np.float32)
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"image": images})[0]
    print(f"bench_serve: {args.clients} clients, {args.seconds:g} s per configuration, CNN 3x32x32 -> 2 x FC 2048 -> 10 "
          f"(batch dimension dynamic), one image per request, {os.cpu_count()} CPUs")
    rows = {}
    for name in names:
        p, port, metrics = start_server(model, CONFIGS[name])
        try:
            if args.warmup > 0:
                asyncio.run(load(port, images, want, args.clients, args.warmup))
            rows0, batches0 = batch_totals(metrics)
            lat, errors, wall = asyncio.run(load(port, images, want, args.clients, args.seconds))
            rows1, batches1 = batch_totals(metrics)
            mean_batch = (rows1 - rows0) / max(1.0, batches1 - batches0)
        finally:
            p.send_signal(signal.SIGTERM)
            out, _ = p.communicate(timeout=120)
            if p.returncode != 0:
                print(out)
                print(f"  the server of {name} exited {p.returncode}")
        n = len(lat)
        rows[name] = (n / wall, *(np.percentile(lat, [50, 99]) * 1e3 if n else (float("nan"),) * 2), errors, n,
                      mean_batch)
        print(f"  {name:12s} {rows[name][0]:8.1f} req/s  p50 {rows[name][1]:7.2f} ms  p99 {rows[name][2]:7.2f} ms  "
              f"errors {errors}  ({n} answered, {mean_batch:.1f} rows per batch)", flush=True)
    print()
    print("| configuration | requests/s | p50 ms | p99 ms | p99/p50 | errors | answered | rows/batch |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (tput, p50, p99, errors, n, mean_batch) in rows.items():
        print(f"| {name} | {tput:.1f} | {p50:.2f} | {p99:.2f} | {p99 / p50:.1f} | {errors} | {n} | {mean_batch:.1f} |")
    for engine in ("mlc", "ort"):
        a, b = rows.get(f"{engine}-batch"), rows.get(f"{engine}-nobatch")
        if a and b:
            print(f"{engine}: batching gives {a[0] / b[0]:.2f}x the throughput of no batching")
    if "mlc-batch" in rows and "ort-batch" in rows:
        print(f"mlc / onnxruntime with batching: {rows['mlc-batch'][0] / rows['ort-batch'][0]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
