"""Communicators: how collective ops reach an existing communication engine.

mlc has no transport of its own. Collective graph ops (``ops/collective.py``) run
through a ``Communicator``:

- ``MPICommunicator``: MPI through mpi4py, for CPU buffers. ``mpirun -n N python
  train.py`` on one machine or several, unchanged.
- ``NCCLCommunicator``: NCCL through CuPy, for GPU buffers (CuPy arrays); the NCCL
  unique id is shared over MPI.
- ``SingleProcess``: the world of one process that mlc runs in without a launcher;
  every collective is then the identity (or a copy).
- ``HostStaged``: another communicator's collectives on GPU buffers, each copied to
  host memory and back (MPI on machines without NCCL).

``world()`` is the communicator of CPU buffers (compiled code's collectives),
``device_world()`` the one of GPU buffers (the CUDA runtime's launch table).
``MLC_DIST`` picks: ``auto`` (default: MPI when an MPI launcher started the process;
on the GPU, NCCL when CuPy has it), ``mpi``, ``nccl`` (GPU collectives by NCCL, its id
sent over MPI) or ``none`` (a world of one).

Calls work on the caller's buffers in place: compiled code hands the dispatcher raw
pointers, which become numpy views (no copy) for mpi4py. Each call is non-blocking
in MPI and waited for with a deadline (``MLC_DIST_TIMEOUT`` seconds, default 120),
so a rank that died or left makes the others fail with ``DistError`` instead of
hanging; the job is then aborted at exit so no process is left waiting.

Before a call site's first collective, its members agree on what it moves: each
sends the others a 64-bit hash of (op, attributes, type, group) -- for send/recv,
the pair compares (tag, type, group) -- over a duplicate of the communicator, so
these messages never meet the data. A mismatch is a ``DistError`` naming each
rank's type instead of a wrong answer. Agreed signatures are remembered, so later
calls cost a set lookup; a rank that meets a new signature while another repeats an
agreed one is caught by the other while it waits for the data.
"""
from __future__ import annotations

import atexit
import ctypes
import hashlib
import json
import os
import struct
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..ir.types import TensorType, dtype as to_dtype

REDUCE_OPS = ("sum", "mean", "max", "min")
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MPI_LOCALRANKID")


class DistError(RuntimeError):
    """A collective that failed or did not complete in time."""


def default_timeout() -> float:
    raw = os.environ.get("MLC_DIST_TIMEOUT", "120")
    try:
        t = float(raw)
    except ValueError:
        raise DistError(f"MLC_DIST_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if t <= 0:
        raise DistError(f"MLC_DIST_TIMEOUT must be > 0 seconds, got {raw!r}")
    return t


@dataclass(frozen=True)
class CallSite:
    """What one rank's collective call moves, as its members must agree on it."""
    op: str                # "allreduce", ..., "send", "recv"
    words: str             # the op with its attributes: "allreduce(sum)"; "sends" / "receives"
    type: str              # "f32[4]"
    key: bytes             # 8 bytes: hash of what every member (the peer) must have the same
    peer: int | None       # world rank of the peer of a send/recv; None for a group collective
    tag: int
    where: str | None      # the user's source line, for messages


def call_site(op: str, attrs: dict, t: TensorType, where: str | None = None) -> CallSite:
    """The signature of collective ``op`` (attrs as in ``ops/collective.py``) moving a
    tensor of type ``t`` (a send's input, a recv's output, a collective's input)."""
    group = tuple(attrs["group"])
    if op in ("send", "recv"):
        words, agreed, peer, tag = ("sends" if op == "send" else "receives"), ("p2p", attrs["tag"]), \
            attrs["peer"], attrs["tag"]
    else:
        shown = [str(attrs["op"])] if "op" in attrs else []
        shown += [f"{k}={attrs[k]}" for k in ("axis", "root") if k in attrs]
        words, peer, tag = f"{op}({', '.join(shown)})", None, 0
        agreed = (words,)
    key = hashlib.blake2b(repr((*agreed, str(t), group)).encode(), digest_size=8).digest()
    return CallSite(op, words, str(t), key, peer, tag, where)


class Communicator:
    """One group of processes. Buffers are numpy arrays (CuPy arrays for NCCL); a
    source and a destination that are the same array mean "in place"."""

    rank: int
    size: int
    ranks: tuple[int, ...]   # world ranks of the members, in group order

    def begin(self, site: CallSite) -> None:
        """Called before every collective of a call site: the first time, the members
        (the peer of a send/recv) check that they agree on ``site``; DistError if not."""

    def allreduce(self, src, dst, op: str) -> None:
        raise NotImplementedError

    def allgather(self, src, dst) -> None:
        """dst (flat) = every member's src, in rank order."""
        raise NotImplementedError

    def reduce_scatter(self, src, dst, op: str) -> None:
        """src (flat) holds ``size`` equal blocks; member r receives the reduction of block r."""
        raise NotImplementedError

    def broadcast(self, buf, root: int) -> None:
        raise NotImplementedError

    def send(self, buf, peer: int, tag: int) -> None:
        raise NotImplementedError

    def recv(self, buf, peer: int, tag: int) -> None:
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def subgroup(self, ranks: tuple[int, ...]) -> "Communicator":
        raise NotImplementedError


class SingleProcess(Communicator):
    """The world of one process: reductions and gathers over one member."""

    rank, size, ranks = 0, 1, (0,)

    def allreduce(self, src, dst, op):
        if dst is not src:
            dst[...] = src

    def allgather(self, src, dst):
        self.allreduce(src, dst, "sum")

    def reduce_scatter(self, src, dst, op):
        self.allreduce(src, dst, op)

    def broadcast(self, buf, root):
        pass

    def send(self, buf, peer, tag):
        raise DistError(f"send to rank {peer}: this process runs alone (world size 1); start it with "
                        "mpirun -n N")

    def recv(self, buf, peer, tag):
        raise DistError(f"recv from rank {peer}: this process runs alone (world size 1); start it with "
                        "mpirun -n N")

    def barrier(self):
        pass

    def subgroup(self, ranks):
        return self


_CHECK = struct.Struct("<cq8s")   # kind (b"c" group collective, b"p" send/recv), its number or tag, key
_CHECK_BYTES = 256                # the header, then "words\ttype" for messages

_broken = False   # a collective timed out: abort the job at exit instead of hanging in MPI_Finalize


ABORT_GRACE = 1.0   # seconds the launcher gets to forward this rank's last output before the abort


def _abort_if_broken():
    if _broken:
        from mpi4py import MPI
        # MPI_Abort kills every rank and its forwarding of output at once: the error that explains
        # the abort (already printed) would be lost to the user without the flush and the grace
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        time.sleep(ABORT_GRACE)
        MPI.COMM_WORLD.Abort(1)


class MPICommunicator(Communicator):
    def __init__(self, comm=None, timeout: float | None = None, ranks: tuple[int, ...] | None = None):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.ranks = ranks if ranks is not None else tuple(range(self.size))
        self.timeout = default_timeout() if timeout is None else timeout
        self._ops = {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
        self._groups: dict[tuple, MPICommunicator] = {}
        # agreement on call sites (see the module's doc), on a communicator of its own
        self._ctl, self._ctl_ready = self.comm.Idup()
        self._agreed: set[tuple] = set()    # (peer or None, key) agreed with the peer / every member
        self._count = 0                     # group collectives begun: numbers their agreement messages
        self._inbox: dict[tuple, tuple] = {}   # (member, kind, number or tag) -> (key, words, type)
        self._sending: list = []            # agreement messages under way, with their buffers
        self._current = None                # (site, number or tag) of the call under way

    def _until(self, done, what: str, poll=None) -> None:
        """Wait until ``done()``: spin briefly (small messages finish in microseconds),
        then test with short sleeps until the deadline; while sleeping, answer members
        that ask to agree on ``poll`` (the call under way)."""
        global _broken
        start = time.monotonic()
        deadline = start + self.timeout
        while not done():
            now = time.monotonic()
            if now > deadline:
                _broken = True
                raise DistError(f"{what} on ranks {list(self.ranks)} did not complete within {self.timeout:g} s: "
                                "another rank exited, crashed or is stuck (MLC_DIST_TIMEOUT sets the limit); the "
                                "job will be aborted at exit")
            if now - start > 2e-3:
                if poll is not None:
                    self._answer(*poll)
                time.sleep(2e-4)

    def _wait(self, req, what: str, status=None) -> None:
        """Wait for a non-blocking call with the deadline."""
        try:
            if not req.Test(status):
                self._until(lambda: req.Test(status), what, self._current)
        except self.MPI.Exception as e:   # e.g. a message longer than the receive buffer
            raise DistError(f"{what}: {e.Get_error_string()}") from None
        finally:
            self._current = None

    # --------------------------------------------------------------- agreement on call sites

    def begin(self, site):
        if site.peer is None:   # group collectives are numbered: their agreement messages say which one
            n = self._count
            self._count += 1
        else:                   # a send/recv pair is matched by its tag
            n = site.tag
        if (site.peer, site.key) not in self._agreed:
            self._exchange(site, n)
            self._agreed.add((site.peer, site.key))
        elif self._inbox:   # a member met this call for the first time while this rank waited before
            self._answer(site, n)
        self._current = (site, n)

    def _members(self, site) -> tuple[bytes, list[int]]:
        """The kind of agreement message and the group indices of the members to agree with."""
        if site.peer is None:
            return b"c", [r for r in range(self.size) if r != self.rank]
        return b"p", [self.ranks.index(site.peer)]

    def _ready(self) -> None:
        req, self._ctl_ready = self._ctl_ready, None
        if req is not None and not req.Test():
            self._until(req.Test, "setting up agreement on collectives")

    def _collect(self) -> None:
        """Move the agreement messages that arrived into the inbox."""
        self._ready()
        status = self.MPI.Status()
        while self._ctl.Iprobe(self.MPI.ANY_SOURCE, 0, status):
            buf = bytearray(_CHECK_BYTES)
            self._ctl.Recv(buf, status.Get_source(), 0)
            kind, n, key = _CHECK.unpack_from(buf)
            words, _, t = bytes(buf[_CHECK.size:]).rstrip(b"\0").decode(errors="replace").partition("\t")
            self._inbox[(status.Get_source(), kind, n)] = (key, words, t)

    def _send_check(self, members, kind: bytes, n: int, site: CallSite) -> None:
        buf = bytearray(_CHECK_BYTES)
        _CHECK.pack_into(buf, 0, kind, n, site.key)
        text = f"{site.words}\t{site.type}".encode()[:_CHECK_BYTES - _CHECK.size]
        buf[_CHECK.size:_CHECK.size + len(text)] = text
        self._sending = [(r, b) for r, b in self._sending if not r.Test()]
        self._sending += [(self._ctl.Isend(buf, dest=m, tag=0), buf) for m in members]

    def _exchange(self, site, n) -> None:
        """Send this rank's signature of ``site`` to the members and compare theirs."""
        kind, members = self._members(site)
        self._ready()
        self._send_check(members, kind, n, site)
        theirs: dict[int, tuple] = {}
        status = self.MPI.Status()

        def arrived() -> bool:
            self._collect()
            for m in members:
                if (m, kind, n) in self._inbox:
                    theirs[m] = self._inbox.pop((m, kind, n))
            if not theirs and site.op == "recv" and self.comm.Iprobe(members[0], site.tag, status):
                self._collect()   # the data came first: the sender repeats a send agreed before
                if (members[0], kind, n) not in self._inbox:
                    raise self._disagree(site, {members[0]: (None, "sends", f"{status.Get_count(self.MPI.BYTE)} "
                                                                              "bytes")})
            return len(theirs) == len(members)

        self._until(arrived, f"{site.words} {site.type} (agreeing on its type)")
        if any(key != site.key for key, _, _ in theirs.values()):
            raise self._disagree(site, theirs)

    def _answer(self, site, n) -> None:
        """Answer members that ask to agree on the call this rank has agreed on before."""
        kind, members = self._members(site)
        self._collect()
        asked = {m: self._inbox.pop((m, kind, n)) for m in members if (m, kind, n) in self._inbox}
        if not asked:
            return
        bad = any(key != site.key for key, _, _ in asked.values())
        self._send_check(members if bad else list(asked), kind, n, site)   # unblock every member that waits
        if bad:
            raise self._disagree(site, asked)

    def _disagree(self, site, theirs: dict) -> DistError:
        global _broken
        _broken = True   # the ranks are out of step: abort the job at exit
        views = {self.rank: (site.words, site.type), **{m: (w, t) for m, (_, w, t) in theirs.items()}}
        same_op = site.peer is None and len({w for w, _ in views.values()}) == 1
        parts = [f"rank {self.ranks[r]} {t if same_op else f'{w} {t}'}" for r, (w, t) in sorted(views.items())]
        at = f" at {site.where}" if site.where else ""
        return DistError(f"{site.op}{at}: ranks disagree: {', '.join(parts)}")

    def allreduce(self, src, dst, op):
        MPI = self.MPI
        self._wait(self.comm.Iallreduce(MPI.IN_PLACE if src is dst else src, dst, self._ops[op]), f"allreduce({op})")
        if op == "mean":
            np.divide(dst, self.size, out=dst, casting="unsafe")

    def allgather(self, src, dst):
        self._wait(self.comm.Iallgather(src, dst), "allgather")

    def reduce_scatter(self, src, dst, op):
        self._wait(self.comm.Ireduce_scatter_block(src, dst, self._ops[op]), f"reduce_scatter({op})")
        if op == "mean":
            np.divide(dst, self.size, out=dst, casting="unsafe")

    def broadcast(self, buf, root):
        self._wait(self.comm.Ibcast(buf, root=root), f"broadcast(root={root})")

    def send(self, buf, peer, tag):
        self._wait(self.comm.Isend(buf, dest=peer, tag=tag), f"send to rank {peer} (tag {tag})")

    def recv(self, buf, peer, tag):
        status = self.MPI.Status()
        self._wait(self.comm.Irecv(buf, source=peer, tag=tag), f"recv from rank {peer} (tag {tag})", status)
        got = status.Get_count(self.MPI.BYTE)
        if got != buf.nbytes:
            raise DistError(f"recv from rank {self.ranks[peer]} (tag {tag}): got {got} bytes, expected "
                            f"{TensorType.of(buf)} ({buf.nbytes} bytes)")

    def barrier(self):
        self._wait(self.comm.Ibarrier(), "barrier")

    def subgroup(self, ranks):
        """The communicator of ``ranks`` (world ranks); created on first use by its
        members only (MPI_Comm_create_group)."""
        if ranks == self.ranks:
            return self
        if ranks not in self._groups:
            group = self.comm.Get_group().Incl(list(ranks))
            self._groups[ranks] = MPICommunicator(self.comm.Create_group(group), self.timeout, ranks)
        return self._groups[ranks]


class HostStaged(Communicator):
    """``inner``'s collectives on device (CuPy) buffers: each source copied to host
    memory, the result copied back -- for GPU jobs without NCCL (``MLC_DIST=mpi``)."""

    def __init__(self, inner: Communicator):
        import cupy
        self.cupy, self.inner = cupy, inner
        self.rank, self.size, self.ranks = inner.rank, inner.size, inner.ranks

    def begin(self, site):
        self.inner.begin(site)

    def _through_host(self, src, dst, call) -> None:
        h_src = self.cupy.asnumpy(src) if src is not None else None
        h_dst = h_src if dst is src else np.empty(dst.shape, dst.dtype)
        call(h_src, h_dst)
        dst.set(h_dst)

    def allreduce(self, src, dst, op):
        self._through_host(src, dst, lambda s, d: self.inner.allreduce(s, d, op))

    def allgather(self, src, dst):
        self._through_host(src, dst, self.inner.allgather)

    def reduce_scatter(self, src, dst, op):
        self._through_host(src, dst, lambda s, d: self.inner.reduce_scatter(s, d, op))

    def broadcast(self, buf, root):
        self._through_host(buf, buf, lambda s, d: self.inner.broadcast(d, root))

    def send(self, buf, peer, tag):
        self.inner.send(self.cupy.asnumpy(buf), peer, tag)

    def recv(self, buf, peer, tag):
        self._through_host(None, buf, lambda s, d: self.inner.recv(d, peer, tag))

    def barrier(self):
        self.inner.barrier()

    def subgroup(self, ranks):
        return self if ranks == self.ranks else HostStaged(self.inner.subgroup(ranks))


# numpy dtype -> cupy.cuda.nccl's constant for it (NCCL has no 16-bit integers or bool)
_NCCL_TYPES = {np.float32: "NCCL_FLOAT32", np.float64: "NCCL_FLOAT64", np.float16: "NCCL_FLOAT16",
               np.int32: "NCCL_INT32", np.int64: "NCCL_INT64", np.int8: "NCCL_INT8", np.uint8: "NCCL_UINT8",
               np.uint32: "NCCL_UINT32", np.uint64: "NCCL_UINT64"}


def nccl_types(nccl) -> dict:
    """numpy dtype -> NCCL type constant, for the constants this ``cupy.cuda.nccl`` has
    (looked up by name: a CuPy without one of them leaves that dtype out)."""
    return {np.dtype(dt): getattr(nccl, name) for dt, name in _NCCL_TYPES.items() if hasattr(nccl, name)}


class NCCLCommunicator(Communicator):
    """NCCL through CuPy for CuPy arrays; the unique id travels over ``bootstrap`` (an
    MPICommunicator, or None for a world of one GPU)."""

    def __init__(self, bootstrap: MPICommunicator | None = None):
        import cupy
        from cupy.cuda import nccl
        self.cupy, self.nccl = cupy, nccl
        self.bootstrap = bootstrap
        self.rank = bootstrap.rank if bootstrap else 0
        self.size = bootstrap.size if bootstrap else 1
        self.ranks = tuple(range(self.size))
        uid = nccl.get_unique_id() if self.rank == 0 else None
        if bootstrap is not None:
            uid = bootstrap.comm.bcast(uid, root=0)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._ops = {"sum": nccl.NCCL_SUM, "mean": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}
        self._types = nccl_types(nccl)

    def begin(self, site):
        """Agreement goes over the bootstrap communicator (the same ranks)."""
        if self.bootstrap is not None:
            self.bootstrap.begin(site)
            self.bootstrap._current = None   # NCCL's calls do not wait on it

    def _args(self, src, dst):
        stream = self.cupy.cuda.get_current_stream().ptr
        t = self._types.get(np.dtype(dst.dtype))
        if t is None:
            raise DistError(f"NCCL cannot carry {np.dtype(dst.dtype).name} tensors "
                            f"(it carries {', '.join(sorted(d.name for d in self._types))})")
        return src.data.ptr, dst.data.ptr, t, stream

    def allreduce(self, src, dst, op):
        s, d, t, stream = self._args(src, dst)
        self.comm.allReduce(s, d, dst.size, t, self._ops[op], stream)
        if op == "mean":
            dst /= self.size

    def allgather(self, src, dst):
        s, d, t, stream = self._args(src, dst)
        self.comm.allGather(s, d, src.size, t, stream)

    def reduce_scatter(self, src, dst, op):
        s, d, t, stream = self._args(src, dst)
        self.comm.reduceScatter(s, d, dst.size, t, self._ops[op], stream)
        if op == "mean":
            dst /= self.size

    def broadcast(self, buf, root):
        s, d, t, stream = self._args(buf, buf)
        self.comm.broadcast(s, d, buf.size, t, root, stream)

    def send(self, buf, peer, tag):
        s, _, t, stream = self._args(buf, buf)
        self.comm.send(s, buf.size, t, peer, stream)

    def recv(self, buf, peer, tag):
        _, d, t, stream = self._args(buf, buf)
        self.comm.recv(d, buf.size, t, peer, stream)

    def barrier(self):
        self.cupy.cuda.get_current_stream().synchronize()

    def subgroup(self, ranks):
        if ranks == self.ranks:
            return self
        raise DistError("NCCL subgroups are not supported; use the world group")


# ----------------------------------------------------------------------------- the process's world

_world: Communicator | None = None
_world_lock = threading.Lock()


def launched_by_mpi() -> bool:
    return any(v in os.environ for v in _LAUNCHER_VARS)


DIST_CHOICES = ("auto", "mpi", "nccl", "none")


def dist_choice() -> str:
    want = os.environ.get("MLC_DIST", "auto").strip().lower() or "auto"
    if want not in DIST_CHOICES:
        raise DistError(f"MLC_DIST must be one of {', '.join(DIST_CHOICES)}, got {want!r}")
    return want


def world() -> Communicator:
    """The communicator of every process of the job: MPI when started by an MPI
    launcher (or ``MLC_DIST=mpi``), else a world of one."""
    global _world
    with _world_lock:
        if _world is None:
            want = dist_choice()
            if want == "mpi" or (want in ("auto", "nccl") and launched_by_mpi()):
                try:
                    import mpi4py  # noqa: F401
                except ImportError:
                    raise DistError("this process was started by an MPI launcher but mpi4py is not installed: "
                                    "pip install 'mlc[dist]'") from None
                _world = MPICommunicator()
                atexit.register(_abort_if_broken)   # runs before mpi4py's MPI_Finalize (registered earlier)
            else:
                _world = SingleProcess()
        return _world


_device_world: Communicator | None = None


def nccl_available() -> bool:
    try:
        from cupy.cuda import nccl  # noqa: F401
    except Exception:   # no CuPy, or a CuPy built without NCCL
        return False
    return True


def device_world() -> Communicator:
    """The communicator of collectives on GPU buffers (CuPy arrays): over the same
    processes as ``world()``; NCCL with ``MLC_DIST=nccl`` or, under ``auto``, in a job
    of several processes where CuPy has NCCL; else ``world()``'s transport staged
    through host memory (``HostStaged``). A world of one passes buffers through."""
    global _device_world
    if _device_world is not None:
        return _device_world
    want = dist_choice()
    w = world()
    if want == "nccl" or (want == "auto" and w.size > 1 and nccl_available()):
        if not nccl_available():
            raise DistError("MLC_DIST=nccl: GPU collectives by NCCL need CuPy with NCCL (pip install 'mlc[gpu]', "
                            "a CUDA build of CuPy; check `python -c 'from cupy.cuda import nccl'`); MLC_DIST=mpi "
                            "sends GPU buffers through host memory instead")
        if w.size > 1 and not isinstance(w, MPICommunicator):
            raise DistError(f"MLC_DIST=nccl: the NCCL id is sent over MPI, but this world is a {type(w).__name__}")
        comm: Communicator = NCCLCommunicator(w if w.size > 1 else None)
    elif w.size == 1:
        comm = w
    else:
        comm = HostStaged(w)
    with _world_lock:
        if _device_world is None:
            _device_world = comm
        return _device_world


def device_group_of(ranks: tuple[int, ...]) -> Communicator:
    w = device_world()
    if w.rank not in ranks:
        raise DistError(f"rank {w.rank} runs a collective of the group {list(ranks)}, which it is not part of")
    return w.subgroup(tuple(ranks))


def set_world(comm: Communicator) -> None:
    """Use ``comm`` as the world (e.g. an MPICommunicator over a sub-communicator)."""
    global _world
    _world = comm


def group_of(ranks: tuple[int, ...]) -> Communicator:
    w = world()
    if w.rank not in ranks:
        raise DistError(f"rank {w.rank} runs a collective of the group {list(ranks)}, which it is not part of")
    return w.subgroup(tuple(ranks))


# ----------------------------------------------------------------------------- running one collective op

def run_collective(op: str, attrs: dict, x, out, comm: Communicator | None = None,
                   site: CallSite | None = None) -> None:
    """Run collective ``op`` (attrs as in ``ops/collective.py``) from ``x`` (None for
    recv) into ``out``; the one implementation behind compiled code and the reference.
    ``site``: its signature, when the caller keeps it."""
    comm = comm or group_of(tuple(attrs["group"]))
    comm.begin(site or call_site(op, attrs, TensorType.of(out if x is None else x)))
    if op == "allreduce":
        comm.allreduce(x, out, attrs["op"])
    elif op == "broadcast":
        if out is not x:
            out[...] = x
        comm.broadcast(out, attrs["root"])
    elif op in ("allgather", "reduce_scatter"):
        axis = attrs["axis"]
        if op == "allgather":
            if axis == 0:
                comm.allgather(x, out)
            else:   # gather rank-major, then lay the pieces out along the axis
                xp = _array_module(out)
                tmp = xp.empty((comm.size, *x.shape), x.dtype)
                comm.allgather(xp.ascontiguousarray(x), tmp)
                out[...] = xp.concatenate(list(tmp), axis=axis)
        else:
            if axis == 0:
                comm.reduce_scatter(x, out, attrs["op"])
            else:   # blocks along the axis, made contiguous rank-major
                xp = _array_module(out)
                blocks = xp.ascontiguousarray(xp.stack(xp.split(x, comm.size, axis=axis)))
                comm.reduce_scatter(blocks, out, attrs["op"])
    elif op == "send":
        if out is not x:
            out[...] = x
        comm.send(x, comm.ranks.index(attrs["peer"]), attrs["tag"])
    elif op == "recv":
        comm.recv(out, comm.ranks.index(attrs["peer"]), attrs["tag"])
    else:
        raise DistError(f"unknown collective {op!r}")


def _array_module(a):
    """numpy for numpy arrays, CuPy for CuPy arrays (device buffers)."""
    return np if isinstance(a, np.ndarray) else __import__("cupy")


def parse_descriptor(desc: bytes | str) -> tuple:
    """(op, attrs, (dtype str, shape) of the source or None, of the destination, CallSite)
    of a collective's JSON descriptor (``passes/lower.py``)."""
    j = json.loads(desc)
    t_in = (j["in"][0], tuple(j["in"][1])) if j["in"] else None
    t_out = (j["out"][0], tuple(j["out"][1]))
    t = t_in or t_out
    site = call_site(j["op"], j["attrs"], TensorType(t[1], to_dtype(np.dtype(t[0]))), j.get("site"))
    return j["op"], j["attrs"], t_in, t_out, site


# ----------------------------------------------------------------------------- compiled code's entry point

_pending = threading.local()   # the first error of the current run on this thread
_descriptors: dict[bytes, tuple] = {}


class _Memory:
    """Raw memory numpy can view: creating a ctypes array type per call would cost
    tens of microseconds, this a few."""
    __slots__ = ("__array_interface__",)


def _view(ptr: int, typestr: str, shape: tuple) -> np.ndarray:
    m = _Memory()
    m.__array_interface__ = {"data": (ptr or 0, False), "shape": shape, "typestr": typestr, "version": 3}
    return np.asarray(m)


def _dispatch(desc: bytes, src: int | None, dst: int | None) -> None:
    """Called by compiled code for every collective: ``desc`` is the op's JSON, src and
    dst the buffers. An exception cannot cross back into the compiled code, so it is
    kept and raised by ``raise_pending`` when the run returns; later collectives of the
    same run are skipped."""
    if getattr(_pending, "error", None) is not None:
        return
    try:
        d = _descriptors.get(desc)
        if d is None:
            op, attrs, t_in, t_out, site = parse_descriptor(desc)
            d = _descriptors[desc] = [op, attrs, t_in, t_out, group_of(tuple(attrs["group"])), None, site]
        op, attrs, t_in, t_out, comm, last, site = d
        if last is None or last[0] != src or last[1] != dst:   # workspace buffers keep their address
            x = _view(src, *t_in) if t_in else None
            out = x if (src == dst and t_in == t_out) else _view(dst, *t_out)
            d[5] = last = (src, dst, x, out)
        run_collective(op, attrs, last[2], last[3], comm, site)
    except BaseException as e:   # noqa: BLE001 -- re-raised in the caller's thread after the run
        _pending.error = e


DISPATCH_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p)
_dispatcher = DISPATCH_TYPE(_dispatch)
SYMBOL = "mlc_collective"


def install_dispatcher() -> None:
    """Make ``mlc_collective`` resolve to the dispatcher in code loaded by the JIT."""
    import llvmlite.binding as llvm
    llvm.add_symbol(SYMBOL, ctypes.cast(_dispatcher, ctypes.c_void_p).value)


def raise_pending() -> None:
    e = getattr(_pending, "error", None)
    if e is not None:
        _pending.error = None
        raise e
