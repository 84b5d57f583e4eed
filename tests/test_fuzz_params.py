"""The tensor-container mutation fuzzer's CI slice: every mutant of a params file is
refused with ParamsFormatError or loads exactly what its bytes say."""
from fuzz import ci_slice, params_files


def test_ci_slice():
    result = ci_slice("params_files")
    assert result.notes.get("loaded", 0) >= 50 and result.notes.get("refused", 0) >= 1000, result.notes


def test_seeds_load_and_mutants_replay():
    for buf in params_files.seeds():
        assert params_files.check(buf) == "loaded"
    assert [params_files.mutant(2, i) for i in range(50)] == [params_files.mutant(2, i) for i in range(50)]
