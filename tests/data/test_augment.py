"""Tensor-op image augmentation: shapes/dtypes kept, seeded, flip off honoured, mixing labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pretune.config import ImageAugmentConfig
from pretune.data.augment import (
    augment_images,
    cutmix,
    gaussian_noise,
    mix_batch,
    mixup,
    random_affine,
    random_downsample,
    random_flip,
    random_shift,
)


def _batch() -> torch.Tensor:
    x = torch.zeros(6, 2, 12, 12)
    x[:, :, 4:8, 3:6] = 1.0  # an off-centre (asymmetric) block
    return x


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


OPS = {
    "shift": lambda x, g: random_shift(x, 2, g),
    "flip": lambda x, g: random_flip(x, g),
    "rotate": lambda x, g: random_affine(x, 20, 0.0, g),
    "zoom": lambda x, g: random_affine(x, 0, 0.2, g),
    "noise": lambda x, g: gaussian_noise(x, 0.1, g),
    "downsample": lambda x, g: random_downsample(x, 0.6, g, p=1.0),
}


@pytest.mark.parametrize("name", OPS)
def test_shape_dtype_range_and_seed(name):
    x = _batch()
    op = OPS[name]
    a, b, c = op(x, rng(1)), op(x, rng(1)), op(x, rng(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert float(a.min()) >= -1e-6 and float(a.max()) <= 1 + 1e-6
    assert torch.equal(a, b)  # same seed, same result
    assert not torch.equal(a, c)  # another seed, another result
    assert torch.equal(x, _batch())  # the input is not modified in place


def test_shift_moves_by_whole_pixels():
    x = _batch()
    out = random_shift(x, 2, rng(0))
    # The block stays inside the image: its mass and its (integer) shape are preserved.
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)))
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_flip_and_identity():
    x = _batch()
    assert torch.equal(random_flip(x, rng(0), p=1.0), x.flip(-1))
    assert torch.equal(random_affine(x, 0, 0, rng(0)), x)
    off = ImageAugmentConfig()  # everything off: identity
    assert torch.equal(augment_images(x, off, rng(0)), x)
    # flip=False is honoured: with only rotation off and shift 0, no image is ever mirrored.
    for seed in range(5):
        out = augment_images(x, ImageAugmentConfig(flip=False, noise=0.0), rng(seed))
        assert torch.equal(out, x)
    flipped = [augment_images(x, ImageAugmentConfig(flip=True), rng(s)) for s in range(5)]
    assert any(torch.equal(f[i], x[i].flip(-1)) for f in flipped for i in range(6))


def test_downsample_blurs_only_the_chosen_images():
    x = _batch()
    out = random_downsample(x, 0.6, rng(0), p=0.5)
    changed = (out != x).flatten(1).any(1)
    assert 0 < int(changed.sum()) < 6  # some blurred, some untouched
    assert torch.equal(random_downsample(x, 0.0, rng(0)), x)


def test_rotation_keeps_the_centre():
    x = torch.zeros(1, 1, 15, 15)
    x[..., 7, 7] = 1.0
    out = random_affine(x, 45, 0.0, rng(0))
    assert float(out[..., 7, 7]) > 0.9  # the centre pixel maps onto itself


def test_mixup_and_cutmix_labels():
    x = torch.rand(8, 1, 10, 10)
    y = F.one_hot(torch.arange(8) % 4, 4).float()
    xm, ym = mixup(x, y, 0.4, rng(0))
    assert xm.shape == x.shape and torch.allclose(ym.sum(1), torch.ones(8))
    xc, yc = cutmix(x, y, 1.0, rng(0))
    assert xc.shape == x.shape and torch.allclose(yc.sum(1), torch.ones(8))
    g = rng(0)
    g.beta(1.0, 1.0)
    perm = torch.from_numpy(g.permutation(8))  # the partners cutmix drew
    changed = (xc != x).flatten(1).float().mean(1)  # fraction of pixels pasted per image
    area = float(changed[perm != torch.arange(8)].max())
    assert 0.0 < area < 1.0
    # Labels mix by exactly the pasted area.
    assert torch.allclose(yc, (1 - area) * y + area * y[perm], atol=1e-6)
    labels = torch.arange(8) % 4
    same_x, same_y = mix_batch(x, labels, 4, ImageAugmentConfig(), rng(0))
    assert same_x is x and same_y is labels  # off: class ids untouched
    _, soft = mix_batch(x, labels, 4, ImageAugmentConfig(mixup=0.2, cutmix=0.2), rng(0))
    assert soft.shape == (8, 4)
