"""Image augmentation with plain tensor ops (no torchvision), on pixels in [0, 1].

Every function takes a batch (B, C, H, W) and a ``numpy.random.Generator`` and returns a new
batch of the same shape and dtype; per-image randomness is drawn from the generator, so a
batch seeded by (seed, epoch, position) is reproduced exactly on resume. Geometric transforms
fill uncovered pixels with 0 (black background, as in MNIST-style digits).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pretune.config import ImageAugmentConfig


def random_shift(x: Tensor, max_shift: int, rng: np.random.Generator) -> Tensor:
    """Translate each image by up to ``max_shift`` px in x and y (zero pad + random crop)."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    p = max_shift
    padded = F.pad(x, (p, p, p, p)).permute(0, 2, 3, 1)  # (B, H+2p, W+2p, C)
    oy = torch.from_numpy(rng.integers(0, 2 * p + 1, b))
    ox = torch.from_numpy(rng.integers(0, 2 * p + 1, b))
    rows = oy[:, None] + torch.arange(h)  # (B, H) source rows of each output row
    cols = ox[:, None] + torch.arange(w)  # (B, W)
    out = padded[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B,H,W,C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: Tensor, rng: np.random.Generator, p: float = 0.5) -> Tensor:
    """Mirror a random half of the images left-right."""
    hit = torch.from_numpy(rng.random(x.shape[0]) < p)
    return torch.where(hit[:, None, None, None], x.flip(-1), x)


def random_affine(x: Tensor, degrees: float, zoom: float, rng: np.random.Generator) -> Tensor:
    """Rotate by U(-degrees, degrees) and scale by U(1 - zoom, 1 + zoom), about the centre."""
    if degrees <= 0 and zoom <= 0:
        return x
    b = x.shape[0]
    angle = np.deg2rad(rng.uniform(-degrees, degrees, b))
    scale = rng.uniform(1.0 - zoom, 1.0 + zoom, b)
    # affine_grid maps output coordinates to input coordinates: a zoom by s samples input at
    # coordinates / s, and the rotation matrix is applied in that (normalised) space.
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    theta = np.zeros((b, 2, 3), dtype=np.float32)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    grid = F.affine_grid(torch.from_numpy(theta).to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def gaussian_noise(x: Tensor, std: float, rng: np.random.Generator) -> Tensor:
    """Add N(0, std^2) pixel noise, clipped back to [0, 1]."""
    if std <= 0:
        return x
    noise = torch.from_numpy(rng.standard_normal(tuple(x.shape), dtype=np.float32))
    return (x + std * noise.to(x.dtype)).clamp(0.0, 1.0)


def random_downsample(x: Tensor, strength: float, rng: np.random.Generator, p: float = 0.5
                      ) -> Tensor:
    """Blur a random ``p`` of the images: resize down to U(1 - strength, 1) x the size (one
    factor per batch) and back up, bilinear with antialiasing."""
    if strength <= 0:
        return x
    h, w = x.shape[-2:]
    factor = rng.uniform(1.0 - strength, 1.0)
    small = (max(2, round(h * factor)), max(2, round(w * factor)))
    hit = torch.from_numpy(rng.random(x.shape[0]) < p)
    if small == (h, w) or not bool(hit.any()):
        return x
    low = F.interpolate(x, size=small, mode="bilinear", align_corners=False, antialias=True)
    up = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    return torch.where(hit[:, None, None, None], up, x)


def augment_images(x: Tensor, cfg: ImageAugmentConfig, rng: np.random.Generator) -> Tensor:
    """Rotation/zoom, flip (only if ``cfg.flip``), shift, down-sampling blur, then noise."""
    x = random_affine(x, cfg.rotate, cfg.zoom, rng)
    if cfg.flip:
        x = random_flip(x, rng)
    x = random_shift(x, cfg.shift, rng)
    x = random_downsample(x, cfg.downsample, rng)
    return gaussian_noise(x, cfg.noise, rng)


def mixup(x: Tensor, y: Tensor, alpha: float, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """Blend each image (and its soft label (B, K)) with a random partner: lam ~ Beta(a, a)."""
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(x.shape[0]))
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def cutmix(x: Tensor, y: Tensor, alpha: float, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """Paste a random box from a partner image; labels mix by the pasted area."""
    b, _, h, w = x.shape
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(b))
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
    area = (y1 - y0) * (x1 - x0) / (h * w)  # the box is clipped at the border: use its real area
    return out, (1 - area) * y + area * y[perm]


def mix_batch(x: Tensor, y: Tensor, num_labels: int, cfg: ImageAugmentConfig,
              rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """Mixup or CutMix (one per batch when both are on). Returns (x, labels): labels are the
    class ids (B,) when both are off, soft targets (B, K) float otherwise."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return x, y
    soft = F.one_hot(y, num_labels).to(x.dtype)  # (B, K)
    use_cutmix = cfg.cutmix > 0 and (cfg.mixup <= 0 or rng.random() < 0.5)
    if use_cutmix:
        return cutmix(x, soft, cfg.cutmix, rng)
    return mixup(x, soft, cfg.mixup, rng)
