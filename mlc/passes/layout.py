"""Layout selection for convolution: keep the direct NCHW convolution, or recast it
as a matrix product over a [channels x taps, positions] layout of the input.

The direct kernel vectorizes along the output width, so it is fast when rows are
wide and read contiguously, and slow otherwise. Measured on this 2-core AVX2 host
(GFLOP/s, direct vs matrix form): 3x3 on 56x56 74 vs 28; the 7x7 stride-2 stem
(112 wide) 95 vs 45; 3x3 on 7x7 3.8 vs 97; 3x3 stride 2 to 28 wide 19 vs 61; 1x1
on 14x14 8.6 vs 75. The matrix form ``W[M, C*KH*KW] @ im2col(X)[N, C*KH*KW, OH*OW]``
runs on the matmul micro-kernel whatever the map size, at the price of writing the
rearranged input once (nothing for a 1x1, stride-1 convolution: a reshape). So a
convolution moves to the matrix layout when it is 1x1 with stride 1, when its
output rows are narrower than the target's ``conv_direct_min_width``, or when it is
strided and narrower than its ``conv_strided_direct_min_width`` (``mlc.target``:
defaults are the widths measured here, a target file may set others); the
reshapes into and out of that layout are inserted once, around the convolution,
and fuse with its neighbours.
A grouped convolution is a batch of matrix products, one per group,
``W[G, M/G, C/G*KH*KW] @ im2col(X)[N, G, C/G*KH*KW, OH*OW]`` (for a 1x1 one, ShuffleNet's,
X itself reshaped): its direct kernel ran at 4.5 GFLOP/s at 7x7 (1x1) and on AlexNet's
grouped 3x3 on 13x13, against 40+ in the batched matrix form. Depthwise convolutions
(one channel per group) stay direct. Weights that are not constants (a training
step's) take the same forms through a reshape, a view: a 3x3 convolution on 13x13
with its weights an input ran scalar at 4.0 GFLOP/s, 110 in the matrix form.
"""
from __future__ import annotations

from ..ir.graph import Graph, Node
from ..target import LAYOUT_DEFAULTS, Target
from .simplify import constant_value, eliminate_dead_code, emit, rebuild


def _pointwise(n: Node) -> bool:
    return n.inputs[1].shape[2:] == (1, 1) and tuple(n.attrs["strides"]) == (1, 1) and not any(n.attrs["pads"])


def use_matrix_form(n: Node, target: Target | None = None) -> bool:
    if n.op != "conv":
        return False
    x, w = n.inputs
    if x.type.rank != 4:
        return False
    if constant_value(w) is None and target is not None and target.kind == "cuda":
        return False   # on a GPU the direct kernel is an implicit GEMM already
    if n.attrs["group"] != 1 and w.shape[1] == 1:   # depthwise: one channel per group, stays direct
        return False
    pointwise = _pointwise(n)
    width = n.outputs[0].shape[3]
    strided = any(s > 1 for s in n.attrs["strides"])
    widths = target.layout_thresholds() if target is not None else LAYOUT_DEFAULTS
    return pointwise or width < widths["conv_direct_min_width"] or \
        (strided and width < widths["conv_strided_direct_min_width"])


def _weights(b, w, shape, loc):
    """The weights as the matrix form's left operand: a constant reshaped now, or (the
    weights of a training step, a graph input) a reshape, which is a view."""
    value = constant_value(w)
    return b.constant(value.reshape(shape)) if value is not None else emit(b, "reshape", [w], loc, shape=list(shape))


def select_conv_layout(graph: Graph, target: Target | None = None) -> Graph:
    """Convolutions in matrix form where ``target`` (default: the default thresholds) says so."""
    def rule(n: Node, ins, b):
        if not use_matrix_form(n, target):
            return None
        x, w = ins
        N, C = x.shape[:2]
        M, _, KH, KW = w.shape
        _, _, OH, OW = n.outputs[0].shape
        G = n.attrs["group"]
        loc = n.loc
        sh, sw = n.attrs["strides"]
        dh, dw = n.attrs["dilations"]
        pads = list(n.attrs["pads"])
        if (KH, KW) == (1, 1) and (sh, sw) == (1, 1) and not any(pads):
            cols = emit(b, "reshape", [x], loc, shape=[N, C, OH * OW])
        else:   # rows c * KH * KW + kh * KW + kw, as the weights [M, C/G, KH, KW] flatten
            cols = emit(b, "im2col", [x], loc, kernel_shape=[KH, KW], strides=[sh, sw], pads=pads,
                        dilations=[dh, dw])
        K = C // G * KH * KW
        if G != 1:   # one matrix product per group, batched: [G, M/G, K] @ [N, G, K, OH*OW]
            cols = emit(b, "reshape", [cols], loc, shape=[N, G, K, OH * OW])
            weights = _weights(b, w, (G, M // G, K), loc)
        else:
            weights = _weights(b, w, (M, K), loc)
        y = emit(b, "matmul", [weights, cols], loc)
        return [emit(b, "reshape", [y], loc, shape=[N, M, OH, OW])]

    return eliminate_dead_code(rebuild(graph, rule))

