"""The auto-tuner: measure schedules of a model's kernels and keep the best in a
tuning database.

One tuning job:

1. ``extract_tasks``: compile the model to tensor-level kernels; equal kernels
   (same text, same target) form one task, weighted by how often the model
   runs it.
2. Each task's default schedule is measured first. Its outputs are the
   reference every candidate must reproduce before its time is stored.
3. Rounds: the task with the largest share of the estimated model latency
   (weight x best time, damped when it stops improving) gets a batch of
   candidates. A cost model (gradient-boosted trees from scikit-learn over
   loop-nest features) ranks a random pool of untried candidates; most of the
   batch is its best guesses, the rest random picks (exploration).
4. Candidates are compiled here and run by a runner (a worker process on this
   machine, or an ``mlc rpc-server`` on the device), which survives a crash or a
   hang. Each result goes to the database at once, so a tuner killed at any
   point resumes from what was measured.
"""
from __future__ import annotations

import math
import random
import statistics
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..ir.tensor import Kernel
from ..passes.loops import lower_loops
from ..schedule.default import schedule_kernel
from ..schedule.primitives import ScheduleError
from ..target import Target
from ..schedule.database import TuningDB, record_key, schedule_hash, workload_key
from .measure import build_kernel
from .space import SearchSpace, config_id

BATCH = 8                 # candidates per round
POOL = 32                 # untried candidates the cost model ranks per round
EXPLORE = 0.25            # share of each batch picked at random
MIN_TRAIN = 8             # measurements before the cost model is trusted
CONFIRM = 3               # fastest schedules per task measured again at the end
RESUME_TRAIN = 24         # stored measurements per task the cost model retrains on when resuming
DEFAULT_TRIALS = 200      # the trial limit when neither trials nor a time budget is given


def trial_limit(trials: int | None, time_budget: float | None) -> float:
    """The measurements a run may make: ``trials`` when given; no limit when only a
    time budget is (the time is the limit); DEFAULT_TRIALS when neither is."""
    if trials is not None:
        return trials
    return math.inf if time_budget is not None else DEFAULT_TRIALS


class TuneError(RuntimeError):
    """Tuning cannot go on; the message says why."""


@dataclass
class Task:
    name: str
    kernel: Kernel
    key: str
    weight: int
    space: SearchSpace    # (a GpuSearchSpace for a cuda target)
    inputs: list = field(default_factory=list)
    reference: list | None = None
    default_time: float | None = None
    default_schedule: list | None = None
    best_time: float | None = None
    best_schedule: list | None = None
    trials: int = 0
    stale_rounds: int = 0           # rounds since the last improvement
    tried: set = field(default_factory=set)             # config ids
    tried_schedules: set = field(default_factory=set)   # schedule hashes: knobs a kernel ignores give equal schedules
    traces: dict = field(default_factory=dict)          # config id -> the rules' schedule for it
    built: dict = field(default_factory=dict)           # config id -> its Schedule, until finalized
    history: list = field(default_factory=list)    # (trial number, best time so far)

    @property
    def exhausted(self) -> bool:
        return len(self.tried) >= len(self.space)

    @property
    def share(self) -> float:
        return self.weight * (self.best_time or 0.0)


def extract_tasks(graph, target: Target, opt_level: int = 2) -> list[Task]:
    """The distinct kernels of a model, weighted by how many times one call runs each."""
    from ..driver import Compiled
    from ..passes.manager import PassManager
    c = Compiled(graph, target, PassManager(opt_level))
    tasks: dict[str, Task] = {}

    def visit(c: Compiled, weight: int) -> None:
        bodies = iter(c.bodies)   # each control op's bodies, in call order (Compiled._compile_bodies)
        for call in c.lowered.calls:
            if call.kernel.kind == "collective":   # a runtime call: nothing to schedule
                continue
            if call.kernel.kind == "control":   # its bodies' kernels, weighted by the steps they run
                trip = call.kernel.attrs.get("length", 1) or 1   # a while_loop's is unknown: once
                for _ in call.kernel.bodies():
                    visit(next(bodies), weight * trip)
                continue
            key = workload_key(call.kernel, target)
            if key in tasks:
                tasks[key].weight += weight
            else:
                tasks[key] = Task(call.kernel.name, call.kernel, key, weight, search_space(call.kernel, target))
    visit(c, 1)
    return list(tasks.values())


def search_space(kernel: Kernel, target: Target):
    """The knob space of a kernel: the GPU rules' (``gpu_space``) for a cuda target."""
    if target.kind == "cuda":
        from .gpu_space import GpuSearchSpace
        return GpuSearchSpace(kernel, target)
    return SearchSpace(kernel, target)


def check_device(target: Target | str) -> None:
    """TuneError unless this machine has a CUDA device of ``target``'s architecture to
    time candidates on; the message says what is missing and what to do instead.
    (A name: the target "cuda", which is whatever device there is.)"""
    from ..runtime.cuda import CudaUnavailable, cupy_module
    name = target if isinstance(target, str) else target.name
    instead = (f"MLC_CUDA_EMULATE=1 runs every {name} candidate in the CPU emulation instead and checks its "
               "results (its times do not rank GPU speed), or measure on a GPU machine with `mlc rpc-server` there "
               "and `--runner rpc://HOST:PORT`")
    try:
        cupy_module()
    except CudaUnavailable as e:
        raise TuneError(f"tuning for {name} times every candidate on a CUDA device, and none is usable here: "
                        f"{str(e).split('; ')[0]}. {instead}") from None
    if isinstance(target, str):
        return
    device = Target.get("cuda")
    if device.arch != target.arch:
        raise TuneError(f"tuning for {target.name} ({target.arch}) needs a device of that architecture; this one "
                        f"is {device.arch}: tune for --target cuda (this device)")


def emulation_warning(target: Target) -> str:
    return (f"MLC_CUDA_EMULATE=1: the {target.name} candidates run in the CPU emulation, which checks each one's "
            "results but whose times do not rank GPU speed; the records are stored as emulated "
            f"(target key '{record_key(target, True)}'), which only compiles under MLC_CUDA_EMULATE=1 read: "
            "tune on a device for GPU timings")


def example_inputs(func, seed: int = 0) -> list[np.ndarray]:
    """Inputs for measuring a kernel: random floats, zero integers (always valid
    indices), random booleans."""
    rng = np.random.default_rng(seed)
    out = []
    for b in func.inputs:
        dt = b.dtype
        if dt.is_float:
            out.append(rng.uniform(-1, 1, b.shape).astype(dt.np))
        elif dt.is_bool:
            out.append(rng.random(b.shape) < 0.5)
        else:
            out.append(np.zeros(b.shape, dt.np))
    return out


def outputs_match(got, want) -> str | None:
    """None when every output matches the default schedule's, else what differs."""
    if got is None or len(got) != len(want):
        return "no outputs"
    for n, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            return f"output {n} has shape {g.shape}, expected {w.shape}"
        if w.dtype.kind == "f":
            scale = float(np.max(np.abs(w[np.isfinite(w)]), initial=1.0))
            if not np.allclose(g, w, rtol=1e-3, atol=1e-4 * scale, equal_nan=True):
                err = float(np.nanmax(np.abs(g.astype(np.float64) - w)))
                return f"wrong result: output {n} differs from the default schedule's by up to {err:.3g}"
        elif not np.array_equal(g, w):
            return f"wrong result: output {n} differs from the default schedule's"
    return None


class CostModel:
    """Predicts log(time / default time) from loop-nest features, with gradient-boosted
    trees (scikit-learn); one model learns from every task of the job."""

    def __init__(self):
        try:
            from sklearn.ensemble import GradientBoostingRegressor
        except ImportError:
            raise ImportError("mlc tune's cost model needs scikit-learn: pip install 'mlc[tune]'") from None
        self._make = lambda: GradientBoostingRegressor(n_estimators=80, max_depth=3, learning_rate=0.1,
                                                        subsample=0.9, random_state=0)
        self.x: list[np.ndarray] = []
        self.y: list[float] = []
        self.model = None
        self._fitted_on = 0

    def add(self, feats: np.ndarray, relative_time: float) -> None:
        self.x.append(feats)
        self.y.append(float(np.log(relative_time)))

    def predict(self, feats: list[np.ndarray]) -> np.ndarray | None:
        if len(self.y) < MIN_TRAIN:
            return None
        if self.model is None or len(self.y) >= self._fitted_on + BATCH:
            self.model = self._make().fit(np.array(self.x), np.array(self.y))
            self._fitted_on = len(self.y)
        return self.model.predict(np.array(feats))


@dataclass
class Candidate:
    config: dict
    schedule: list
    func: object
    feats: np.ndarray


class Tuner:
    """Tunes the tasks of one model for one target into a database.

    ``runner``: anything with ``measure(build, inputs) -> MeasureResult`` (see
    ``mlc.tune.runner`` / ``mlc.tune.rpc``). ``progress(tuner, event)`` is called
    after every measurement and round (the CLI's live view)."""

    def __init__(self, tasks: list[Task], target: Target, db: TuningDB, runner, seed: int = 0, progress=None,
                 emulated: bool = False):
        self.tasks = tasks
        self.target = target
        # a cuda target under MLC_CUDA_EMULATE=1: candidates built as their CPU emulation,
        # records stored under the emulated key (never read as GPU measurements)
        self.emulated = emulated
        self.record_key = record_key(target, emulated)
        self.db = db
        self.runner = runner
        self.rng = random.Random(seed)
        self.model = CostModel()
        self.progress = progress or (lambda tuner, event: None)
        self.trials = 0
        self.started = time.monotonic()
        self.stopped_by = None
        self._resume()

    # ------------------------------------------------------------------ state
    def _resume(self) -> None:
        """Load what the database knows: tried schedules are not measured again, the best
        so far stands, and the latest successful measurements of each task train the cost
        model (each one is a schedule to replay for its features: a few per task keep a
        resume quick on a large database)."""
        for t in self.tasks:
            self.db.set_task(t.key, self.record_key, t.name, weight=t.weight)
            known = self.db.task(t.key, self.record_key)
            t.default_time = known.default_median if known else None
            train = {}
            for rec in self.db.records(t.key, self.record_key):
                h = schedule_hash(rec.schedule)
                t.tried_schedules.add(h)
                if rec.ok:
                    train.pop(h, None)
                    train[h] = rec          # latest last
            for rec in list(train.values())[-RESUME_TRAIN:] if t.default_time else []:
                try:
                    func = lower_loops(schedule_kernel(t.kernel, self.target, rec.schedule))
                except ScheduleError:
                    continue
                self.model.add(t.space.features(func), rec.median / t.default_time)
            best = self.db.best(t.key, self.record_key)
            if best is not None:
                t.best_time, t.best_schedule = best.median, best.schedule

    def _schedule_of(self, t: Task, config: dict) -> list:
        """The rules' schedule (trace) for a knob assignment ([] when the rules refuse it),
        once; the Schedule itself is kept until ``_candidate`` finalizes it."""
        key = config_id(config)
        if key not in t.traces:
            try:
                built = t.space.schedule(config)
                t.traces[key] = built.trace
                t.built[key] = built
            except ScheduleError:
                t.traces[key] = None
        return t.traces[key] or []

    def _candidate(self, t: Task, config: dict) -> Candidate:
        schedule = self._schedule_of(t, config)
        built = t.built.pop(config_id(config), None)
        func = lower_loops(built.finalize() if built is not None else schedule_kernel(t.kernel, self.target, schedule))
        return Candidate(config, schedule, func, t.space.features(func))

    @property
    def estimated_latency(self) -> float:
        """Sum over kernels of weight x best time (kernel time only, no call overhead)."""
        return sum(t.weight * (t.best_time or t.default_time or 0.0) for t in self.tasks)

    @property
    def default_latency(self) -> float:
        return sum(t.weight * (t.default_time or 0.0) for t in self.tasks)

    # ------------------------------------------------------------------ measuring
    def _measure(self, t: Task, cand: Candidate, is_default: bool = False):
        """Run one candidate, check it against the default's outputs, store the record.
        Returns the median time, or the error (a string) when it failed."""
        self.trials += 1
        t.trials += 1
        t.tried.add(config_id(cand.config))
        t.tried_schedules.add(schedule_hash(cand.schedule))
        try:
            build = build_kernel(cand.func, self.target, emulate=self.emulated)
        except Exception as e:     # noqa: BLE001 -- a candidate that fails to compile costs one trial
            self.db.add(t.key, self.record_key, cand.schedule, None, f"compile failed: {e}", str(t.kernel))
            self.progress(self, "measured")
            return f"compile failed: {e}"
        if not t.inputs:
            t.inputs = example_inputs(cand.func)
        res = self.runner.measure(build, t.inputs)
        error = res.error
        if error is None and not is_default:
            error = outputs_match(res.outputs, t.reference)
        times = res.times if error is None else None
        self.db.add(t.key, self.record_key, cand.schedule, times, error, str(t.kernel))
        if error is not None:
            self.progress(self, "measured")
            return error
        median = res.median
        if is_default:
            t.reference = res.outputs
            t.default_time, t.default_schedule = median, cand.schedule
            self.db.set_task(t.key, self.record_key, t.name, weight=t.weight, default_median=median)
        if t.default_time:
            self.model.add(cand.feats, median / t.default_time)
        if t.best_time is None or median < t.best_time:
            if t.best_time is not None:
                t.stale_rounds = 0
            t.best_time, t.best_schedule = median, cand.schedule
        t.history.append((self.trials, t.best_time))
        self.progress(self, "measured")
        return median

    def _measure_default(self, t: Task, twice: bool = True) -> None:
        cand = self._candidate(t, {})
        error = self._measure(t, cand, is_default=True)
        if t.reference is None:
            raise TuneError(f"the default schedule of kernel {t.name} failed to run ({error}); nothing to compare "
                            "candidates with, so it cannot be tuned (a larger --timeout?)")
        # the reference time scales everything the tuner learns: one disturbed
        # measurement on a busy machine must not set it, so it is the median of two
        if twice:
            self._remeasure(t, cand.schedule, cand.func)

    def _remeasure(self, t: Task, schedule: list, func) -> None:
        """Time a schedule measured before once more (one trial; no output check: its
        outputs were checked the first time) and store it; the database ranks a schedule,
        the default included, by the median of its measurements."""
        res = self.runner.measure(build_kernel(func, self.target, emulate=self.emulated),
                                  t.inputs or example_inputs(func), want_outputs=False)
        self.trials += 1
        t.trials += 1
        self.db.add(t.key, self.record_key, schedule, res.times if res.error is None else None, res.error,
                    str(t.kernel))
        medians = [r.median for r in self.db.records(t.key, self.record_key)
                   if r.ok and r.schedule == t.default_schedule]
        if medians:
            t.default_time = statistics.median(medians)
            self.db.set_task(t.key, self.record_key, t.name, weight=t.weight, default_median=t.default_time)
        best = self.db.best(t.key, self.record_key)
        if best is not None:
            t.best_time, t.best_schedule = best.median, best.schedule
            t.history.append((self.trials, t.best_time))
        self.progress(self, "measured")

    def _pick_task(self) -> Task | None:
        live = [t for t in self.tasks if not t.exhausted]
        if not live:
            return None
        return max(live, key=lambda t: t.share * (0.6 ** t.stale_rounds) * (1.0 if t.trials else 1e9))

    def _batch(self, t: Task, n: int) -> list[Candidate]:
        pool, seen = [], set(t.tried_schedules)
        for config in t.space.sample(POOL, self.rng, exclude=t.tried):
            h = schedule_hash(self._schedule_of(t, config))
            if h in seen or not self._schedule_of(t, config):
                t.tried.add(config_id(config))     # the same loops as a measured candidate, or no schedule
                t.built.pop(config_id(config), None)
                continue
            seen.add(h)
            try:
                pool.append(self._candidate(t, config))
            except ScheduleError:
                t.tried.add(config_id(config))
        if not pool:
            return []
        scores = self.model.predict([c.feats for c in pool])
        if scores is None:
            self.rng.shuffle(pool)
            return pool[:n]
        ranked = [pool[i] for i in np.argsort(scores)]
        n_explore = max(1, int(n * EXPLORE))
        chosen = ranked[:n - n_explore]
        rest = ranked[n - n_explore:]
        chosen += self.rng.sample(rest, min(n_explore, len(rest)))
        return chosen

    # ------------------------------------------------------------------ the loop
    def run(self, trials: float, time_budget: float | None = None) -> None:
        """Measure until ``trials`` measurements were made in this run (``math.inf``: no
        limit), the time budget (seconds) is spent, the space is exhausted, or Ctrl-C
        (then it stops cleanly: everything measured is in the database already)."""
        deadline = None if time_budget is None else self.started + time_budget
        out_of_time = lambda: deadline is not None and time.monotonic() >= deadline
        reserve = min(CONFIRM * len(self.tasks), trials // 5)     # measurements kept for confirming
        try:
            for t in sorted(self.tasks, key=lambda t: -t.weight):
                if self.trials >= trials or out_of_time():
                    break
                self._measure_default(t, twice=self.trials + 2 <= trials)
            self.progress(self, "round")
            # keep a tenth of the time budget, like a fifth of the trials, for confirming
            search_until = None if time_budget is None else self.started + 0.9 * time_budget
            self._search(trials - reserve,
                         lambda: search_until is not None and time.monotonic() >= search_until)
            if not out_of_time() and self.stopped_by != "space exhausted":
                self._confirm(lambda: out_of_time() or self.trials >= trials)
                self._search(trials, out_of_time)     # what confirming did not use
            if self.stopped_by is None:
                self.stopped_by = "trials" if self.trials >= trials else "time budget"
        except KeyboardInterrupt:
            self.stopped_by = "interrupted"
        self.progress(self, "done")

    def _search(self, limit: int, out_of_time) -> None:
        while self.trials < limit and not out_of_time():
            t = self._pick_task()
            if t is None:
                self.stopped_by = "space exhausted"
                return
            before, measured = t.best_time, self.trials
            for cand in self._batch(t, min(BATCH, limit - self.trials)):
                if out_of_time():
                    break
                self._measure(t, cand)
            if t.best_time == before:
                t.stale_rounds += 1
            if self.trials > measured:
                self.progress(self, "round")

    def _confirm(self, out_of_time) -> None:
        """Measure the few fastest schedules of each task again: the best of many noisy
        measurements is biased low, and the database ranks a schedule by the median of
        its measurements."""
        for t in self.tasks:
            recs = [r for r in self.db.records(t.key, self.record_key) if r.ok]
            fastest: dict[str, object] = {}
            for r in sorted(recs, key=lambda r: r.median):
                fastest.setdefault(schedule_hash(r.schedule), r)
            for r in list(fastest.values())[:CONFIRM] if len(fastest) > 1 else []:
                if out_of_time():
                    break
                self._remeasure(t, r.schedule, lower_loops(schedule_kernel(t.kernel, self.target, r.schedule)))
            if out_of_time():
                return


def tune(graph, target="host", db="tuning.db", trials: int | None = None, time_budget: float | None = None,
         runner=None, progress=None, opt_level: int = 2, seed: int = 0) -> Tuner:
    """Tune a model (a Graph) for ``target`` into the database at ``db``; resumes from
    whatever that database holds. Stops after ``trials`` measurements or ``time_budget``
    seconds, whichever comes first (``trial_limit``: a time budget alone is not capped
    by a trial count). Returns the Tuner (tasks, best times, trials).

    A cuda target is measured on this machine's CUDA device (TuneError at once when
    there is none), on an ``mlc rpc-server``'s, or under ``MLC_CUDA_EMULATE=1`` in the
    CPU emulation: every candidate checked as on a device, its times stored as
    emulated (``record_key``) with a RuntimeWarning that they do not rank GPU speed."""
    from ..driver import emulating
    from .rpc import RPCRunner, runner_from_spec
    target = Target.get(target)
    emulated = target.kind == "cuda" and emulating()
    remote = isinstance(runner, RPCRunner) or (isinstance(runner, str) and runner.startswith("rpc://"))
    if target.kind == "cuda" and not emulated and not remote:
        check_device(target)
    if emulated:
        warnings.warn(emulation_warning(target), RuntimeWarning, stacklevel=2)
    own_runner = runner is None or isinstance(runner, str)
    runner = runner_from_spec(runner, flush=True) if own_runner else runner
    database = db if isinstance(db, TuningDB) else TuningDB(db)
    try:
        tuner = Tuner(extract_tasks(graph, target, opt_level), target, database, runner, seed, progress,
                      emulated=emulated)
        tuner.run(trial_limit(trials, time_budget), time_budget)
        return tuner
    finally:
        if own_runner:
            runner.close()
        if not isinstance(db, TuningDB):
            database.close()
