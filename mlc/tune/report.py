"""``mlc tune --report``: best latency against trials, per kernel, as a PNG."""
from __future__ import annotations

from ..schedule.database import TuningDB

MAX_PANELS = 11      # the kernels that matter most, plus the model estimate


def curves(db: TuningDB, target_key: str) -> tuple[list[dict], list[tuple[int, float]]]:
    """Per task: its name, weight and [(trial number, best time so far)] in measurement
    order; and the model's estimated latency (sum of weight x best) after each trial."""
    tasks = db.tasks(target_key)
    records = []
    for t in tasks:
        records += [(r.created, r.id, t.workload_key, r.median) for r in db.records(t.workload_key, target_key)]
    records.sort()
    best: dict[str, float] = {}
    per_task = {t.workload_key: {"name": t.name, "weight": t.weight, "points": []} for t in tasks}
    total_curve = []
    for n, (_, _, key, median) in enumerate(records, 1):
        if median is not None and (key not in best or median < best[key]):
            best[key] = median
            per_task[key]["points"].append((n, median))
        if len(best) == len(tasks):
            total_curve.append((n, sum(t.weight * best[t.workload_key] for t in tasks)))
    for t in per_task.values():
        t["final"] = t["points"][-1][1] if t["points"] else None
    return list(per_task.values()), total_curve


def write_report(db_path: str, target_key: str, out_png: str) -> str:
    """Plot and save; returns a one-line description of what was written."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("mlc tune --report needs matplotlib: pip install 'mlc[tune]'") from None
    with TuningDB(db_path) as db:
        tasks, total = curves(db, target_key)
    if not tasks or not any(t["points"] for t in tasks):
        raise SystemExit(f"mlc tune --report: {db_path} has no measurements for this target")
    tasks = sorted((t for t in tasks if t["points"]), key=lambda t: -t["weight"] * t["final"])[:MAX_PANELS]
    panels = len(tasks) + (1 if total else 0)
    cols = min(3, panels)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    flat = [a for row in axes for a in row]
    if total:
        ax = flat.pop(0)
        xs, ys = zip(*total)
        ax.step(xs, [y * 1e3 for y in ys], where="post", color="black")
        ax.set_title("estimated model latency", fontsize=9)
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.set_xlabel("trials")
    for ax, t in zip(flat, tasks):
        xs, ys = zip(*t["points"])
        last = total[-1][0] if total else xs[-1]
        ax.step([*xs, last], [y * 1e6 for y in (*ys, ys[-1])], where="post")
        ax.set_title(f"{t['name'][:34]} (x{int(t['weight'])})", fontsize=9)
        ax.set_ylabel("us")
        ax.set_yscale("log")
        ax.set_xlabel("trials")
    for ax in flat[len(tasks):]:
        ax.axis("off")
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    for ax in axes.flat:
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    fig.suptitle("mlc tune: best latency against trials")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return f"report: {out_png} ({len(tasks)} kernels)"
