"""How the threads of mlc's parallel loops wait between loops.

Parallel loops run on libgomp. Between two loops its idle threads spin, then sleep:
with neither ``OMP_WAIT_POLICY`` nor ``GOMP_SPINCOUNT`` set, a spin of up to 300,000
iterations (about 3 ms). On cores shared with other busy processes that spinning
takes the core from the thread the loop is waiting for, and each loop's join waits
for a descheduled thread: a model of many small kernels then runs tens of times
slower. Measured on 2 shared cores beside a busy process (SqueezeNet, batch 1,
median ms of 10 calls, three medians each; the machine's own load varied):
libgomp's default 248-1758, OMP_WAIT_POLICY=active 562-1626, GOMP_SPINCOUNT=100000
1637-1961, 10000 113-254, 3000 67-167, 1000 18-136, 300 14-57, 100 13-56, 0 15-176,
OMP_WAIT_POLICY=passive 13-81.
With less outside load: beside a busy process, default 22-28, 300 14-20, 1000 17-23,
3000 25-31, 10000 21-55; no busy process beside, default 8-13, 300 9-14, 1000 10-13,
3000 9-11, 10000 9-15, passive 12-15. A few hundred iterations cost little on a
quiet machine (the spin still catches a loop that follows the last one at once) and
keep a busy one from collapsing.

libgomp reads its environment once, when it is loaded, so ``prepare_openmp`` runs
before mlc loads it (``codegen.llvm.gomp_available``, and ``mlc.load`` of a model
library that links it). It never overrides the user: with either variable set,
nothing changes. A process that loaded libgomp before (another library using
OpenMP imported first) keeps that library's settings.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

# spin iterations before an idle thread sleeps, when the user sets no wait policy
DEFAULT_SPINCOUNT = 300

_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def libgomp_loaded() -> bool:
    """Whether libgomp is already mapped into this process (then its settings are fixed)."""
    try:
        with open("/proc/self/maps") as f:
            return any("libgomp" in line for line in f)
    except OSError:       # no /proc: assume not, setting the variable is harmless either way
        return False


def prepare_openmp(environ=None) -> str | None:
    """Before libgomp loads: set ``GOMP_SPINCOUNT`` to the bounded ``DEFAULT_SPINCOUNT``
    where the user set neither ``OMP_WAIT_POLICY`` nor ``GOMP_SPINCOUNT``. Returns the
    value it set, or None where it left the environment alone (a user's setting, or
    libgomp already loaded)."""
    env = os.environ if environ is None else environ
    user = {k: env[k] for k in _WAIT_VARIABLES if env.get(k, "").strip()}
    if user:
        log.debug("libgomp wait policy from the environment: %s", user)
        return None
    if environ is None and libgomp_loaded():
        log.debug("libgomp was loaded before mlc: its wait policy is already fixed")
        return None
    env["GOMP_SPINCOUNT"] = str(DEFAULT_SPINCOUNT)
    return env["GOMP_SPINCOUNT"]
