"""The model-library mutation fuzzer's CI slice (every mutant refused with LibraryError
or run to the original's outputs, none crashing its worker), and its self-checks."""
import hashlib
import os
import signal
import tempfile

from fuzz import FUZZERS, libraries


def test_ci_slice():
    result = libraries.fuzz(0, FUZZERS["libraries"])
    print(result.summary())
    assert result.cases == FUZZERS["libraries"]
    assert not result.failures, "\n".join(result.failures)
    kinds = libraries.KINDS if libraries._keys() else libraries.KINDS[:-1]
    assert all(result.notes.get(k, 0) > 0 for k in kinds), result.notes
    assert result.notes["refused"] > 0.9 * result.cases


def test_mutants_replay_and_change_what_they_say():
    with tempfile.TemporaryDirectory() as d:
        libraries.build_seeds(d)
        originals = {n: open(os.path.join(d, n + ".so"), "rb").read() for n in ("tree", "external")}
    for i in range(60):
        a, b = libraries.mutant(5, i, originals), libraries.mutant(5, i, originals)
        assert a == b
        name, kind, data, sig, key = a
        if kind in ("trailer_fields", "metadata_bytes", "metadata_json", "code_tables"):
            assert data[-8:] == b"MLC_LIB\0"                       # the checksum was recomputed
            assert hashlib.sha256(data[:-40]).digest() == data[-40:-8]
        if kind == "code_tables":
            assert len(data) == len(originals[name])               # both copies edited alike
        assert (sig is None) == (kind != "signed")


def test_a_crashing_worker_is_reported_and_replaced():
    with tempfile.TemporaryDirectory() as d:
        libraries.build_seeds(d)
        worker = libraries._Worker(d)
        os.kill(worker.proc.pid, signal.SIGSEGV)
        answer = worker.ask({"path": os.path.join(d, "tree.so"), "seed": "tree", "key": None})
        assert answer["died"] in ("the worker died (signal 11)", "the worker had exited")
        worker = libraries._Worker(d)
        assert worker.ask({"path": os.path.join(d, "tree.so"), "seed": "tree", "key": None}) == {"ran": True}
        worker.close()
