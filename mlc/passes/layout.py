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
A grouped 1x1 convolution (ShuffleNet's) is a batch of matrix products, one per
group: ``W[G, M/G, C/G] @ X[N, G, C/G, H*W]``; its direct kernel vectorizes along the
width too, and at 7x7 ran at 4.5 GFLOP/s against 40+ in the batched matrix form.
Other grouped convolutions (depthwise among them) and weights that are not constants
stay direct.
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
    if x.type.rank != 4 or constant_value(w) is None:
        return False
    if n.attrs["group"] != 1:   # grouped: only 1x1 with several channels per group (not depthwise)
        return _pointwise(n) and w.shape[1] > 1
    pointwise = _pointwise(n)
    width = n.outputs[0].shape[3]
    strided = any(s > 1 for s in n.attrs["strides"])
    widths = target.layout_thresholds() if target is not None else LAYOUT_DEFAULTS
    return pointwise or width < widths["conv_direct_min_width"] or \
        (strided and width < widths["conv_strided_direct_min_width"])


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
        if G != 1:   # one matrix product per group, batched: [G, M/G, C/G] @ [N, G, C/G, H*W]
            cols = emit(b, "reshape", [x], loc, shape=[N, G, C // G, OH * OW])
            weights = b.constant(constant_value(w).reshape(G, M // G, C // G))
            y = emit(b, "matmul", [weights, cols], loc)
            return [emit(b, "reshape", [y], loc, shape=[N, M, OH, OW])]
        sh, sw = n.attrs["strides"]
        dh, dw = n.attrs["dilations"]
        pads = list(n.attrs["pads"])
        if (KH, KW) == (1, 1) and (sh, sw) == (1, 1) and not any(pads):
            cols = emit(b, "reshape", [x], loc, shape=[N, C, OH * OW])
        else:
            cols = emit(b, "im2col", [x], loc, kernel_shape=[KH, KW], strides=[sh, sw], pads=pads,
                        dilations=[dh, dw])
        weights = b.constant(constant_value(w).reshape(M, C * KH * KW))
        y = emit(b, "matmul", [weights, cols], loc)
        return [emit(b, "reshape", [y], loc, shape=[N, M, OH, OW])]

    return eliminate_dead_code(rebuild(graph, rule))

