"""Layout selection for convolution: keep the direct NCHW convolution, or recast it
as a matrix product over a [channels x taps, positions] layout of the input.

The direct kernel vectorizes along the output width, so it is fast when rows are
wide (56 x 56 maps: ~58 GFLOP/s on this 2-core AVX2 host) and slow when they are
narrow (7 x 7 maps: ~4 GFLOP/s; 1x1 convolutions on 14 x 14 maps: ~9 GFLOP/s). The
matrix form ``W[M, C*KH*KW] @ X[N, C*KH*KW, OH*OW]`` runs on the matmul micro-kernel
(~100 GFLOP/s) whatever the map size, at the price of writing the rearranged
input once (nothing for a 1x1, stride-1 convolution: a reshape). So a convolution
moves to the matrix layout when its output rows are narrower than
``DIRECT_MIN_WIDTH`` or when it is 1x1 with stride 1; the reshapes into and out of
that layout are inserted once, around the convolution, and fuse with its
neighbours. Grouped convolutions and weights that are not constants stay direct.
"""
from __future__ import annotations

from ..ir.graph import Graph, Node
from .simplify import constant_value, eliminate_dead_code, emit, rebuild

DIRECT_MIN_WIDTH = 16   # output widths from which the direct kernel fills its vector tiles


def use_matrix_form(n: Node) -> bool:
    if n.op != "conv":
        return False
    x, w = n.inputs
    if x.type.rank != 4 or n.attrs["group"] != 1 or constant_value(w) is None:
        return False
    pointwise = w.shape[2:] == (1, 1) and tuple(n.attrs["strides"]) == (1, 1) and not any(n.attrs["pads"])
    return pointwise or n.outputs[0].shape[3] < DIRECT_MIN_WIDTH


def select_conv_layout(graph: Graph) -> Graph:
    def rule(n: Node, ins, b):
        if not use_matrix_form(n):
            return None
        x, w = ins
        N, C = x.shape[:2]
        M, _, KH, KW = w.shape
        _, _, OH, OW = n.outputs[0].shape
        sh, sw = n.attrs["strides"]
        dh, dw = n.attrs["dilations"]
        pads = list(n.attrs["pads"])
        loc = n.loc
        if (KH, KW) == (1, 1) and (sh, sw) == (1, 1) and not any(pads):
            cols = emit(b, "reshape", [x], loc, shape=[N, C, OH * OW])
        else:
            if any(pads):
                x = emit(b, "pad", [x], loc, pads=[0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]])
            taps = []
            for kh in range(KH):
                for kw in range(KW):
                    tap = emit(b, "slice", [x], loc, begin=[0, 0, kh * dh, kw * dw],
                               end=[N, C, kh * dh + (OH - 1) * sh + 1, kw * dw + (OW - 1) * sw + 1],
                               step=[1, 1, sh, sw])
                    taps.append(emit(b, "expand_dims", [tap], loc, axis=[2]))
            stacked = taps[0] if len(taps) == 1 else emit(b, "concatenate", taps, loc, axis=2)
            cols = emit(b, "reshape", [stacked], loc, shape=[N, C * KH * KW, OH * OW])
        weights = b.constant(constant_value(w).reshape(M, C * KH * KW))
        y = emit(b, "matmul", [weights, cols], loc)
        return [emit(b, "reshape", [y], loc, shape=[N, M, OH, OW])]

    return eliminate_dead_code(rebuild(graph, rule))

