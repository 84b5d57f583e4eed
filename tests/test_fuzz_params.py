"""The tensor-container mutation fuzzer's CI slice: every mutant of a params file is
refused with ParamsFormatError or loads exactly what its bytes say."""
from fuzz import FUZZERS, params_files


def test_ci_slice():
    result = params_files.fuzz(0, FUZZERS["params_files"])
    print(result.summary())
    assert result.cases == FUZZERS["params_files"]
    assert not result.failures, "\n".join(result.failures)
    assert result.notes.get("loaded", 0) >= 50 and result.notes.get("refused", 0) >= 1000, result.notes


def test_seeds_load_and_mutants_replay():
    for buf in params_files.seeds():
        assert params_files.check(buf) == "loaded"
    assert [params_files.mutant(2, i) for i in range(50)] == [params_files.mutant(2, i) for i in range(50)]
