"""Where a compiled model's time goes: ``exe.profile(*inputs)``.

The times come from the compiled code itself. A profiling build of the entry
function (``codegen.llvm``) reads CLOCK_MONOTONIC around every kernel call, and each
thread of a parallel loop records when it started and finished its share, so no
Python runs between kernels and the kernels' sum can be compared with the
model's time measured on the normal build (which pays nothing for profiling).

    report = exe.profile(x, runs=20)
    print(report)                          # per kernel, slowest first
    report.to_chrome_trace("trace.json")   # Perfetto / chrome://tracing
    report.roofline("roofline.png")        # each kernel against the machine's ceilings
"""
from __future__ import annotations

import copy
import json
import statistics
import threading
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class KernelInfo:
    """What is known of one kernel call before running it."""
    name: str
    ops: list[str]          # the graph ops fused into it
    schedule: str           # "default" or "tuned"
    flops: int              # ir.cost: arithmetic operations
    bytes: int              # ir.cost: compulsory memory traffic


@dataclass
class KernelProfile:
    info: KernelInfo
    times: list[float] = field(default_factory=list)   # seconds, one per run

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def gflops(self) -> float:
        return self.info.flops / self.median / 1e9 if self.median > 0 else 0.0

    @property
    def gbs(self) -> float:
        return self.info.bytes / self.median / 1e9 if self.median > 0 else 0.0

    @property
    def intensity(self) -> float:
        return self.info.flops / self.info.bytes if self.info.bytes else 0.0


@dataclass
class ProfileReport:
    model: str
    target: str
    kernels: list[KernelProfile]             # in call order
    model_times: list[float]                 # seconds per call of the normal (unprofiled) build
    peak_gflops: float                       # the target's ceilings (0: unknown)
    bandwidth_gbs: float
    spans: list = field(default_factory=list, repr=False)   # one run: (lane, kernel index, start s, end s)

    @property
    def model_time(self) -> float:
        return statistics.median(self.model_times)

    @property
    def kernel_time(self) -> float:
        """The sum of the kernels' median times."""
        return sum(k.median for k in self.kernels)

    def slowest(self, n: int | None = None) -> list[KernelProfile]:
        return sorted(self.kernels, key=lambda k: -k.median)[:n]

    def __str__(self) -> str:
        total = self.kernel_time or 1.0
        gf = sum(k.info.flops for k in self.kernels) / self.model_time / 1e9 if self.model_time else 0.0
        lines = [f"profile of {self.model} on {self.target}: {len(self.model_times)} runs",
                 f"model {self.model_time * 1e3:.3f} ms (median, normal build), kernels' sum "
                 f"{self.kernel_time * 1e3:.3f} ms, {gf:.1f} GFLOP/s overall"
                 + (f"; ceilings {self.peak_gflops:.0f} GFLOP/s, {self.bandwidth_gbs:.1f} GB/s"
                    if self.peak_gflops else ""),
                 f"{'kernel':34s} {'calls':>5s} {'median us':>10s} {'share':>6s} {'GFLOP/s':>8s} {'%peak':>6s} "
                 f"{'GB/s':>7s} {'sched':>7s}  ops"]
        calls: dict[str, int] = {}
        for k in self.kernels:
            calls[k.name] = calls.get(k.name, 0) + 1
        for k in self.slowest():
            peak = f"{100 * k.gflops / self.peak_gflops:5.1f}%" if self.peak_gflops and k.info.flops else "     -"
            lines.append(f"{k.name[:34]:34s} {calls[k.name]:5d} {k.median * 1e6:10.1f} {100 * k.median / total:5.1f}% "
                         f"{k.gflops:8.1f} {peak} {k.gbs:7.2f} {k.info.schedule:>7s}  {' '.join(k.info.ops)}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"model": self.model, "target": self.target, "model_ms": self.model_time * 1e3,
                "kernels_ms": self.kernel_time * 1e3, "peak_gflops": self.peak_gflops,
                "bandwidth_gbs": self.bandwidth_gbs,
                "kernels": [{"name": k.name, "ops": k.info.ops, "schedule": k.info.schedule, "flops": k.info.flops,
                             "bytes": k.info.bytes, "median_us": k.median * 1e6, "gflops": k.gflops, "gbs": k.gbs}
                            for k in self.kernels]}

    def to_chrome_trace(self, path) -> None:
        """The trace-event format (Perfetto, chrome://tracing): the calling thread's lane
        holds one slice per kernel call; each thread of a parallel loop has a lane with
        its share of every parallel kernel. Times are of the median run."""
        events = [{"name": "process_name", "ph": "M", "pid": 0, "args": {"name": f"mlc {self.model}"}}]
        lanes = sorted({lane for lane, *_ in self.spans})
        for lane in lanes:
            label = "calling thread" if lane == 0 else f"worker thread {lane - 1}"
            events.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": lane, "args": {"name": label}})
        for lane, n, start, end in self.spans:
            k = self.kernels[n]
            events.append({"name": k.name, "cat": "kernel", "ph": "X", "pid": 0, "tid": lane,
                           "ts": start * 1e6, "dur": max(0.0, end - start) * 1e6,
                           "args": {"ops": " ".join(k.info.ops), "schedule": k.info.schedule,
                                    "flops": k.info.flops, "bytes": k.info.bytes}})
        with open(path, "w") as f:
            json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)

    def roofline(self, path, top: int = 8) -> None:
        """Each kernel as a point (arithmetic intensity, GFLOP/s), sized by its share of
        the time, under the ceilings min(peak, bandwidth x intensity); the ``top``
        slowest are labelled."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("the roofline picture needs matplotlib: pip install matplotlib") from None
        pts = [k for k in self.kernels if k.info.flops and k.median > 0]
        if not pts:
            raise ValueError(f"{self.model}: no kernel does arithmetic, so there is no roofline to draw")
        total = self.kernel_time or 1.0
        fig, ax = plt.subplots(figsize=(8, 5.5))
        xs = [k.intensity for k in pts]
        lo, hi = min(xs) / 2, max(xs) * 2
        if self.peak_gflops and self.bandwidth_gbs:
            ridge = self.peak_gflops / self.bandwidth_gbs
            grid = np.geomspace(min(lo, ridge / 4), max(hi, ridge * 4), 200)
            ax.plot(grid, np.minimum(self.peak_gflops, self.bandwidth_gbs * grid), "k-", lw=1.5,
                    label=f"ceiling: {self.peak_gflops:.0f} GFLOP/s, {self.bandwidth_gbs:.1f} GB/s")
        ax.scatter(xs, [k.gflops for k in pts], s=[20 + 600 * k.median / total for k in pts], alpha=0.6,
                   c=["tab:orange" if k.info.schedule == "tuned" else "tab:blue" for k in pts])
        for k in sorted(pts, key=lambda k: -k.median)[:top]:
            ax.annotate(k.name, (k.intensity, k.gflops), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (operations per byte)")
        ax.set_ylabel("GFLOP/s")
        ax.set_title(f"{self.model} on {self.target}: {self.model_time * 1e3:.2f} ms")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def profile(exe, args, runs: int, warmup: int, infos: list[KernelInfo], code, ceilings, target: str) -> ProfileReport:
    """Run ``exe`` (the normal build) and a copy of it over ``code`` (its profiling build)
    in turn, ``runs`` times each after ``warmup`` calls of both."""
    if runs < 1:
        raise ValueError(f"profile: runs must be >= 1, got {runs}")
    profiled = copy.copy(exe)
    profiled._code = code
    profiled._local = threading.local()   # its own workspace
    kernels = [KernelProfile(i) for i in infos]
    model_times, per_run = [], []
    for n in range(warmup + runs):
        t0 = time.perf_counter()
        exe(*args)
        t = time.perf_counter() - t0
        profiled(*args)
        calls, threads = code.profile_records(len(infos))
        if n < warmup:
            continue
        model_times.append(t)
        per_run.append((calls, threads))
        for k, (start, end) in zip(kernels, calls):
            k.times.append((end - start) * 1e-9)
    # the trace shows the run whose kernels' sum is the median
    sums = [int((c[:, 1] - c[:, 0]).sum()) for c, _ in per_run]
    calls, threads = per_run[sorted(range(len(sums)), key=sums.__getitem__)[len(sums) // 2]]
    origin = int(calls[:, 0].min()) if len(calls) else 0
    spans = [(0, n, (s - origin) * 1e-9, (e - origin) * 1e-9) for n, (s, e) in enumerate(calls)]
    for n, per_thread in enumerate(threads):
        for t, (s, e) in enumerate(per_thread):
            if s:
                spans.append((1 + t, n, (s - origin) * 1e-9, (e - origin) * 1e-9))
    peak, bandwidth = ceilings
    return ProfileReport(exe.name, target, kernels, model_times, peak, bandwidth, spans)
