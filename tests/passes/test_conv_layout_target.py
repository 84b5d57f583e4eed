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


def test_weights_given_as_an_input_take_the_matrix_form_through_a_view():
    """A training step's weights are inputs, not constants: a narrow convolution still runs
    as im2col and a matrix product (its weights reshaped, a view), not a scalar direct loop."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, 13, 13)).astype(np.float32)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    f = lambda x, w: mlc.conv(x, w, pads=(1, 1, 1, 1))
    g = select_conv_layout(mlc.trace(f, x, w), Target.get("znver3"))
    assert sorted(ops_of(g)) == ["im2col", "matmul", "reshape", "reshape"]
    exe = mlc.compile(f, x, w)
    assert "im2col" in exe.ir("fused")
    cols = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    want = np.einsum("nchwij,mcij->nmhw", cols, w)
    np.testing.assert_allclose(exe(x, w), want, rtol=1e-4, atol=1e-4)


def test_a_grouped_convolution_is_a_batch_of_matrix_products():
    """AlexNet's grouped 3x3 convolutions on 13x13: im2col, then one matrix product per
    group, batched; depthwise convolutions stay direct."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 8, 13, 13)).astype(np.float32)
    w = rng.standard_normal((12, 4, 3, 3)).astype(np.float32)
    f = lambda x, w: mlc.conv(x, w, pads=(1, 1, 1, 1), group=2)
    assert "im2col" in ops_of(select_conv_layout(mlc.trace(f, x, w), Target.get("znver3")))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
    want = np.concatenate([np.einsum("nchwij,mcij->nmhw", cols[:, 4 * g:4 * g + 4], w[6 * g:6 * g + 6])
                           for g in range(2)], axis=1)
    np.testing.assert_allclose(mlc.compile(f, x, w)(x, w), want, rtol=1e-4, atol=1e-4)
    dw = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    depthwise = mlc.trace(lambda x: mlc.conv(x, dw, pads=(1, 1, 1, 1), group=8), x)
    assert ops_of(select_conv_layout(depthwise, Target.get("znver3"))) == ["conv"]
