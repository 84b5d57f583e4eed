"""The ONNX mutation fuzzer's CI slice: every mutant of a few small valid models is
refused with OnnxImportError, or imports, compiles and runs to the reference's answer."""
from fuzz import ci_slice, onnx_files


def test_ci_slice():
    result = ci_slice("onnx_files")
    # the slice exercises both outcomes, not only refusals
    assert result.notes.get("matched", 0) >= 40 and result.notes.get("refused", 0) >= 200, result.notes


def test_seed_models_run_unmutated():
    for m in onnx_files.seeds():
        assert onnx_files.check(m.SerializeToString()) == "matched", m.graph.name


def test_mutants_replay():
    assert [onnx_files.mutant(5, i) for i in range(30)] == [onnx_files.mutant(5, i) for i in range(30)]
