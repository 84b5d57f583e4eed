"""ResNet-18 and ResNet-50 as torchvision builds them (ResNet v1.5: the stride of a
bottleneck on its 3x3 convolution), over NCHW float32 images."""
from __future__ import annotations

from ..frontend.trace import apply as op
from ..nn import BatchNorm2d, Conv2d, Linear, MaxPool2d
from .base import Model, batch_norm_names, conv_names, linear_names


class _Block:
    """One residual block: its convolutions and BatchNorms (names as torchvision's),
    and a 1x1 strided projection of the shortcut where the shape changes."""

    def __init__(self, kind: str, in_ch: int, width: int, stride: int, expansion: int):
        out = width * expansion
        if kind == "basic":
            self.convs = [Conv2d(in_ch, width, 3, stride, 1, bias=False), Conv2d(width, width, 3, 1, 1, bias=False)]
        else:
            self.convs = [Conv2d(in_ch, width, 1, bias=False), Conv2d(width, width, 3, stride, 1, bias=False),
                          Conv2d(width, out, 1, bias=False)]
        self.norms = [BatchNorm2d(c.out_channels) for c in self.convs]
        self.downsample = (Conv2d(in_ch, out, 1, stride, bias=False), BatchNorm2d(out)) \
            if stride != 1 or in_ch != out else None

    def init_with(self, rng):
        params, state = {}, {}
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms), 1):
            params[f"conv{i}"] = conv.init_with(rng)[0]
            params[f"bn{i}"], state[f"bn{i}"] = norm.init_with(rng)
        if self.downsample:
            conv, norm = self.downsample
            bn_p, bn_s = norm.init_with(rng)
            params["downsample"], state["downsample"] = [conv.init_with(rng)[0], bn_p], [{}, bn_s]
        return params, state

    def apply(self, params, state, x, train):
        new_state = {}
        y = x
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms), 1):
            y, new_state[f"bn{i}"] = norm.apply(params[f"bn{i}"], state[f"bn{i}"],
                                                conv.forward(params[f"conv{i}"], y), train=train)
            if i < len(self.convs):
                y = op("relu", y)
        if self.downsample:
            conv, norm = self.downsample
            shortcut, bn_s = norm.apply(params["downsample"][1], state["downsample"][1],
                                        conv.forward(params["downsample"][0], x), train=train)
            new_state["downsample"] = [{}, bn_s]
        else:
            shortcut = x
        return op("relu", y + shortcut), new_state

    def torch_names(self, prefix: str, path: tuple):
        for i in range(1, len(self.convs) + 1):
            yield from conv_names(f"{prefix}.conv{i}", path + (f"conv{i}",))
            yield from batch_norm_names(f"{prefix}.bn{i}", path + (f"bn{i}",))
        if self.downsample:
            yield from conv_names(f"{prefix}.downsample.0", path + ("downsample", 0))
            yield from batch_norm_names(f"{prefix}.downsample.1", path + ("downsample", 1))


class ResNet(Model):
    """conv1 7x7/2 (64) + BatchNorm + ReLU, max pool 3x3/2, four stages of residual
    blocks (64, 128, 256, 512 wide; the last three start with stride 2), global
    average pool, fc. Input [N, in_channels, H, W] float32 (224x224 for ImageNet;
    any size from 32x32 works); output logits [N, num_classes].

    params and state follow torchvision's names: params["layer2"][0]["conv1"]["w"]
    is torchvision's layer2.0.conv1.weight, state["bn1"]["mean"] its bn1.running_mean."""

    has_state = True

    def __init__(self, kind: str, blocks: tuple, num_classes: int = 1000, in_channels: int = 3):
        if kind not in ("basic", "bottleneck"):
            raise ValueError(f"ResNet: kind must be 'basic' or 'bottleneck', got {kind!r}")
        self.kind, self.blocks = kind, tuple(blocks)
        self.num_classes, self.in_channels = num_classes, in_channels
        expansion = 1 if kind == "basic" else 4
        self._conv1 = Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self._bn1 = BatchNorm2d(64)
        self._pool = MaxPool2d(3, 2, 1)
        self._stages = []
        ch = 64
        for s, (n, width) in enumerate(zip(self.blocks, (64, 128, 256, 512))):
            stage = []
            for b in range(n):
                stage.append(_Block(kind, ch, width, 2 if s > 0 and b == 0 else 1, expansion))
                ch = width * expansion
            self._stages.append(stage)
        self._fc = Linear(ch, num_classes)

    def init_with(self, rng):
        params = {"conv1": self._conv1.init_with(rng)[0]}
        state = {}
        params["bn1"], state["bn1"] = self._bn1.init_with(rng)
        for s, stage in enumerate(self._stages, 1):
            ps, ss = zip(*(block.init_with(rng) for block in stage))
            params[f"layer{s}"], state[f"layer{s}"] = list(ps), list(ss)
        params["fc"] = self._fc.init_with(rng)[0]
        return params, state

    def apply(self, params, state, x, train: bool = False, seed=None):
        if len(x.shape) != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ResNet: expected images [N, {self.in_channels}, H, W], got shape {tuple(x.shape)}")
        new_state = {}
        y, new_state["bn1"] = self._bn1.apply(params["bn1"], state["bn1"], self._conv1.forward(params["conv1"], x),
                                              train=train)
        y = self._pool.forward({}, op("relu", y))
        for s, stage in enumerate(self._stages, 1):
            new_state[f"layer{s}"] = []
            for block, p, st in zip(stage, params[f"layer{s}"], state[f"layer{s}"]):
                y, st = block.apply(p, st, y, train)
                new_state[f"layer{s}"].append(st)
        y = op("mean", y, axis=(2, 3))   # the global average pool
        return self._fc.forward(params["fc"], y), new_state

    def torch_names(self):
        yield from conv_names("conv1", ("conv1",))
        yield from batch_norm_names("bn1", ("bn1",))
        for s, stage in enumerate(self._stages, 1):
            for b, block in enumerate(stage):
                yield from block.torch_names(f"layer{s}.{b}", (f"layer{s}", b))
        yield from linear_names("fc", ("fc",))

    ignored_torch_names = ("num_batches_tracked",)

    def __repr__(self) -> str:
        return f"ResNet(kind={self.kind!r}, blocks={self.blocks}, num_classes={self.num_classes})"


def resnet18(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """torchvision's resnet18: BasicBlocks, 2-2-2-2 (11.7M parameters at 1000 classes)."""
    return ResNet("basic", (2, 2, 2, 2), num_classes, in_channels)


def resnet50(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """torchvision's resnet50: Bottlenecks, 3-4-6-3 (25.6M parameters at 1000 classes)."""
    return ResNet("bottleneck", (3, 4, 6, 3), num_classes, in_channels)
