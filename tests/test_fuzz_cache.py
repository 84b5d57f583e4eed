"""The compile-cache mutation fuzzer's CI slice: truncated, flipped, extended, swapped,
old-format and empty entries are never served; compiled functions give numpy's answer."""
from fuzz import FUZZERS, ci_slice, cache_entries


def test_ci_slice():
    result = ci_slice("cache_entries")
    assert all(result.notes.get(k, 0) > 0 for k in cache_entries.KINDS), result.notes
    assert result.notes["recompiled"] >= FUZZERS["cache_entries"] // cache_entries.END_TO_END_EVERY


def test_mutants_replay():
    entries = {"a" * 64: b"MLCOBJ02" + bytes(32) + b"payload a", "b" * 64: b"MLCOBJ02" + bytes(32) + b"payload b"}
    for i in range(50):
        assert cache_entries.mutant(3, i, entries) == cache_entries.mutant(3, i, entries)
