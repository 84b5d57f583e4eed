"""The compile cache of whole graphs (runtime.graph_cache): another function tracing to
the same graph loads the compiled graph without the pipeline, with the same results and
the same levels; a damaged entry is detected and compiled again; anything the code
depends on (target, opt level, constants, tuning records) is part of the key."""
import dataclasses
import os
import warnings

import numpy as np
import pytest

import mlc
from mlc import driver
from mlc.passes.manager import PassManager
from mlc.runtime import graph_cache
from mlc.schedule.database import TuningDB


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    """A cache folder of the test's own, so entries of other tests neither hit nor count."""
    monkeypatch.setenv("MLC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _counts():
    return dict(graph_cache.COUNTS)


def _delta(before):
    return {k: graph_cache.COUNTS[k] - before[k] for k in before}


def first(x, w):
    return mlc.relu(x @ w + 1.0).sum(axis=1)


def second(x, w):   # another function (another name) that traces to the same graph
    y = x @ w
    return mlc.relu(y + 1.0).sum(axis=1)


def test_another_function_with_the_same_graph_loads_the_compiled_graph():
    x, w = f32(8, 16), f32(16, 4, seed=1)
    before = _counts()
    a = mlc.compile(first, x, w)
    assert _delta(before) == {"hits": 0, "misses": 1, "damaged": 0}
    pm = PassManager()
    b = driver.compile(second, x, w, pm=pm)
    assert _delta(before) == {"hits": 1, "misses": 1, "damaged": 0}
    assert [n for n, _ in pm.timings] == ["graph cache"]          # no pass ran
    want = np.maximum(x @ w + 1, 0).sum(axis=1)
    np.testing.assert_allclose(b(x, w), want, rtol=1e-5)
    np.testing.assert_array_equal(b(x, w), a(x, w))
    assert b.name == "second" and b.input_names == ["x", "w"]
    assert b.stats == a.stats and b.workspace_bytes == a.workspace_bytes
    # the levels are rebuilt on demand, and are those the cached code was made of
    assert b.ir("loop") == a.ir("loop")
    assert b.ir("tensor") == a.ir("tensor")
    assert b.ir("graph").startswith("graph @second(")
    report = b.profile(x, w, runs=2, warmup=1)
    assert len(report.kernels) == a.stats["kernels"]


def test_jit_of_a_new_function_hits_and_checks_its_arguments():
    x = f32(4)
    mlc.jit(lambda a: a * 2.0 + 1.0)(x)
    before = _counts()
    g = mlc.jit(lambda a: a * 2.0 + 1.0)
    np.testing.assert_allclose(g(x), x * 2 + 1, rtol=1e-6)
    assert _delta(before)["hits"] == 1
    with pytest.raises(TypeError, match="argument 'a' expects f32\\[4\\]"):
        g.lower(x)(x.astype(np.float64))


def _graph_entries(folder):
    graph_cache.wait_for_stores()   # compile returns before its entry is written
    out = []
    for d, _, files in os.walk(folder):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                if graph_cache.FORMAT.encode() in fh.read():
                    out.append(os.path.join(d, f))
    return out


def test_a_damaged_entry_is_detected_and_compiled_again(fresh_cache):
    x, w = f32(8, 16), f32(16, 4, seed=1)
    want = mlc.compile(first, x, w)(x, w)
    (entry,) = _graph_entries(fresh_cache)
    with open(entry, "r+b") as f:   # one byte of the object code flipped
        f.seek(os.path.getsize(entry) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    before = _counts()
    with pytest.warns(RuntimeWarning, match="corrupted"):
        exe = mlc.compile(second, x, w)
    assert _delta(before)["misses"] == 1 and _delta(before)["hits"] == 0
    np.testing.assert_array_equal(exe(x, w), want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(mlc.compile(first, x, w)(x, w), want)   # rewritten whole
    assert _delta(before)["hits"] == 1


def test_an_entry_that_mlc_did_not_write_is_compiled_again():
    x, w = f32(8, 16), f32(16, 4, seed=1)
    graph = mlc.trace(first, x, w)
    key = driver._graph_key(graph, mlc.Target.get("host"), PassManager(), None, None)
    from mlc.runtime import cache
    cache.store(key, b"not a compiled graph")   # a valid cache entry under the key, not of this format
    before = _counts()
    with pytest.warns(RuntimeWarning, match="compiled-graph cache entry .* is not readable"):
        exe = driver.compile_graph(graph)
    assert _delta(before) == {"hits": 0, "misses": 1, "damaged": 1}
    np.testing.assert_allclose(exe(x, w), np.maximum(x @ w + 1, 0).sum(axis=1), rtol=1e-5)
    driver.compile_graph(graph)
    assert _delta(before)["hits"] == 1


def test_target_opt_level_constants_and_tuning_records_are_in_the_key(tmp_path):
    x, w = f32(8, 16), f32(16, 4, seed=1)
    mlc.compile(first, x, w)
    before = _counts()
    host = mlc.Target.get("host")
    mlc.compile(first, x, w, target=dataclasses.replace(host, cores=host.cores + 2))
    mlc.compile(first, x, w, opt_level=1)
    assert _delta(before) == {"hits": 0, "misses": 2, "damaged": 0}
    c1, c2 = f32(100, seed=3), f32(100, seed=4)   # the same graph text, other constants' bytes
    e1 = mlc.compile(lambda v: v * c1, c1)
    e2 = mlc.compile(lambda v: v * c2, c1)
    np.testing.assert_allclose(e2(c1), c1 * c2, rtol=1e-6)
    np.testing.assert_allclose(e1(c1), c1 * c1, rtol=1e-6)
    assert _delta(before)["hits"] == 0
    db = str(tmp_path / "tuning.db")
    TuningDB(db).close()
    mlc.compile(first, x, w, db=db)
    mlc.compile(second, x, w, db=db)
    assert _delta(before)["hits"] == 1
    with TuningDB(db) as d:
        d.add("some-kernel", host.key, {"steps": []}, [1e-3])
    exe = mlc.compile(first, x, w, db=db)
    assert _delta(before)["hits"] == 1   # a record added: compiled again
    np.testing.assert_allclose(exe(x, w), np.maximum(x @ w + 1, 0).sum(axis=1), rtol=1e-5)


def test_no_cache_when_ir_dumps_are_asked_for(tmp_path):
    x, w = f32(8, 16), f32(16, 4, seed=1)
    mlc.compile(first, x, w)
    before = _counts()
    pm = PassManager(dump_dir=tmp_path / "dump")
    mlc.compile(first, x, w, pm=pm)
    assert _delta(before) == {"hits": 0, "misses": 0, "damaged": 0}
    assert os.listdir(tmp_path / "dump")


def test_a_compiled_graph_from_the_cache_exports_a_library(tmp_path):
    x, w = f32(8, 16), f32(16, 4, seed=1)
    mlc.compile(first, x, w)
    before = _counts()
    exe = mlc.compile(second, x, w)
    assert _delta(before)["hits"] == 1
    path = str(tmp_path / "second.so")
    exe.export(path)
    lib = mlc.load(path)
    assert lib.metadata["name"] == "second"
    np.testing.assert_allclose(lib(x, w), np.maximum(x @ w + 1, 0).sum(axis=1), rtol=1e-5)
