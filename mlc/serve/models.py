"""The models a server holds: loading an ONNX model (compiled by mlc once per batch
size) or a model library (``mlc compile -o x.so``, served at its fixed shapes), and the
repository of names and versions the protocol's endpoints look models up in.

A model whose inputs all have a symbolic first dimension (``N``, ``batch``, ...) and
static other dimensions is *batched*: it is compiled for the batch sizes 1, 2, 4, ...
up to ``max_batch`` (the last one ``max_batch`` itself), its metadata shows -1 for that
dimension, and the dynamic batcher runs several requests in one call, padded up to the
next compiled size. mlc's compile cache keeps every compiled kernel on disk
(``runtime.cache``, ``runtime.graph_cache``), so a second start loads the sizes in a
fraction of the first one's time.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .protocol import InferError, TensorSpec, datatype_of

log = logging.getLogger("mlc.serve")

MODEL_FILES = ("model.onnx", "model.so")


class LoadError(Exception):
    """A model that cannot be served, with the reason."""


def batch_sizes(max_batch: int) -> list[int]:
    """The sizes compiled for a batched model: powers of two below ``max_batch``, and it."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch]


@dataclass
class Model:
    """A loaded model: what the protocol's metadata shows, and how to run it.

    ``runners[b]`` runs a batch of exactly ``b`` rows (a batched model) or the model's one
    fixed shape (``b`` 0); it takes the inputs in ``inputs``' order and returns the
    outputs in ``outputs``' order."""
    name: str
    version: str
    platform: str
    path: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch: int                       # 0: not batched (fixed shapes)
    runners: dict[int, Callable] = field(default_factory=dict)
    load_seconds: float = 0.0

    def padded_size(self, rows: int) -> int:
        """The smallest compiled batch size that holds ``rows`` rows."""
        return min(b for b in self.runners if b >= rows)

    def run(self, arrays: list[np.ndarray], size: int = 0) -> list[np.ndarray]:
        return self.runners[size](arrays)

    def metadata(self, versions: list[str]) -> dict:
        return {"name": self.name, "versions": versions, "platform": self.platform,
                "inputs": [s.metadata() for s in self.inputs], "outputs": [s.metadata() for s in self.outputs]}


def _mlc_runner(exe, order: list[int]):
    """Call an mlc Executable on the inputs given in the protocol's order. The call
    runs native code through ctypes, which releases the GIL for its duration."""
    from ..tree import flatten

    def run(arrays):
        outs = exe.call_flat([arrays[i] for i in order])
        return [o if isinstance(o, np.ndarray) else o.get() for o in flatten(outs)[0]]
    return run


def _order(exe_names: list[str], names: list[str], path: str) -> list[int]:
    """For each of the executable's inputs, the position of that input in ``names``
    (the model's own names; the executable may hold them sanitized)."""
    from ..frontend.trace import sanitize_name
    pos = {n: i for i, n in enumerate(names)}
    pos.update({sanitize_name(n): i for i, n in enumerate(names)})
    try:
        return [pos[n] for n in exe_names]
    except KeyError as e:
        raise LoadError(f"{path}: the compiled inputs {exe_names} do not match the model's inputs {names} ({e})")


def _onnx_inputs(model, path: str):
    """The ONNX graph's inputs (initializers left out) as (name, dims, elem_type), each
    dim an int or None (symbolic)."""
    inits = {i.name for i in model.graph.initializer}
    found = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            raise LoadError(f"{path}: input '{vi.name}' declares no shape; mlc serve needs static shapes "
                            "(a symbolic first dimension is the batch)")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        found.append((vi.name, dims, tt.elem_type))
    return found


def load_onnx(path: str, name: str, version: str, max_batch: int = 8, target: str = "host",
              backend: str = "mlc") -> Model:
    """An ONNX model, compiled by mlc for each batch size (``backend="onnxruntime"``: run by
    ONNX Runtime instead, one session for every size; a baseline for benchmarks)."""
    from ..frontend.onnx import OnnxImportError, from_onnx, load_model
    t0 = time.perf_counter()
    try:
        model = load_model(path)
    except (OnnxImportError, OSError) as e:
        raise LoadError(f"{path}: {e}")
    declared = _onnx_inputs(model, path)
    names = [n for n, _, _ in declared]
    out_names = [o.name for o in model.graph.output]
    batched = bool(declared) and all(dims and dims[0] is None for _, dims, _ in declared)
    for n, dims, _ in declared:
        rest = dims[1:] if batched else dims
        if any(d is None for d in rest):
            sym = "dimensions other than the first" if batched else "dimensions"
            raise LoadError(f"{path}: input '{n}' has symbolic {sym} ({dims}); mlc serve compiles static shapes: "
                            "only a symbolic first dimension (the batch) is allowed")
    max_batch = max(1, max_batch) if batched else 0
    sizes = batch_sizes(max_batch) if batched else [0]

    def shapes_for(b):
        return {n: [b] + dims[1:] if batched else dims for n, dims, _ in declared}

    runners, specs_in, specs_out = {}, None, None
    if backend == "onnxruntime":
        import onnxruntime as ort
        opts = ort.SessionOptions()
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

        def ort_run(arrays):
            return sess.run(out_names, dict(zip(names, arrays)))
        runners = {b: ort_run for b in sizes}
        from onnx.helper import tensor_dtype_to_np_dtype
        specs_in = [TensorSpec(n, datatype_of(tensor_dtype_to_np_dtype(elem)), tuple([-1] + dims[1:] if batched else dims))
                    for n, dims, elem in declared]
        ref = sess.run(out_names, {s.name: np.zeros([1 if d == -1 else d for d in s.shape], s.dtype) for s in specs_in})
        specs_out = [TensorSpec(n, datatype_of(o.dtype), tuple([-1] + list(o.shape[1:]) if batched else o.shape))
                     for n, o in zip(out_names, ref)]
        platform = "onnxruntime_onnx"
    else:
        import mlc
        for b in sizes:
            try:
                graph = from_onnx(model, input_shapes=shapes_for(b))
                exe = mlc.compile(graph, target=target)
            except (OnnxImportError, RuntimeError, ValueError, NotImplementedError) as e:
                raise LoadError(f"{path}: {e}")
            order = _order(exe.input_names, names, path)
            if specs_in is None:
                by_pos = {order[k]: t for k, t in enumerate(exe.input_types)}
                specs_in = [_spec(n, by_pos[i], batched) for i, n in enumerate(names)]
                if len(exe.output_types) != len(out_names):
                    raise LoadError(f"{path}: {len(exe.output_types)} compiled outputs for the model's "
                                    f"{len(out_names)} ({out_names})")
                specs_out = [_spec(n, t, batched) for n, t in zip(out_names, exe.output_types)]
            if batched and any(not t.shape or t.shape[0] != b for t in exe.output_types):
                raise LoadError(f"{path}: at batch {b} the outputs have shapes "
                                f"{[list(t.shape) for t in exe.output_types]}: not batch-major, so requests cannot be "
                                "batched; serve it with --max-batch 1 or give the inputs a static first dimension")
            runners[b] = _mlc_runner(exe, order)
            log.info("%s version %s: compiled for batch %s", name, version, b or "(fixed shapes)")
        platform = "mlc_onnx"
    return Model(name, version, platform, os.path.abspath(path), specs_in, specs_out, max_batch, runners,
                 time.perf_counter() - t0)


def _spec(name: str, t, batched: bool) -> TensorSpec:
    try:
        dt = datatype_of(t.dtype.np)
    except ValueError as e:
        raise LoadError(f"'{name}': {e}")
    shape = tuple(int(d) for d in t.shape)
    return TensorSpec(name, dt, (-1,) + shape[1:] if batched else shape)


def load_library(path: str, name: str, version: str) -> Model:
    """A model library (``mlc compile -o x.so``): served at its fixed shapes."""
    import mlc
    from ..runtime.library import LibraryError
    t0 = time.perf_counter()
    try:
        exe = mlc.load(path)
    except (LibraryError, OSError) as e:
        raise LoadError(f"{path}: {e}")
    out_names = [o["name"] for o in exe.metadata["outputs"]]
    specs_in = [_spec(n, t, False) for n, t in zip(exe.input_names, exe.input_types)]
    specs_out = [_spec(n, t, False) for n, t in zip(out_names, exe.output_types)]
    return Model(name, version, "mlc_library", os.path.abspath(path), specs_in, specs_out, 0,
                 {0: _mlc_runner(exe, list(range(len(specs_in))))}, time.perf_counter() - t0)


def load_file(path: str, name: str, version: str, max_batch: int = 8, target: str = "host",
              backend: str = "mlc") -> Model:
    if path.endswith(".so"):
        return load_library(path, name, version)
    if path.endswith(".onnx"):
        return load_onnx(path, name, version, max_batch, target, backend)
    raise LoadError(f"{path}: not a model mlc serves (an .onnx file or a model library .so)")


def _version_key(v: str):
    return (0, int(v), "") if v.isdigit() else (1, 0, v)


class Repository:
    """The served models by name and version, and the files they come from: model files
    given by path (name: the file's stem, version 1) and a model repository folder
    (``DIR/<name>/<version>/model.onnx`` or ``model.so``; ``DIR/<name>/config.json`` may
    set ``max_batch_size`` and ``instances``). Loading and unloading by name; a version
    left out means the newest."""

    def __init__(self, files=(), root: str | None = None, *, max_batch: int = 8, target: str = "host",
                 backend: str = "mlc", make_batcher: Callable | None = None):
        self.root = root
        self.max_batch, self.target, self.backend = max_batch, target, backend
        self.make_batcher = make_batcher          # (Model, config) -> a batcher with submit() and close()
        self.files: dict[str, dict[str, str]] = {}   # name -> version -> path (files given by path)
        for f in files:
            name = os.path.splitext(os.path.basename(f))[0]
            if name in self.files:
                raise LoadError(f"two models named '{name}' ({self.files[name]['1']} and {f}); rename one")
            self.files[name] = {"1": f}
        self.served: dict[str, dict[str, tuple[Model, object]]] = {}   # name -> version -> (Model, batcher)
        self.states: dict[str, tuple[str, str]] = {}   # name -> (state, reason)
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        found = set(self.files)
        if self.root and os.path.isdir(self.root):
            found.update(d for d in os.listdir(self.root) if self._versions_in(d))
        return sorted(found)

    def _versions_in(self, name: str) -> dict[str, str]:
        if name in self.files:
            return self.files[name]
        found = {}
        folder = os.path.join(self.root or "", name)
        if self.root and os.path.isdir(folder):
            for v in os.listdir(folder):
                for f in MODEL_FILES:
                    p = os.path.join(folder, v, f)
                    if os.path.isfile(p):
                        found[v] = p
                        break
        return found

    def _config(self, name: str) -> dict:
        if name in self.files or not self.root:
            return {}
        p = os.path.join(self.root, name, "config.json")
        if not os.path.isfile(p):
            return {}
        try:
            with open(p) as f:
                cfg = json.load(f)
        except (OSError, ValueError) as e:
            raise LoadError(f"{p}: {e}")
        if not isinstance(cfg, dict):
            raise LoadError(f"{p}: expected a JSON object such as {{\"max_batch_size\": 8}}")
        return cfg

    def load(self, name: str) -> None:
        """Load (or reload) every version of ``name``; LoadError when it cannot be."""
        versions = self._versions_in(name)
        if not versions:
            raise InferError(f"no model '{name}' in the repository", 404)
        self.states[name] = ("LOADING", "")
        try:
            cfg = self._config(name)
            max_batch = int(cfg.get("max_batch_size", self.max_batch))
            loaded = {v: load_file(p, name, v, max_batch, self.target, self.backend) for v, p in versions.items()}
        except (LoadError, ValueError, TypeError) as e:
            self.states[name] = ("UNAVAILABLE", str(e))
            raise LoadError(str(e)) from None
        served = {v: (m, self.make_batcher(m, cfg) if self.make_batcher else None) for v, m in loaded.items()}
        with self._lock:
            old = self.served.get(name, {})
            self.served[name] = served
            self.states[name] = ("READY", "")
        for _, b in old.values():
            if b is not None:
                b.close()
        for v, (m, _) in served.items():
            log.info("model %s version %s ready (%s, %.2f s)", name, v, m.platform, m.load_seconds)

    def unload(self, name: str) -> None:
        if name not in self.served and not self._versions_in(name):
            raise InferError(f"no model '{name}' in the repository", 404)
        with self._lock:
            old = self.served.pop(name, {})
            self.states[name] = ("UNAVAILABLE", "unloaded")
        for _, b in old.values():
            if b is not None:
                b.close()

    def get(self, name: str, version: str | None = None):
        """(Model, batcher) of a version (the newest when none is given); InferError 404
        for a model or version the server does not hold."""
        with self._lock:
            versions = self.served.get(name)
        if not versions:
            state = self.states.get(name)
            if state and state[0] == "LOADING":
                raise InferError(f"model '{name}' is loading", 503)
            why = f" ({state[1]})" if state and state[1] else ""
            raise InferError(f"unknown model '{name}'{why}", 404)
        if not version:
            version = max(versions, key=_version_key)
        if version not in versions:
            raise InferError(f"model '{name}' has no version '{version}' (versions: "
                             f"{', '.join(sorted(versions, key=_version_key))})", 404)
        return versions[version]

    def versions(self, name: str) -> list[str]:
        return sorted(self.served.get(name, {}), key=_version_key)

    def index(self, ready_only: bool = False) -> list[dict]:
        rows = []
        for name in self.names():
            state, reason = self.states.get(name, ("UNAVAILABLE", "not loaded"))
            if ready_only and state != "READY":
                continue
            for v in sorted(self.served.get(name) or self._versions_in(name), key=_version_key):
                rows.append({"name": name, "version": v, "state": state, "reason": reason})
        return rows

    def close(self) -> None:
        with self._lock:
            served, self.served = self.served, {}
        for versions in served.values():
            for _, b in versions.values():
                if b is not None:
                    b.close()
