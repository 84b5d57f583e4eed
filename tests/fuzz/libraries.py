"""Mutated model libraries: each mutant is refused by ``mlc.load`` with ``LibraryError``,
or (a change to bytes that do not matter) loads and runs to the original's outputs. No
mutant may crash or hang the process that loads it.

The seeds are two small exported models: one with pytree arguments and results and
embedded weights, one with external weights. A mutant truncates the file, flips bits
(checksum left as it is), edits the trailer's fields or its metadata bytes and
recomputes the checksum, edits the metadata as JSON (any field, any value) and
recomputes the checksum, edits an input's or output's name, dtype or shape alike in
both copies of the metadata (the trailer's and the one compiled into the code) so only
the code's own tables disagree, or damages a signed library or its signature (loaded
with the public key; the code itself may then be changed too: the signature catches
it).

The mutants are loaded and run by one worker process that takes many in turn; a crash
or a hang costs only the worker, which is restarted, and is reported as a failure with
the case that replays it (``mutant(seed, i)``).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

from . import FuzzResult

CASE_TIMEOUT = 60.0   # seconds one load and run may take in the worker
MAGIC = b"MLC_LIB\0"
KINDS = ("truncate", "flip", "trailer_fields", "metadata_bytes", "metadata_json", "code_tables", "signed")

# Loads each mutant named on stdin, prints one JSON line per mutant. The seeds' outputs,
# computed first by the worker, are what an accepted mutant must reproduce.
WORKER = r"""
import json, sys
import numpy as np
import mlc
from mlc.runtime.library import LibraryError
from mlc.tree import flatten

folder = sys.argv[1]
rng = np.random.default_rng(0)
ARGS = {"tree": ({"x": rng.standard_normal((4, 16)).astype(np.float32)}, rng.standard_normal(8).astype(np.float32)),
        "external": (rng.standard_normal((4, 16)).astype(np.float32),)}

def outputs(m, seed):
    leaves, tree = flatten(m(*ARGS[seed]))
    return str(tree), [np.asarray(a) for a in leaves]

expected = {seed: outputs(mlc.load(f"{folder}/{seed}.so"), seed) for seed in ARGS}
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    try:
        m = mlc.load(job["path"], **({"public_key": job["key"]} if job["key"] else {}))
    except LibraryError as e:
        print(json.dumps({"refused": str(e)[:300]}), flush=True)
        continue
    except BaseException as e:
        print(json.dumps({"wrong_error": f"{type(e).__name__}: {e}"[:300]}), flush=True)
        continue
    try:
        tree, leaves = outputs(m, job["seed"])
        want_tree, want = expected[job["seed"]]
        same = tree == want_tree and len(leaves) == len(want) and all(
            a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(leaves, want))
        print(json.dumps({"ran": same}), flush=True)
    except BaseException as e:
        print(json.dumps({"wrong_error": f"running: {type(e).__name__}: {e}"[:300]}), flush=True)
"""


def _tree_model(args, scale):
    import mlc
    w = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
    h = mlc.relu(args["x"] @ w) + scale
    return {"h": h, "s": mlc.sum(h, axis=1)}


def _external_model(x):
    w = np.random.default_rng(2).standard_normal((16, 3)).astype(np.float32)
    return x @ w + 1.0


def build_seeds(folder: str) -> None:
    """tree.so (pytree signature, embedded weights) and external.so + external.params."""
    import mlc
    rng = np.random.default_rng(0)
    x, scale = {"x": rng.standard_normal((4, 16)).astype(np.float32)}, rng.standard_normal(8).astype(np.float32)
    mlc.compile(_tree_model, x, scale).export(os.path.join(folder, "tree.so"))
    mlc.compile(_external_model, x["x"]).export(os.path.join(folder, "external.so"), params="external")


@functools.lru_cache(maxsize=None)
def _keys():
    """Two Ed25519 key pairs (raw private bytes, PEM public), or None without cryptography."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        return None
    out = []
    for i in range(2):
        k = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fuzz key %d" % i).digest())
        pem = k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        out.append((k, pem))
    return out


# ----------------------------------------------------------------------------- mutations

def _split(data: bytes) -> tuple[bytes, bytes]:
    """(the ELF image, the trailer's metadata bytes) of a valid library."""
    n = int.from_bytes(data[-48:-40], "little")
    return data[:-52 - n], data[-52 - n:-52]


def _seal(body: bytes) -> bytes:
    """A library whose checksum is recomputed over ``body`` (everything before the digest)."""
    return body + hashlib.sha256(body).digest() + MAGIC


def _trailer(elf: bytes, meta: bytes, version: int = 1, length: int | None = None) -> bytes:
    return _seal(elf + meta + struct.pack("<IQ", version, len(meta) if length is None else length))


INTERESTING = [0, 1, -1, 2, 7, 64, 2 ** 31, -2 ** 31, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 10 ** 30]


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]   # exact Python ints (rng.choice would round big ones)


def _random_value(rng, old):
    choices = [lambda: _pick(rng, INTERESTING), lambda: 1.5, lambda: float("nan"), lambda: "", lambda: "float64",
               lambda: "x" * int(rng.integers(1, 50)), lambda: None, lambda: True, lambda: False, lambda: [],
               lambda: {}, lambda: [1, 1], lambda: [[1]], lambda: {"a": 1}]
    if isinstance(old, bool):
        choices.append(lambda: not old)
    elif isinstance(old, int):
        choices += [lambda: old + 1, lambda: old - 1, lambda: old * 2]
    elif isinstance(old, str):
        choices += [lambda: old + "x", lambda: old[:-1], lambda: old.upper()]
    return choices[int(rng.integers(len(choices)))]()


def _edit_json(meta: dict, rng) -> None:
    """One random edit somewhere in the metadata: a value replaced, a key deleted or added."""
    node = meta
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return
        k = keys[int(rng.integers(len(keys)))]
        child = node[k]
        if isinstance(child, (dict, list)) and child and rng.random() < 0.75:
            node = child
            continue
        op = rng.random()
        if isinstance(node, dict) and op < 0.2:
            del node[k]
        elif isinstance(node, dict) and op < 0.3:
            node["extra" + str(int(rng.integers(100)))] = _random_value(rng, None)
        elif isinstance(node, list) and op < 0.3:
            del node[k]
        else:
            node[k] = _random_value(rng, child)
        return


_SAME_LENGTH_DTYPES = [["float32", "float64", "float16"], ["int32", "int64", "int16"], ["int8", "bool"]]


def _edit_tensor_entry(meta: dict, rng) -> bool:
    """Change one input's or output's name, dtype, shape or nbytes without changing the
    length of the serialized metadata; False if the edit chosen cannot keep it."""
    entries = meta["inputs"] + meta["outputs"]
    e = entries[int(rng.integers(len(entries)))]
    field = ["name", "dtype", "shape", "nbytes"][int(rng.integers(4))]
    if field == "name":
        e["name"] = "".join(chr(int(rng.integers(97, 123))) for _ in e["name"])
    elif field == "dtype":
        group = next((g for g in _SAME_LENGTH_DTYPES if e["dtype"] in g), None)
        if group is None:
            return False
        e["dtype"] = group[int(rng.integers(len(group)))]
    elif field == "shape":
        if not e["shape"]:
            return False
        d = int(rng.integers(len(e["shape"])))
        e["shape"][d] = int(rng.integers(1, 10)) if e["shape"][d] < 10 else e["shape"][d] + 1
    else:
        e["nbytes"] = e["nbytes"] + _pick(rng, [-1, 1]) * (10 ** int(rng.integers(0, len(str(e["nbytes"])) - 1
                                                                                         if e["nbytes"] >= 10 else 1)))
    return True


def mutant(seed: int, i: int, originals: dict[str, bytes]):
    """Case ``i`` of ``seed``: (seed library name, kind, library bytes, signature bytes or
    None, public key PEM or None)."""
    rng = np.random.default_rng([seed, i])
    name = ["tree", "external"][int(rng.integers(2))]
    data = originals[name]
    kinds = KINDS if _keys() else KINDS[:-1]
    kind = kinds[int(rng.integers(len(kinds)))]
    elf, meta = _split(data)
    sig = key = None
    if kind == "truncate":
        data = data[:int(rng.integers(len(data)))]
    elif kind == "flip":
        data = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(len(data)))
            data[pos] ^= 1 << int(rng.integers(8))
        data = bytes(data)
    elif kind == "trailer_fields":
        version = _pick(rng, [0, 2, 2 ** 32 - 1]) if rng.random() < 0.5 else 1
        length = None if version != 1 and rng.random() < 0.5 else _pick(
            rng, [0, 1, len(meta) - 1, len(meta) + 1, len(meta) + len(elf), 2 ** 63, 2 ** 64 - 1, 52])
        data = _trailer(elf, meta, version, length)
    elif kind == "metadata_bytes":
        raw = bytearray(meta)
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(len(raw)))
            raw[pos] = int(rng.integers(256)) if rng.random() < 0.5 else raw[pos] ^ (1 << int(rng.integers(8)))
        data = _trailer(elf, bytes(raw))
    elif kind == "metadata_json":
        m = json.loads(meta)
        for _ in range(int(rng.integers(1, 3))):
            _edit_json(m, rng)
        data = _trailer(elf, json.dumps(m, ensure_ascii=False).encode())
    elif kind == "code_tables":   # both copies edited alike: only the code's tables tell
        for _ in range(20):
            m = json.loads(meta)
            if _edit_tensor_entry(m, rng):
                new = json.dumps(m, allow_nan=False, ensure_ascii=False).encode()
                if len(new) == len(meta):
                    break
        else:
            new = meta
        assert data.count(meta) == 2
        data = _seal(data.replace(meta, new)[:-40])
    else:   # signed: a good signature, then damage to the library or to the signature
        (k, pem), (other, _) = _keys()
        key = pem
        how = int(rng.integers(6))
        sig = (other if how == 3 else k).sign(data)   # signed, then changed
        if how == 1:     # a bit of the library flipped, checksum recomputed: code changed
            b = bytearray(data)
            b[int(rng.integers(len(b) - 40))] ^= 1 << int(rng.integers(8))
            data = _seal(bytes(b[:-40]))
        elif how == 2:   # the same, checksum left as it is
            b = bytearray(data)
            b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
            data = bytes(b)
        if how == 4:
            b = bytearray(sig)
            b[int(rng.integers(64))] ^= 1 << int(rng.integers(8))
            sig = bytes(b)
        elif how == 5:
            sig = sig[:int(rng.integers(64))] if rng.random() < 0.5 else sig + b"\0"
    return name, kind, data, sig, key


def _good_signature(data: bytes) -> bytes:
    return _keys()[0][0].sign(data)   # Ed25519 signatures are deterministic


# ----------------------------------------------------------------------------- the worker

class _Worker:
    def __init__(self, folder: str):
        import mlc
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(mlc.__file__))))
        self.stderr = open(os.path.join(folder, "worker.stderr"), "ab")
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, folder], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        ready = self.reply(CASE_TIMEOUT * 2)
        if ready != {"ready": True}:
            raise RuntimeError(f"the fuzz worker did not start: {ready}")

    def reply(self, timeout: float):
        """The worker's next JSON line, or a dict saying how it died or that it hung."""
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not readable:
            self.close()
            return {"died": f"no answer within {timeout:.0f} s (hung)"}
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.close()
            return {"died": f"the worker died ({'signal ' + str(-code) if code < 0 else 'exit ' + str(code)})"}
        return json.loads(line)

    def ask(self, job: dict) -> dict:
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            return {"died": "the worker had exited"}
        return self.reply(CASE_TIMEOUT)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.stderr):
            f.close()


def fuzz(seed: int, iterations: int) -> FuzzResult:
    result = FuzzResult("libraries")
    counts = {k: 0 for k in ("refused", "ran")}
    folder = tempfile.mkdtemp(prefix="mlc-fuzz-libraries-")
    worker = None
    try:
        build_seeds(folder)
        originals = {}
        for name in ("tree", "external"):
            with open(os.path.join(folder, name + ".so"), "rb") as f:
                originals[name] = f.read()
        worker = _Worker(folder)
        key_file = os.path.join(folder, "public.pem")
        for i in range(iterations):
            name, kind, data, sig, key = mutant(seed, i, originals)
            path = os.path.join(folder, "mutant.so")   # the same path each time: each load is a new file
            with open(path, "wb") as f:
                f.write(data)
            if sig is not None:
                with open(path + ".sig", "wb") as f:
                    f.write(sig)
                with open(key_file, "wb") as f:
                    f.write(key)
            elif os.path.exists(path + ".sig"):
                os.remove(path + ".sig")
            answer = worker.ask({"path": path, "seed": name, "key": key_file if key else None})
            result.cases += 1
            result.notes[kind] = result.notes.get(kind, 0) + 1
            where = f"seed {seed} case {i} ({kind} of {name}.so)"
            if "died" in answer:
                result.fail(f"{where}: {answer['died']}")
                worker = _Worker(folder)
            elif "wrong_error" in answer:
                result.fail(f"{where}: not a LibraryError: {answer['wrong_error']}")
            elif "ran" in answer:
                counts["ran"] += 1
                if not answer["ran"]:
                    result.fail(f"{where}: accepted, and its outputs differ from the original's")
                elif data != originals[name] or (sig is not None and sig != _good_signature(originals[name])):
                    # every byte is covered by the checksum or the signature: nothing changed runs
                    result.fail(f"{where}: a changed library was accepted (and ran correctly)")
            else:
                counts["refused"] += 1
        result.notes.update(counts)
    finally:
        if worker is not None:
            worker.close()
        shutil.rmtree(folder, ignore_errors=True)
    return result
