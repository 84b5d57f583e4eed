"""The model-library mutation fuzzer's CI slice (every mutant refused with LibraryError
or run to the original's outputs, none crashing its worker), and its self-checks."""
import hashlib
import os
import signal

import pytest

from fuzz import ci_slice, libraries


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seeds")
    libraries.build_seeds(str(folder))
    return str(folder)


def test_ci_slice():
    result = ci_slice("libraries")
    kinds = libraries.KINDS if libraries._keys() else libraries.KINDS[:-1]
    assert all(result.notes.get(k, 0) > 0 for k in kinds), result.notes
    assert result.notes["refused"] > 0.9 * result.cases


def test_mutants_replay_and_change_what_they_say(seeds):
    originals = {n: open(os.path.join(seeds, n + ".so"), "rb").read() for n in ("tree", "external")}
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


def test_a_crashing_worker_is_reported_and_replaced(seeds):
    job = {"path": os.path.join(seeds, "tree.so"), "seed": "tree", "key": None}
    worker = libraries._Worker(seeds)
    os.kill(worker.proc.pid, signal.SIGSEGV)
    assert worker.ask(job)["died"] in ("the worker died (signal 11)", "the worker had exited")
    worker = libraries._Worker(seeds)
    assert worker.ask(job) == {"ran": True}
    worker.close()
