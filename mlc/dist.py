"""mlc.dist: data-, tensor- and pipeline-parallel training on collective graph ops.

Start any script with an MPI launcher and every process is a rank::

    mpirun -n 2 python train.py

- ``rank()``, ``world_size()``, ``barrier()``; the collective ops ``allreduce``,
  ``allgather``, ``reduce_scatter``, ``broadcast``, ``send``, ``recv`` (also
  ``mlc.allreduce`` ...), usable inside traced functions.
- Data parallel: ``optim.train_step(loss_fn, opt, data_parallel=True)`` is the one
  line; ``allreduce_gradients`` is the pass it runs after autodiff.
- Tensor parallel: ``tensor_parallel(fn, shard)`` / ``tensor_parallel_value_and_grad``
  with ``shard={"w1": "column", "b1": "column", "w2": "row"}`` on the parameters,
  ``shard_params`` to cut the full parameters into this rank's shards.
- Pipeline parallel: ``Pipeline(stages, loss_fn, micro_batches)``, one stage per
  rank, GPipe schedule over send/recv ops.

The differentiated objective of a distributed graph is the sum over ranks of each
rank's value (gradient rules of collectives are collectives); the helpers here
divide by the group size where the mean is meant.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .frontend.api import OP_FUNCTIONS
from .frontend.trace import TraceError, Tracer, apply, current_trace, trace_info
from .ir.types import TensorType
from .passes import parallel
from .passes.parallel import DEFAULT_BUCKET_BYTES, local_type, replay, shard_axis
from .ops.collective import OPS_BY_NAME, group_ranks
from .runtime.comm import (Communicator, DistError, MPICommunicator, NCCLCommunicator, SingleProcess, run_collective,
                           set_world, world)
from .tree import flatten, key_paths, unflatten

__all__ = ["rank", "world_size", "barrier", "allreduce", "allgather", "reduce_scatter", "broadcast", "send",
           "recv", "allreduce_gradients", "data_parallel_graph", "shard_batch", "tensor_parallel",
           "tensor_parallel_value_and_grad", "tensor_parallel_graph", "shard_params", "Pipeline", "DistError",
           "Communicator", "MPICommunicator", "NCCLCommunicator", "SingleProcess", "set_world", "world",
           "DEFAULT_BUCKET_BYTES"]

def _collective(name: str):
    """mlc.dist's ``name``: fills in ``group`` (None: every rank of the job) and this
    process's rank, then records the op inside a trace or runs it on arrays."""
    op = OP_FUNCTIONS[name]

    def fn(*args, **kwargs):
        bound = op.__signature__.bind(*args, **kwargs)
        bound.apply_defaults()
        attrs = dict(bound.arguments)
        x = attrs.pop("x", None)
        traced = isinstance(x, Tracer) or current_trace() is not None
        error = TraceError if traced else DistError
        w = world()
        group = tuple(range(w.size)) if attrs["group"] is None else attrs["group"]
        if any(int(r) >= w.size for r in group):
            raise error(f"{name}: group {[int(r) for r in group]} names ranks outside the world of {w.size}")
        attrs["group"] = group
        if name == "broadcast":
            attrs["rank"] = w.rank
        if attrs.get("peer") == w.rank:
            raise error(f"{name}: peer {attrs['peer']} is this process's own rank")
        if traced:
            return apply(name, *([] if x is None else [x]), **attrs)
        x = None if x is None else np.ascontiguousarray(x)
        ins = [TensorType.of(x)] if x is not None else []
        attrs = OPS_BY_NAME[name].canonicalize(ins, attrs)
        (t,) = OPS_BY_NAME[name].infer(ins, **attrs)
        out = np.empty(t.shape, t.dtype.np)
        run_collective(name, attrs, x, out)
        return out

    for k in ("__name__", "__qualname__", "__module__", "__signature__", "__doc__"):
        setattr(fn, k, getattr(op, k))
    return fn


allreduce = _collective("allreduce")
allgather = _collective("allgather")
reduce_scatter = _collective("reduce_scatter")
broadcast = _collective("broadcast")
send = _collective("send")
recv = _collective("recv")


def allreduce_gradients(grads: list, bucket_bytes: int = DEFAULT_BUCKET_BYTES, op: str = "mean", group=None) -> list:
    return parallel.allreduce_gradients(grads, bucket_bytes, op=op, group=_ranks(group))


def data_parallel_graph(graph, grad_outputs=None, bucket_bytes: int = DEFAULT_BUCKET_BYTES, group=None):
    return parallel.data_parallel_graph(graph, grad_outputs, bucket_bytes, group=_ranks(group))


def tensor_parallel_graph(graph, sharded: dict, group=None):
    return parallel.tensor_parallel_graph(graph, sharded, group=_ranks(group))


allreduce_gradients.__doc__ = parallel.allreduce_gradients.__doc__
data_parallel_graph.__doc__ = parallel.data_parallel_graph.__doc__
tensor_parallel_graph.__doc__ = parallel.tensor_parallel_graph.__doc__


def rank() -> int:
    return world().rank


def world_size() -> int:
    return world().size


def barrier() -> None:
    world().barrier()


def _ranks(group) -> tuple[int, ...]:
    """``group`` as world ranks (None: every rank of the job), checked against the world."""
    w = world()
    ranks = group_ranks(tuple(range(w.size)) if group is None else group)
    if any(r >= w.size for r in ranks):
        raise DistError(f"group {list(ranks)} names ranks outside the world of {w.size}")
    return ranks


def shard_batch(batch, group=None):
    """This rank's contiguous block, along axis 0, of every array leaf of ``batch``
    (arrays or traced tensors; 0-d leaves and Python scalars are kept whole)."""
    ranks = _ranks(group)
    n, me = len(ranks), ranks.index(world().rank)
    leaves, tree = flatten(batch)
    out = []
    for x in leaves:
        shape = getattr(x, "shape", ())
        if not shape:
            out.append(x)
            continue
        if shape[0] % n:
            raise DistError(f"data parallel: a batch of {shape[0]} rows does not split evenly over {n} ranks")
        b = shape[0] // n
        if isinstance(x, Tracer):
            end = (me + 1) * b
            out.append(apply("slice", x, begin=(me * b,) + (0,) * (len(shape) - 1),
                             end=(end,) + tuple(shape[1:]), step=(1,) * len(shape)))
        else:
            out.append(np.asarray(x)[me * b:(me + 1) * b])
    return unflatten(tree, out)


# ----------------------------------------------------------------------------- tensor parallel

def _check_shard(params, shard: dict) -> list[str]:
    paths = key_paths(params)
    unknown = [k for k in shard if k not in paths]
    if unknown:
        raise KeyError(f"shard names {', '.join(map(repr, unknown))}, not parameters; the parameters are "
                       f"{', '.join(paths)}")
    return paths


def shard_params(params, shard: dict[str, str], group=None):
    """This rank's shards of full parameters: ``column`` splits the last axis (a 1-d
    bias: its only axis), ``row`` the first; others are kept whole."""
    paths = _check_shard(params, shard)
    ranks = _ranks(group)
    n, me = len(ranks), ranks.index(world().rank)
    leaves, tree = flatten(params)
    out = []
    for path, p in zip(paths, leaves):
        if path in shard:
            p = np.asarray(p)
            axis = shard_axis(shard[path], p.ndim) % p.ndim
            local_type(TensorType.of(p), shard[path], n)   # checks divisibility
            p = np.ascontiguousarray(np.split(p, n, axis=axis)[me])
        out.append(p)
    return unflatten(tree, out)


def tensor_parallel(fn: Callable, shard: dict[str, str], group=None) -> Callable:
    """``fn(params, *args)`` run on this rank's parameter shards (``shard_params``):
    the graph of fn on the full shapes goes through ``tensor_parallel_graph``, which
    inserts the collectives; outputs are whole on every rank."""
    from .transforms import _eager_or_traced
    ranks = _ranks(group)
    n = len(ranks)

    def traced(params, *args):
        paths = _check_shard(params, shard)
        p_leaves, p_tree = flatten(params)
        a_leaves, a_tree = flatten(tuple(args))
        full = []
        for path, t in zip(paths, p_leaves):
            lt = _type_of(t)
            if path in shard:
                axis = shard_axis(shard[path], lt.rank) % lt.rank
                shape = list(lt.shape)
                shape[axis] *= n
                lt = TensorType(shape, lt.dtype)
            full.append(lt)
        info = trace_info(fn, (unflatten(p_tree, full), *unflatten(a_tree, [_type_of(a) for a in a_leaves])),
                          name=getattr(fn, "__name__", "fn"))
        sharded = {i: shard[p] for i, p in enumerate(paths) if p in shard}
        tp = tensor_parallel_graph(info.graph, sharded, ranks)
        outs = replay(tp, [*p_leaves, *a_leaves])
        return unflatten(info.out_tree, outs)

    traced.__name__ = f"tensor_parallel_{getattr(fn, '__name__', 'fn')}"
    return _eager_or_traced(traced)


def _type_of(x) -> TensorType:
    if isinstance(x, Tracer):
        return x.value.type
    return TensorType.of(np.asarray(x))


def tensor_parallel_value_and_grad(loss_fn: Callable, shard: dict[str, str], group=None) -> Callable:
    """``(params_local, *args) -> (loss, grads_local)``: the loss of the whole model and
    the gradient of each parameter as this rank holds it (a shard of the full gradient
    for sharded parameters, the full gradient for the others), equal to single-device
    autodiff. Each rank differentiates loss / n; replicated parameters' gradients are
    then summed over the group."""
    from .transforms import _eager_or_traced, value_and_grad
    ranks = _ranks(group)
    n = len(ranks)
    f = tensor_parallel(loss_fn, shard, group)

    def traced(params, *args):
        loss, grads = value_and_grad(lambda p, *a: f(p, *a) / n)(params, *args)
        leaves, tree = flatten(grads)
        leaves = [g if path in shard else apply("allreduce", g, op="sum", group=ranks)
                  for path, g in zip(key_paths(grads), leaves)]
        return loss * n, unflatten(tree, leaves)

    traced.__name__ = f"tensor_parallel_grad_{getattr(loss_fn, '__name__', 'fn')}"
    return _eager_or_traced(traced)


# ----------------------------------------------------------------------------- pipeline parallel

_FORWARD_TAG, _BACKWARD_TAG = 0, 1


class Pipeline:
    """GPipe over the ranks of ``group``: rank k runs ``stages[k](params_k, h) -> h'``
    and the last stage also ``loss_fn(h_last, labels)``. A step splits the batch into
    ``micro_batches``, runs every micro-batch forward (activations go to the next rank
    by send/recv ops), then every one backward in reverse order (gradients of the
    activations come back the same way; each stage recomputes its forward inside its
    backward, GPipe's re-materialization), and averages the parameter gradients over
    the micro-batches: the gradient of the full batch's mean loss.

    ``value_and_grad(params_k, x, y) -> (loss, grads_k)`` on every rank: x is read on
    the first rank, y on the last; loss is the full batch's on the last rank, None
    elsewhere."""

    def __init__(self, stages: Sequence[Callable], loss_fn: Callable, micro_batches: int, group=None):
        self.ranks = _ranks(group)
        if len(stages) != len(self.ranks):
            raise DistError(f"a pipeline of {len(stages)} stages runs on as many ranks; the group has "
                            f"{len(self.ranks)}")
        if micro_batches < 1:
            raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
        self.stages, self.loss_fn, self.micro_batches = list(stages), loss_fn, micro_batches
        self.k = self.ranks.index(world().rank)
        self._fns = None

    @property
    def first(self) -> bool:
        return self.k == 0

    @property
    def last(self) -> bool:
        return self.k == len(self.ranks) - 1

    def _build(self, params, x_mb):
        """Compile this stage's forward and backward; learn the boundary types (each
        stage traces its own function and tells the next one its output type)."""
        from . import driver, transforms
        comm = world().subgroup(self.ranks)
        stage = self.stages[self.k]
        prev = self.ranks[self.k - 1] if not self.first else None
        nxt = self.ranks[self.k + 1] if not self.last else None
        in_type = _type_of(x_mb) if self.first else _recv_type(comm, self.k - 1)
        if not self.last:
            out = trace_info(stage, (params, in_type)).graph.outputs
            if len(out) != 1:
                raise DistError(f"pipeline stage {self.k} must return one tensor, got {len(out)}")
            out_type = out[0].type
            _send_type(comm, self.k + 1, out_type)
        shape, dt = in_type.shape, in_type.dtype

        if self.first:
            def forward(p, x):
                return send(stage(p, x), peer=nxt, tag=_FORWARD_TAG)

            def backward(p, x):
                out, f_vjp = transforms.vjp(stage, p, x)
                g = recv(shape=out.shape, dtype=out_type.dtype, peer=nxt, tag=_BACKWARD_TAG)
                return f_vjp(g)[0]
        elif not self.last:
            def forward(p):
                h = recv(shape=shape, dtype=dt, peer=prev, tag=_FORWARD_TAG)
                send(stage(p, h), peer=nxt, tag=_FORWARD_TAG)
                return h

            def backward(p, h):
                out, f_vjp = transforms.vjp(stage, p, h)
                g = recv(shape=out.shape, dtype=out_type.dtype, peer=nxt, tag=_BACKWARD_TAG)
                gp, gh = f_vjp(g)
                send(gh, peer=prev, tag=_BACKWARD_TAG)
                return gp
        else:
            def forward():
                return recv(shape=shape, dtype=dt, peer=prev, tag=_FORWARD_TAG)

            def backward(p, h, y):
                loss, (gp, gh) = transforms.value_and_grad(lambda p, h: self.loss_fn(stage(p, h), y),
                                                           argnums=(0, 1))(p, h)
                send(gh, peer=prev, tag=_BACKWARD_TAG)
                return loss, gp
        self._fns = (driver.jit(forward), driver.jit(backward))

    def value_and_grad(self, params, x=None, y=None):
        m = self.micro_batches
        xs = _split(x, m, "x") if self.first else [None] * m
        ys = _split(y, m, "y") if self.last else [None] * m
        if self._fns is None:
            self._build(params, xs[0])
        forward, backward = self._fns
        saved = []
        for i in range(m):   # every micro-batch forward ...
            if self.first:
                forward(params, xs[i])
                saved.append(xs[i])
            elif self.last:
                saved.append(forward())
            else:
                saved.append(forward(params))
        total, losses = None, []
        for i in reversed(range(m)):   # ... then every one backward, in reverse
            if self.last:
                loss, g = backward(params, saved[i], ys[i])
                losses.append(float(loss))
            else:
                g = backward(params, saved[i])
            total = g if total is None else _tree_add(total, g)
        grads = unflatten(flatten(total)[1], [np.asarray(a / m, dtype=a.dtype) for a in flatten(total)[0]])
        return (float(np.mean(losses)) if self.last else None), grads


def _split(a, m: int, what: str) -> list:
    if a is None:
        raise ValueError(f"this pipeline stage needs {what}")
    a = np.asarray(a)
    if a.shape[0] % m:
        raise DistError(f"pipeline: a batch of {a.shape[0]} rows does not split into {m} micro-batches")
    return [np.ascontiguousarray(b) for b in np.split(a, m)]


def _tree_add(a, b):
    la, tree = flatten(a)
    return unflatten(tree, [x + y for x, y in zip(la, flatten(b)[0])])


def _send_type(comm: Communicator, to: int, t: TensorType) -> None:
    code = np.array([len(t.shape), *t.shape, TYPE_CODES.index(t.dtype.name)], np.int64)
    comm.send(np.array([code.size], np.int64), to, 99)
    comm.send(code, to, 99)


def _recv_type(comm: Communicator, frm: int) -> TensorType:
    n = np.empty(1, np.int64)
    comm.recv(n, frm, 99)
    code = np.empty(int(n[0]), np.int64)
    comm.recv(code, frm, 99)
    ndim = int(code[0])
    return TensorType(tuple(int(d) for d in code[1:1 + ndim]), TYPE_CODES[int(code[-1])])


TYPE_CODES = ("float32", "float64", "float16", "int32", "int64", "int8", "uint8", "bool", "int16", "uint16", "uint32",
              "uint64")   # additive: a code's meaning never changes
