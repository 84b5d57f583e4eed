"""The conv layout thresholds come from the Target (defaults, JSON files, the key)."""
import numpy as np
import pytest

import mlc
from mlc.passes.layout import select_conv_layout
from mlc.passes.manager import PassManager
from mlc.target import LAYOUT_DEFAULTS, Target


def _narrow_conv():
    w = np.ones((4, 3, 3, 3), np.float32)
    return mlc.trace(lambda x: mlc.conv(x, w, pads=(1, 1, 1, 1)), np.zeros((1, 3, 8, 8), np.float32))


def ops_of(g):
    return [n.op for n in g.nodes if n.op != "constant"]


def test_defaults_are_the_measured_widths_and_move_an_8_wide_conv():
    assert Target.get("znver3").layout_thresholds() == LAYOUT_DEFAULTS == \
        {"conv_direct_min_width": 16, "conv_strided_direct_min_width": 64}
    assert ops_of(select_conv_layout(_narrow_conv(), Target.get("znver3"))) == ["im2col", "matmul", "reshape"]


def test_a_target_file_sets_the_widths_and_the_pass_manager_passes_the_target(tmp_path):
    path = tmp_path / "board.json"
    path.write_text('{"base": "znver3", "name": "board", "conv_direct_min_width": 4}')
    t = Target.get(str(path))
    assert (t.conv_direct_min_width, t.conv_strided_direct_min_width) == (4, 64)
    assert Target.from_json(t.to_json()) == t
    assert t.key != Target.get("znver3").key and t.key.startswith(Target.get("znver3").key)
    # 8 columns are wide enough for this target's direct kernel
    assert ops_of(PassManager(2, verify=True).run(_narrow_conv(), t)) == ["conv"]
    assert "im2col" in ops_of(PassManager(2, verify=True).run(_narrow_conv(), Target.get("znver3")))


def test_a_bad_width_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="'conv_strided_direct_min_width' must be a whole number >= 1"):
        Target.from_json({"base": "znver3", "name": "b", "conv_strided_direct_min_width": 0})
