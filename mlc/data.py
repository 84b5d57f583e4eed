"""Input pipelines for training: image augmentations (NCHW, float32) and a resumable DataLoader.

Every transform is a small object called as ``t(x, rng)`` with a batch ``x`` of
shape (N, C, H, W) and a ``np.random.Generator``, so transforms chain with
``Compose`` and a ``DataLoader`` drives them from its own seeded generator. The
functions (``random_crop(x, 4, rng=rng)``, ...) are one-line shortcuts for the
classes. Transforms return new float32 arrays and never modify their input.

    aug = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), Normalize(mean, std)])
    loader = DataLoader(images, labels, batch_size=128, seed=0, transform=aug)
    for epoch in range(10):
        for xb, yb in loader:
            ...
    json.dump(loader.state_dict(), f)   # and later loader.load_state_dict(json.load(f))
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _images(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"expected a batch of images of shape (N, C, H, W), got shape {x.shape}")
    return x


def _pair(v, what: str) -> tuple[int, int]:
    hw = (v, v) if np.ndim(v) == 0 else tuple(v)
    if len(hw) != 2 or any(int(d) != d or d < 1 for d in hw):
        raise ValueError(f"{what} must be a positive int or a pair (h, w) of them, got {v!r}")
    return int(hw[0]), int(hw[1])


class RandomHorizontalFlip:
    """Mirror each sample left-right (along W) independently with probability ``p``."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, x, rng: np.random.Generator) -> np.ndarray:
        x = _images(x)
        out = x.copy()
        flip = rng.random(len(x)) < self.p
        out[flip] = x[flip, :, :, ::-1]
        return out


class RandomCrop:
    """Pad H and W by ``padding`` on each side with ``fill``, then cut a random window of
    ``size`` (int or (h, w)) per sample."""

    def __init__(self, size, padding: int = 0, fill: float = 0.0):
        self.size = _pair(size, "RandomCrop: size")
        if int(padding) != padding or padding < 0:
            raise ValueError(f"RandomCrop: padding must be a non-negative int, got {padding!r}")
        self.padding, self.fill = int(padding), float(fill)

    def __call__(self, x, rng: np.random.Generator) -> np.ndarray:
        x = _images(x)
        p, (h, w) = self.padding, self.size
        if p:
            x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=self.fill)
        n, _, ph, pw = x.shape
        if h > ph or w > pw:
            raise ValueError(f"RandomCrop: crop {h}x{w} is larger than the padded image {ph}x{pw}")
        top = rng.integers(0, ph - h + 1, size=n)
        left = rng.integers(0, pw - w + 1, size=n)
        # windows[n, c, i, j] is the h x w window at (i, j); pick one per sample (all channels).
        windows = sliding_window_view(x, (h, w), axis=(2, 3))
        return np.ascontiguousarray(windows[np.arange(n), :, top, left])


class RandomRescale:
    """Zoom each sample by a factor drawn uniformly from ``scale`` = (low, high), bilinear
    (half-pixel centers, edges clamped), then center-crop or zero-pad back to H x W."""

    def __init__(self, scale: Sequence[float] = (0.9, 1.1)):
        lo, hi = scale
        if not 0 < lo <= hi:
            raise ValueError(f"RandomRescale: scale must be (low, high) with 0 < low <= high, got {scale!r}")
        self.scale = (float(lo), float(hi))

    def __call__(self, x, rng: np.random.Generator) -> np.ndarray:
        x = _images(x)
        n, _, h, w = x.shape
        s = rng.uniform(*self.scale, size=n)
        # Rather than resize to a per-sample size and then crop/pad, map each output pixel
        # straight back to the source, so the whole batch is a few vectorized gathers.
        rows, row_ok = _source_coords(h, np.maximum(1, np.rint(h * s)).astype(np.int64))
        cols, col_ok = _source_coords(w, np.maximum(1, np.rint(w * s)).astype(np.int64))
        # Bilinear is separable: interpolate along H, then along W.
        out = _lerp(x, rows, axis=2)
        out = _lerp(out, cols, axis=3)
        mask = (row_ok[:, :, None] & col_ok[:, None, :])[:, None]   # zero where padded
        return np.where(mask, out, np.float32(0))


def _lerp(x: np.ndarray, src: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``x`` (N, C, H, W) along ``axis`` at per-sample source
    coordinates ``src`` (N, size), already clamped to the valid range."""
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, x.shape[axis] - 1)
    frac = (src - i0).astype(np.float32)
    shape = (len(x), 1, -1, 1) if axis == 2 else (len(x), 1, 1, -1)
    i0, i1, frac = i0.reshape(shape), i1.reshape(shape), frac.reshape(shape)
    return (np.take_along_axis(x, i0, axis) * (1 - frac) + np.take_along_axis(x, i1, axis) * frac)


def _source_coords(size: int, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For output positions 0..size-1 of images resized to ``new`` (per sample) and then
    centered in ``size``: the source coordinate (clamped) and whether the position lies
    inside the resized image (False where it is padding)."""
    k = np.arange(size)[None, :] + (new[:, None] - size) // 2   # position in the resized image
    src = (k + 0.5) * (size / new[:, None]) - 0.5
    return np.clip(src, 0, size - 1), (k >= 0) & (k < new[:, None])


class Normalize:
    """``(x - mean[c]) / std[c]`` per channel; ``mean``/``std`` are scalars or length-C sequences."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1)
        if np.any(self.std <= 0):
            raise ValueError(f"Normalize: std must be positive, got {std!r}")

    def __call__(self, x, rng: np.random.Generator | None = None) -> np.ndarray:
        x = _images(x)
        for name, v in (("mean", self.mean), ("std", self.std)):
            if v.size not in (1, x.shape[1]):
                raise ValueError(f"Normalize: {name} has {v.size} values for {x.shape[1]} channels")
        return (x - self.mean[:, None, None]) / self.std[:, None, None]


class Compose:
    """Apply ``transforms`` in order, each as ``t(x, rng)`` with the same generator."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, x, rng: np.random.Generator) -> np.ndarray:
        for t in self.transforms:
            x = t(x, rng)
        return x


def random_horizontal_flip(x, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Flip each sample of the NCHW batch ``x`` left-right with probability ``p``."""
    return RandomHorizontalFlip(p)(x, rng)


def random_crop(x, size, padding: int = 0, *, rng: np.random.Generator, fill: float = 0.0) -> np.ndarray:
    """Pad by ``padding`` (value ``fill``) and take a random ``size`` crop of each sample."""
    return RandomCrop(size, padding, fill)(x, rng)


def random_rescale(x, scale=(0.9, 1.1), *, rng: np.random.Generator) -> np.ndarray:
    """Rescale each sample by a random factor in ``scale``, back to the original H x W."""
    return RandomRescale(scale)(x, rng)


def normalize(x, mean, std) -> np.ndarray:
    """``(x - mean) / std`` per channel of the NCHW batch ``x``."""
    return Normalize(mean, std)(x)


class DataLoader:
    """Batches of ``arrays`` (sliced along their first axis, in step), epoch after epoch.

    Each ``iter(loader)`` yields the rest of the current epoch (a fresh epoch once the
    current one is done); ``len(loader)`` is the number of batches per epoch. One
    generator, ``np.random.Generator(np.random.PCG64(seed))``, draws the shuffle of
    each epoch and feeds ``transform(batch[0], rng)`` (applied to the first array only),
    so the same seed gives the same batches. ``state_dict()`` is JSON-serializable and
    ``load_state_dict`` resumes bit-identically, mid-epoch included. Use one iterator
    at a time: they all advance the loader's single position.
    """

    def __init__(self, *arrays, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, transform: Callable | None = None):
        if not arrays:
            raise ValueError("DataLoader needs at least one array")
        arrays = tuple(np.asarray(a) for a in arrays)
        if any(a.ndim == 0 for a in arrays):
            raise ValueError("DataLoader: arrays must have a first (sample) axis; got a 0-d array")
        lengths = [len(a) for a in arrays]
        if len(set(lengths)) != 1:
            raise ValueError(f"DataLoader: arrays must have the same length, got lengths {lengths}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be an int >= 1, got {batch_size!r}")
        n = lengths[0]
        if n == 0:
            raise ValueError("DataLoader: the arrays are empty")
        if drop_last and n < batch_size:
            raise ValueError(f"DataLoader: drop_last with {n} samples and batch_size={batch_size} "
                             "leaves no batches")
        self.arrays, self.batch_size = arrays, int(batch_size)
        self.shuffle, self.drop_last, self.transform = shuffle, drop_last, transform
        self.seed = seed
        self._n = n
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._epoch = -1
        self._start_epoch()

    def __len__(self) -> int:
        return self._n // self.batch_size if self.drop_last else math.ceil(self._n / self.batch_size)

    @property
    def epoch(self) -> int:
        """The epoch in progress or just completed, counted from 0 (the next ``iter()``
        after a completed epoch starts ``epoch + 1``)."""
        return self._epoch

    def _start_epoch(self) -> None:
        self._epoch += 1
        self._position = 0
        # The generator state before the shuffle: enough to redraw this epoch's order on resume.
        self._epoch_rng_state = copy.deepcopy(self._rng.bit_generator.state)
        self._order = self._rng.permutation(self._n) if self.shuffle else np.arange(self._n)

    def __iter__(self):
        if self._position >= len(self):
            self._start_epoch()
        epoch = self._epoch
        while self._epoch == epoch and self._position < len(self):
            i = self._position
            idx = self._order[i * self.batch_size:(i + 1) * self.batch_size]
            batch = [a[idx] for a in self.arrays]   # fancy indexing: copies, not views
            if self.transform is not None:
                batch[0] = self.transform(batch[0], self._rng)
            self._position = i + 1   # before yielding, so a break leaves a consistent state
            yield tuple(batch)

    def state_dict(self) -> dict:
        """Where the loader is (JSON-serializable): epoch, batches done in it, generator states."""
        return {"epoch": self._epoch, "position": self._position,
                "epoch_rng_state": copy.deepcopy(self._epoch_rng_state),
                "rng_state": copy.deepcopy(self._rng.bit_generator.state),
                "num_samples": self._n, "batch_size": self.batch_size,
                "shuffle": self.shuffle, "drop_last": self.drop_last}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where the loader that produced ``state`` stood."""
        for key in ("num_samples", "batch_size", "shuffle", "drop_last"):
            mine = self._n if key == "num_samples" else getattr(self, key)
            if state.get(key) != mine:
                raise ValueError(f"DataLoader.load_state_dict: the state has {key}={state.get(key)!r}, "
                                 f"this loader has {mine!r}")
        if not 0 <= state["position"] <= len(self):
            raise ValueError(f"DataLoader.load_state_dict: position {state['position']} is outside "
                             f"0..{len(self)}")
        # Redraw the epoch's order from the generator state it was drawn with, then jump to now.
        self._epoch = state["epoch"] - 1
        self._rng.bit_generator.state = state["epoch_rng_state"]
        self._start_epoch()
        self._position = state["position"]
        self._rng.bit_generator.state = state["rng_state"]
