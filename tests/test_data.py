"""mlc.data: image augmentations (NCHW float32) and the resumable DataLoader."""
import json

import numpy as np
import pytest

from mlc.data import (
    Compose,
    DataLoader,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRescale,
    normalize,
    random_crop,
    random_horizontal_flip,
    random_rescale,
)


def images(n=6, c=3, h=8, w=10, seed=0):
    return np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)


def rng(seed=0):
    return np.random.Generator(np.random.PCG64(seed))


# -- flip -------------------------------------------------------------------------------------

def test_flip_always_and_never():
    x = images()
    before = x.copy()
    np.testing.assert_array_equal(random_horizontal_flip(x, rng(), p=1.0), x[..., ::-1])
    np.testing.assert_array_equal(random_horizontal_flip(x, rng(), p=0.0), x)
    np.testing.assert_array_equal(x, before)   # input untouched


def test_flip_each_sample_independently():
    x = images(n=400, c=2, h=3, w=5)
    y = random_horizontal_flip(x, rng(1), p=0.5)
    assert y.dtype == np.float32 and y.shape == x.shape
    flipped = np.array([np.array_equal(yi, xi[..., ::-1]) for xi, yi in zip(x, y)])
    kept = np.array([np.array_equal(yi, xi) for xi, yi in zip(x, y)])
    assert np.all(flipped ^ kept)            # every sample: exactly mirrored or exactly kept
    assert 140 < flipped.sum() < 260         # ~200 of 400
    np.testing.assert_array_equal(flipped, rng(1).random(400) < 0.5)   # one draw per sample


# -- crop -------------------------------------------------------------------------------------

def test_crop_windows_are_real_subwindows_of_the_padded_image():
    x = images(n=40, c=2, h=6, w=7)
    pad, (h, w) = 2, (5, 6)
    y = random_crop(x, (h, w), padding=pad, rng=rng(3), fill=-7.0)
    assert y.shape == (40, 2, h, w) and y.dtype == np.float32
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-7.0)
    offsets = set()
    for i in range(len(x)):
        found = [(t, l) for t in range(padded.shape[2] - h + 1) for l in range(padded.shape[3] - w + 1)
                 if np.array_equal(padded[i, :, t:t + h, l:l + w], y[i])]
        assert found, f"sample {i} is not a window of its padded image"
        offsets.add(found[0])
    assert len(offsets) > 5                  # the windows really vary
    assert np.any(y == -7.0)                 # some crops reach into the fill


def test_crop_full_size_without_padding_is_identity_and_square_size():
    x = images(h=8, w=8)
    np.testing.assert_array_equal(RandomCrop(8)(x, rng()), x)
    assert random_crop(x, 4, rng=rng()).shape == (6, 3, 4, 4)


def test_crop_errors():
    with pytest.raises(ValueError, match="larger than the padded image"):
        random_crop(images(h=4, w=4), 7, padding=1, rng=rng())
    with pytest.raises(ValueError, match="size must be a positive int"):
        RandomCrop(0)
    with pytest.raises(ValueError, match="padding must be a non-negative int"):
        RandomCrop(3, padding=-1)
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\)"):
        random_crop(np.zeros((3, 4, 4), np.float32), 2, rng=rng())


# -- rescale ----------------------------------------------------------------------------------

def rescale_reference(x, factors):
    """Per sample, per pixel: bilinear resize (half-pixel centers, clamped) to round(H*s) x
    round(W*s), then center crop / zero pad back to H x W."""
    _, c, h, w = x.shape
    out = np.zeros_like(x, dtype=np.float64)
    for b, s in enumerate(factors):
        nh, nw = max(1, int(np.rint(h * s))), max(1, int(np.rint(w * s)))
        resized = np.zeros((c, nh, nw))
        for i in range(nh):
            sy = min(max((i + 0.5) * h / nh - 0.5, 0), h - 1)
            y0 = int(np.floor(sy))
            y1, fy = min(y0 + 1, h - 1), sy - y0
            for j in range(nw):
                sx = min(max((j + 0.5) * w / nw - 0.5, 0), w - 1)
                x0 = int(np.floor(sx))
                x1, fx = min(x0 + 1, w - 1), sx - x0
                resized[:, i, j] = ((1 - fy) * ((1 - fx) * x[b, :, y0, x0] + fx * x[b, :, y0, x1])
                                    + fy * ((1 - fx) * x[b, :, y1, x0] + fx * x[b, :, y1, x1]))
        oy, ox = (nh - h) // 2, (nw - w) // 2
        for i in range(h):
            for j in range(w):
                if 0 <= i + oy < nh and 0 <= j + ox < nw:
                    out[b, :, i, j] = resized[:, i + oy, j + ox]
    return out


def test_rescale_matches_a_per_pixel_reference():
    x = images(n=8, c=2, h=9, w=12)
    y = random_rescale(x, (0.6, 1.7), rng=rng(5))
    assert y.shape == x.shape and y.dtype == np.float32
    factors = rng(5).uniform(0.6, 1.7, size=8)
    np.testing.assert_allclose(y, rescale_reference(x, factors), rtol=1e-5, atol=1e-5)


def test_rescale_identity_zoom_and_shrink():
    x = images()
    np.testing.assert_array_equal(RandomRescale((1.0, 1.0))(x, rng()), x)
    const = np.full((2, 1, 8, 8), 3.0, np.float32)
    np.testing.assert_allclose(random_rescale(const, (2.0, 2.0), rng=rng()), const)   # zoom in: crop
    small = random_rescale(const, (0.5, 0.5), rng=rng())                               # shrink: pad
    np.testing.assert_allclose(small[:, :, 2:6, 2:6], 3.0)
    inner = np.zeros((8, 8), bool)
    inner[2:6, 2:6] = True
    assert np.all(small[:, :, ~inner] == 0)


def test_rescale_errors():
    with pytest.raises(ValueError, match="0 < low <= high"):
        RandomRescale((1.2, 0.8))
    with pytest.raises(ValueError, match="0 < low <= high"):
        RandomRescale((0.0, 1.0))


# -- normalize and compose --------------------------------------------------------------------

def test_normalize_matches_formula():
    x = images(c=3)
    mean, std = [0.1, -0.2, 0.3], [0.5, 2.0, 1.5]
    y = normalize(x, mean, std)
    assert y.dtype == np.float32
    for ch in range(3):
        np.testing.assert_allclose(y[:, ch], (x[:, ch] - mean[ch]) / std[ch], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(normalize(x, 1.0, 2.0), (x - 1.0) / 2.0, rtol=1e-6)   # scalars broadcast


def test_normalize_errors():
    with pytest.raises(ValueError, match="mean has 2 values for 3 channels"):
        normalize(images(c=3), [0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="std must be positive"):
        Normalize([0.0], [0.0])


def test_compose_chains_with_one_generator():
    x = images(n=20)
    t = Compose([RandomCrop(6, padding=1), RandomHorizontalFlip(0.5), Normalize(0.5, 2.0)])
    r = rng(9)
    expect = RandomCrop(6, padding=1)(x, r)
    expect = RandomHorizontalFlip(0.5)(expect, r)
    expect = (expect - 0.5) / 2.0
    np.testing.assert_allclose(t(x, rng(9)), expect, rtol=1e-6)


# -- DataLoader -------------------------------------------------------------------------------

def dataset(n=50):
    x = np.arange(n * 2 * 4 * 4, dtype=np.float32).reshape(n, 2, 4, 4)
    y = np.arange(n)
    return x, y


def take(loader, k):
    """``k`` batches, across epoch boundaries, the way a training loop over epochs takes them."""
    out = []
    while len(out) < k:
        for b in loader:
            out.append(b)
            if len(out) == k:
                break
    return out


def test_loader_epochs_cover_each_sample_once_with_arrays_in_step():
    x, y = dataset(50)
    loader = DataLoader(x, y, batch_size=8, seed=1)
    assert len(loader) == 7
    for epoch in range(2):
        batches = list(loader)
        assert loader.epoch == epoch   # the epoch just completed; the next iter() starts epoch + 1
        assert [len(b[1]) for b in batches] == [8] * 6 + [2]
        labels = np.concatenate([b[1] for b in batches])
        assert sorted(labels) == list(range(50)) and not np.array_equal(labels, np.arange(50))
        for xb, yb in batches:
            np.testing.assert_array_equal(xb, x[yb])   # x and y sliced with the same indices


def test_loader_no_shuffle_drop_last_and_copies():
    x, y = dataset(10)
    loader = DataLoader(x, y, batch_size=4, shuffle=False, drop_last=True)
    assert len(loader) == 2
    batches = list(loader)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), np.arange(8))
    batches[0][0][:] = -1                      # batches are copies: the dataset is untouched
    assert np.all(x >= 0)


def test_loader_same_seed_same_batches():
    x, y = dataset()
    aug = Compose([RandomCrop(4, padding=1), RandomHorizontalFlip()])
    a = take(DataLoader(x, y, batch_size=8, seed=3, transform=aug), 10)
    b = take(DataLoader(x, y, batch_size=8, seed=3, transform=aug), 10)
    c = take(DataLoader(x, y, batch_size=8, seed=4, transform=aug), 10)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))


def test_loader_transform_applies_to_first_array_only():
    x, y = dataset(12)
    loader = DataLoader(x, y, batch_size=4, shuffle=False, transform=lambda xb, r: -xb)
    for xb, yb in loader:
        np.testing.assert_array_equal(xb, -x[yb])
        assert yb.dtype == y.dtype and np.all(yb >= 0)


@pytest.mark.parametrize("stop", [9, 7, 0, 14, 10])   # 1.3 epochs, epoch ends, the start
def test_loader_resumes_bit_identically(stop):
    x, y = dataset(50)   # 7 batches an epoch; 2.5 epochs is ~17 batches

    def make(seed=11):
        aug = Compose([RandomRescale((0.8, 1.2)), RandomCrop(4, padding=1), RandomHorizontalFlip()])
        return DataLoader(x, y, batch_size=8, seed=seed, transform=aug)

    straight = take(make(), 17)
    first = make()
    head = take(first, stop)
    state = json.loads(json.dumps(first.state_dict()))   # really JSON
    resumed = make(seed=999)                              # the state, not the seed, decides
    resumed.load_state_dict(state)
    assert resumed.epoch == first.epoch
    tail = take(resumed, 17 - stop)
    for i, (a, b) in enumerate(zip(straight, head + tail)):
        for u, v in zip(a, b):
            assert u.dtype == v.dtype
            np.testing.assert_array_equal(u, v, err_msg=f"batch {i}")


def test_loader_errors():
    x, y = dataset(10)
    with pytest.raises(ValueError, match=r"same length, got lengths \[10, 9\]"):
        DataLoader(x, y[:9], batch_size=2)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        DataLoader(x, batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        DataLoader(x, batch_size=2.5)
    with pytest.raises(ValueError, match="at least one array"):
        DataLoader(batch_size=2)
    with pytest.raises(ValueError, match="arrays are empty"):
        DataLoader(x[:0], batch_size=2)
    with pytest.raises(ValueError, match="leaves no batches"):
        DataLoader(x, batch_size=11, drop_last=True)
    state = DataLoader(x, y, batch_size=2).state_dict()
    with pytest.raises(ValueError, match="state has batch_size=2, this loader has 5"):
        DataLoader(x, y, batch_size=5).load_state_dict(state)
