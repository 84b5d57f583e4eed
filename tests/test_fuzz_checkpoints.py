"""The checkpoint mutation fuzzer's CI slice: every mutant is refused with
ParamsFormatError, or loads a tree that saves back to the very structure it was read from."""
import tempfile

from fuzz import ci_slice, checkpoints


def test_ci_slice():
    result = ci_slice("checkpoints")
    assert result.notes.get("loaded", 0) >= 50 and result.notes.get("refused", 0) >= 1000, result.notes


def test_seeds_load_and_mutants_replay():
    with tempfile.TemporaryDirectory() as folder:
        for buf in checkpoints.seeds():
            assert checkpoints.check(buf, folder) == "loaded"
    assert [checkpoints.mutant(2, i) for i in range(50)] == [checkpoints.mutant(2, i) for i in range(50)]
