"""The passes after lowering are passes like the graph's: named at their level
(tensor, loop), dumped by --dump-ir, timed, and switched off by name."""
import numpy as np
import pytest

import mlc
from mlc.cli import main
from mlc.examples import mlp, mlp_inputs, mlp_numpy
from mlc.passes.manager import LOOP_PASSES, PIPELINES, TENSOR_PASSES, PassManager


def test_dump_ir_names_every_pass_at_every_level(tmp_path, capsys):
    assert main(["compile", "mlp", "--dump-ir", str(tmp_path), "--time-passes"]) == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    stems = [f.split("-", 1)[1] for f in files]
    want = ([f"{n}.graph.txt" for n in PIPELINES[2]] + [f"{p.name}.tensor.txt" for p in TENSOR_PASSES]
            + [f"{p.name}.loop.txt" for p in LOOP_PASSES])
    for w in want:
        assert w in stems, (w, files)
    # in pipeline order: lowering, then the tensor passes, scheduling, then the loop passes
    order = [stems.index(s) for s in ["lower.tensor.txt", *[f"{p.name}.tensor.txt" for p in TENSOR_PASSES],
                                      "schedule.loop.txt", *[f"{p.name}.loop.txt" for p in LOOP_PASSES]]]
    assert order == sorted(order)
    report = capsys.readouterr().out
    for p in TENSOR_PASSES + LOOP_PASSES:
        assert p.name in report
    # the loop passes leave no accumulation and no likely guard behind
    final = (tmp_path / files[stems.index(f"{LOOP_PASSES[-1].name}.loop.txt")]).read_text()
    scheduled = (tmp_path / files[stems.index("schedule.loop.txt")]).read_text()
    assert "+=" in scheduled and "+=" not in final


@pytest.mark.parametrize("name", [p.name for p in TENSOR_PASSES + LOOP_PASSES if not p.required])
def test_a_disabled_pass_is_skipped_and_the_results_stay_right(name, tmp_path):
    args = mlp_inputs(batch=5)
    pm = PassManager(2, dump_dir=tmp_path, disabled=[name])
    exe = mlc.compile(mlp, *args, pm=pm)
    np.testing.assert_allclose(exe(*args), mlp_numpy(*args), rtol=1e-4, atol=1e-5)
    names = [p.name.split("-", 1)[1].rsplit(".", 2)[0] for p in tmp_path.iterdir()]
    assert name not in names and "lower" in names


def test_disabling_inline_keeps_the_temporaries():
    args = mlp_inputs(batch=5)
    on = mlc.compile(mlp, *args).ir("tensor")
    off = mlc.compile(mlp, *args, pm=PassManager(2, disabled=["inline"])).ir("tensor")
    # without inlining, the bias add between the matmul and the relu stays a stage of its own
    assert "out[i, j] = max(T0[i, j] + C[j], 0.0)" in on and "T1[i, j] = T0[i, j] + C[j]" not in on
    assert "T1[i, j] = T0[i, j] + C[j]" in off and "out[i, j] = max(T1[i, j], 0.0)" in off


def test_disable_pass_errors(capsys):
    for required in ("partition", "lower_accumulate"):
        with pytest.raises(ValueError, match=f"pass {required} cannot be disabled: code generation needs its "
                                             "result \\(partition, lower_accumulate always run\\)"):
            PassManager(2, disabled=[required])
    with pytest.raises(ValueError, match="unknown pass 'inlining'; passes: infer_types, .*inline"):
        PassManager(2, disabled=["inlining"])
    with pytest.raises(SystemExit, match="--disable-pass: unknown pass 'nope'"):
        main(["compile", "mlp", "--disable-pass", "nope"])
    assert main(["compile", "mlp", "--disable-pass", "simplify_loops", "--disable-pass", "cse"]) == 0
