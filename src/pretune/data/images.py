"""Image data: builtin digit sets, class-folder trees and ``.npz`` arrays as one tensor format.

Every source becomes float32 pixels in [0, 1], shape (N, C, S, S): resized to one size (so
8x8 ``digits`` and 28x28 ``mnist-5k`` can be used together), converted to 1 or 3 channels, an
optional zero border around the resized image. Models see ``(x - 0.5) / 0.5`` (``normalize``),
the same transform the saved ``preprocessor_config.json`` applies to 8-bit images.
Splits are stratified and fixed by ``split_seed``; label budgets are stratified too.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pretune.config import ImageAugmentConfig, ImageDataConfig
from pretune.data.augment import augment_images, mix_batch
from pretune.data.builtin import builtin_path
from pretune.data.rows import check_budget
from pretune.data.stream import EpochCursor
from pretune.errors import PretuneError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MEAN, STD = 0.5, 0.5  # pixel normalisation (also written to preprocessor_config.json)
# builtin name -> (pixel side, max pixel value); both csv.gz files are "pixels..., label" rows.
_BUILTINS = {"mnist-5k": (28, 255.0), "digits": (8, 16.0)}


@dataclass
class ImageSet:
    x: Tensor  # (N, C, S, S) float32 in [0, 1]
    y: np.ndarray | None  # (N,) int64 class ids; None: unlabeled

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx: np.ndarray | list[int]) -> ImageSet:
        idx = np.asarray(idx, dtype=np.int64)
        return ImageSet(self.x[torch.from_numpy(idx)], None if self.y is None else self.y[idx])

    @property
    def labels(self) -> list[int]:
        """Class ids as a list (what metrics and folds read); [] when unlabeled."""
        return [] if self.y is None else self.y.tolist()

    @staticmethod
    def concat(a: ImageSet, b: ImageSet) -> ImageSet:
        y = None if a.y is None or b.y is None else np.concatenate([a.y, b.y])
        return ImageSet(torch.cat([a.x, b.x]), y)


@dataclass
class ImageTask:
    name: str
    labels: list[str]  # class names, index = class id; [] when unlabeled
    train: ImageSet
    val: ImageSet
    test: ImageSet
    image_size: int
    channels: int
    budget: int | None = None

    type = "single_label"  # what metrics and folds read (one class per image)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def majority_baseline(self) -> float:
        """Test accuracy of always predicting the most frequent training class."""
        if self.train.y is None or self.test.y is None or not len(self.test):
            return float("nan")
        top = np.bincount(self.train.y, minlength=self.num_labels).argmax()
        return float((self.test.y == top).mean())


def normalize(x: Tensor) -> Tensor:
    """[0, 1] pixels -> model input in [-1, 1]."""
    return (x - MEAN) / STD


# --------------------------------------------------------------------------- readers


@dataclass
class _Raw:
    """Read pixels before resizing: one stacked uint8/float array or per-file arrays."""

    images: list[np.ndarray]  # each (H, W, C) in [0, 1] float32
    labels: list[str] | None
    names: list[str]  # where each image came from (file or row), for error messages


@functools.lru_cache(maxsize=4)
def _read_csv(path: str, _mtime: float) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", dtype=np.float32)


def _builtin(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    if name not in _BUILTINS:
        raise PretuneError(f"data.path=builtin:{name} is not an image set; choose one of: "
                           + ", ".join(f"builtin:{n}" for n in _BUILTINS))
    path = builtin_path(name)
    rows = _read_csv(str(path), path.stat().st_mtime)  # (N, side*side + 1)
    side, top = _BUILTINS[name]
    pixels = rows[:, :-1].reshape(-1, side, side, 1) / top  # (N, H, W, 1)
    return pixels, rows[:, -1].astype(np.int64), str(path)


def _cap(n: int, labels: list[str] | None, max_images: int | None, seed: int) -> np.ndarray:
    """Indices of a random (stratified when labeled) subset of at most ``max_images``."""
    if max_images is None or max_images >= n:
        return np.arange(n)
    if labels is not None and len(set(labels)) <= max_images:
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(np.arange(n), train_size=max_images, random_state=seed,
                                   stratify=labels)
        return np.sort(keep)
    return np.sort(np.random.default_rng(seed).choice(n, max_images, replace=False))


def _read_file(path: Path, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise PretuneError(f"cannot read image {path} ({type(e).__name__}); "
                           "remove or replace the file") from None
    return arr[..., None] if arr.ndim == 2 else arr  # (H, W, C)


def _read_folder(root: Path, cfg: ImageDataConfig) -> _Raw:
    def images_in(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)

    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = images_in(root)
    if subdirs and loose:
        raise PretuneError(f"{root} holds both class sub-folders and loose images (e.g. "
                           f"{loose[0].name}); move the images into class folders")
    files: list[Path] = []
    labels: list[str] | None = None
    if subdirs:
        labels = []
        for d in subdirs:
            found = images_in(d)
            if not found:
                raise PretuneError(f"class folder {d} has no images ({', '.join(sorted(IMAGE_EXTS))}); "
                                   "add images or remove the folder")
            files += found
            labels += [d.name] * len(found)
    else:
        files = loose
    if not files:
        raise PretuneError(f"{root} has no images; give class sub-folders of PNG/JPEG files")
    keep = _cap(len(files), labels, cfg.max_images, cfg.split_seed)
    files = [files[i] for i in keep]
    labels = [labels[i] for i in keep] if labels is not None else None
    return _Raw([_read_file(f, cfg.channels) for f in files], labels, [str(f) for f in files])


def _npz_layout(x: np.ndarray, path: Path) -> np.ndarray:
    """(N, H, W) | (N, H, W, C) | (N, C, H, W) -> (N, H, W, C)."""
    if x.ndim == 3:
        return x[..., None]
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4):
        return x
    if x.ndim == 4 and x.shape[1] in (1, 3, 4):
        return x.transpose(0, 2, 3, 1)
    raise PretuneError(f"{path}: 'x' has shape {x.shape}; expected (N, H, W), (N, H, W, C) or "
                       "(N, C, H, W) with C in 1, 3, 4")


def _read_npz(path: Path, cfg: ImageDataConfig) -> _Raw:
    try:
        with np.load(path, allow_pickle=False) as f:  # no pickles from user files
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise PretuneError(f"cannot read {path} as .npz ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:100]})") from None
    if "x" not in arrays:
        raise PretuneError(f"{path} has no array 'x' (found: {', '.join(arrays) or 'none'}); "
                           "save images as np.savez(path, x=images, y=labels)")
    x = _npz_layout(arrays["x"], path)
    y = arrays.get("y")
    if y is not None and len(y) != len(x):
        raise PretuneError(f"{path}: 'y' has {len(y)} labels but 'x' has {len(x)} images")
    labels = [str(v) for v in y.tolist()] if y is not None else None
    keep = _cap(len(x), labels, cfg.max_images, cfg.split_seed)
    x = x[keep]
    labels = [labels[i] for i in keep] if labels is not None else None
    # uint8 -> /255; floats already in [0, 1] stay; anything else is scaled to its range.
    top = 255.0 if x.dtype == np.uint8 else float(max(1.0, x.max(initial=0)))
    if x.dtype != np.uint8 and top > 1.0 and top <= 255.0:
        top = 255.0
    x = x.astype(np.float32) / top
    return _Raw(list(x), labels, [f"{path}[{i}]" for i in keep])


def read_images(path: str, cfg: ImageDataConfig) -> _Raw:
    """Read one image source (builtin, class-folder tree, or .npz) without resizing."""
    if path.startswith("builtin:"):
        pixels, y, where = _builtin(path.removeprefix("builtin:"))
        labels = [str(int(v)) for v in y]
        keep = _cap(len(pixels), labels, cfg.max_images, cfg.split_seed)
        return _Raw(list(pixels[keep]), [labels[i] for i in keep],
                    [f"{where}:row {i + 1}" for i in keep])
    p = Path(path).expanduser()
    if p.is_dir():
        return _read_folder(p, cfg)
    if p.is_file() and p.suffix.lower() == ".npz":
        return _read_npz(p, cfg)
    if p.is_file():
        raise PretuneError(f"data path {p}: expected a folder of class sub-folders, an .npz file "
                           "or builtin:mnist-5k / builtin:digits")
    raise PretuneError(f"data path {p} not found")


# --------------------------------------------------------------------------- standardise


def _channels(x: Tensor, channels: int) -> Tensor:
    """(N, C0, H, W) -> (N, channels, H, W); RGB->gray by ITU-R 601 luma, gray->RGB by copy."""
    if x.shape[1] == 4:
        x = x[:, :3]  # drop alpha
    if x.shape[1] == channels:
        return x
    if channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    return x.expand(-1, 3, -1, -1)


def _resize(x: Tensor, size: int | None, border: int) -> Tensor:
    """(N, C, H, W) -> (N, C, size, size): bilinear (antialiased when shrinking) + zero border."""
    if size is None:
        return x
    inner = size - 2 * border
    if x.shape[-2:] != (inner, inner):
        x = F.interpolate(x, size=(inner, inner), mode="bilinear", align_corners=False,
                          antialias=True).clamp_(0.0, 1.0)
    return F.pad(x, (border,) * 4) if border else x


def standardize(raw: _Raw, cfg: ImageDataConfig, image_size: int | None = None) -> Tensor:
    """Raw images -> (N, C, S, S) float32 in [0, 1]; one size, ``cfg.channels`` channels."""
    size = image_size or cfg.image_size
    if cfg.border and size is None:
        raise PretuneError("data.border needs data.image_size (the border is inside that size)")
    if size is not None and 2 * cfg.border >= size:
        raise PretuneError(f"data.border={cfg.border} leaves no room in image_size={size}")
    shapes = [im.shape[:2] for im in raw.images]
    if size is None and len(set(shapes)) > 1:
        j = next(i for i, s in enumerate(shapes) if s != shapes[0])
        raise PretuneError(
            f"images have different sizes ({shapes[0][0]}x{shapes[0][1]} in {raw.names[0]}, "
            f"{shapes[j][0]}x{shapes[j][1]} in {raw.names[j]}); set data.image_size to resize them")
    if size is None and shapes and shapes[0][0] != shapes[0][1]:
        raise PretuneError(f"images are not square ({shapes[0][0]}x{shapes[0][1]} in "
                           f"{raw.names[0]}); set data.image_size to resize them")
    out: list[Tensor] = []
    i = 0
    while i < len(raw.images):  # consecutive images of one size are resized in one call
        j = i
        while j < len(raw.images) and shapes[j] == shapes[i] and j - i < 1024:
            j += 1
        chunk = torch.from_numpy(np.stack(raw.images[i:j])).permute(0, 3, 1, 2)  # (n, C0, H, W)
        out.append(_resize(_channels(chunk.float(), cfg.channels), size, cfg.border).contiguous())
        i = j
    if not out:
        raise PretuneError("no images to use; check data.path and data.max_images")
    return torch.cat(out)


# --------------------------------------------------------------------------- task + splits


def _split(idx: np.ndarray, y: np.ndarray | None, size: int | float, seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held) with ``held`` of ``size`` examples; stratified when every class has >= 2."""
    from sklearn.model_selection import train_test_split

    strat = None
    if y is not None:
        counts = np.bincount(y[idx])
        n_held = size if isinstance(size, int) else round(size * len(idx))
        k = int((counts > 0).sum())
        if counts[counts > 0].min() >= 2 and n_held >= k and len(idx) - n_held >= k:
            strat = y[idx]
    rest, held = train_test_split(idx, test_size=size, random_state=seed, stratify=strat)
    return np.sort(rest), np.sort(held)


def label_ids(labels: list[str] | None, names: list[str], where: str) -> np.ndarray | None:
    if labels is None:
        return None
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise PretuneError(f"{where} has label '{unknown[0]}' that the training data lacks; "
                           "every class needs training images")
    return np.asarray([index[v] for v in labels], dtype=np.int64)


def _sort_names(names: set[str]) -> list[str]:
    # Numeric class names sort as numbers ("2" before "10"), others alphabetically.
    return sorted(names, key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s))


def load_image_task(cfg: ImageDataConfig, seed: int = 0, image_size: int | None = None,
                    require_labels: bool = True) -> ImageTask:
    """Read ``cfg.path`` (+ optional validation/test sources), split, resize, apply the budget."""
    raw = read_images(cfg.path, cfg)
    if raw.labels is None and require_labels:
        raise PretuneError(f"data.path={cfg.path} has no labels; give class sub-folders or an "
                           ".npz with 'y' (unlabeled images suit objective=simclr only)")
    names = _sort_names(set(raw.labels)) if raw.labels is not None else []
    x = standardize(raw, cfg, image_size)
    size = int(x.shape[-1])
    full = ImageSet(x, label_ids(raw.labels, names, cfg.path))
    idx = np.arange(len(full))

    def extra(path: str) -> ImageSet:
        r = read_images(path, cfg)
        return ImageSet(standardize(r, cfg, size), label_ids(r.labels, names, path))

    if cfg.test is not None:
        test = extra(cfg.test)
    elif cfg.test_size or cfg.test_fraction > 0:
        size_t = cfg.test_size or cfg.test_fraction
        if isinstance(size_t, int) and size_t >= len(idx):
            raise PretuneError(f"data.test_size={size_t} leaves no training images of {len(idx)}")
        idx, held = _split(idx, full.y, size_t, cfg.split_seed)
        test = full.subset(held)
    else:
        test = full.subset([])
    if cfg.validation is not None:
        val = extra(cfg.validation)
    elif cfg.val_fraction > 0 and len(idx) > 1:
        idx, held = _split(idx, full.y, cfg.val_fraction, cfg.split_seed + 1)
        val = full.subset(held)
    else:
        val = full.subset([])
    name = cfg.path.removeprefix("builtin:") if cfg.path.startswith("builtin:") else Path(cfg.path).name
    task = ImageTask(name, names, full.subset(idx), val, test, size, cfg.channels)
    return apply_image_budget(task, cfg.budget, seed)


def apply_image_budget(task: ImageTask, budget: int | None, seed: int) -> ImageTask:
    """Stratified subsample of ``budget`` training images with at least one per class."""
    if budget is None:
        return task
    n = len(task.train)
    check_budget(budget, n, "images", task.name, key="data.budget", fix="lower the budget")
    if task.train.y is None or budget == n:
        keep = np.sort(np.random.default_rng(seed).choice(n, budget, replace=False))
        return replace(task, train=task.train.subset(keep), budget=budget)
    if budget < task.num_labels:
        raise PretuneError(f"data.budget={budget} is smaller than the {task.num_labels} classes "
                           f"of {task.name}; use at least one image per class")
    rng = np.random.default_rng(seed)
    y = task.train.y
    # One image per class first, then a stratified draw of the rest.
    first = [int(rng.choice(np.flatnonzero(y == c))) for c in range(task.num_labels)
             if (y == c).any()]
    rest = np.setdiff1d(np.arange(n), first)
    more = budget - len(first)
    if more > 0:
        _, held = _split(rest, y, more, seed) if more < len(rest) else (None, rest)
        first += [int(i) for i in held]
    return replace(task, train=task.train.subset(np.sort(first)), budget=budget)


# --------------------------------------------------------------------------- batches


class ImageBatches(EpochCursor):
    """Training batches for ``pretune.train.loop.fit`` (resumable, deterministic per seed).

    Yields ``pixel_values`` (B, C, S, S) normalised, and ``labels``: (B,) class ids, or (B, K)
    soft targets when mixup/CutMix is on. ``views=2`` yields two augmented views of the same
    images stacked as (2B, C, S, S) for contrastive learning (no labels)."""

    def __init__(self, images: ImageSet, batch_size: int, augment: ImageAugmentConfig,
                 num_labels: int = 0, seed: int = 0, views: int = 1) -> None:
        if views not in (1, 2):
            raise ValueError("views must be 1 or 2")
        self.images, self.batch_size, self.augment = images, batch_size, augment
        self.num_labels, self.seed, self.views = num_labels, seed, views
        self.epoch, self.position = 0, 0

    def __len__(self) -> int:
        n = len(self.images)
        full, rest = divmod(n, self.batch_size)
        # A last batch of one image is dropped: BatchNorm cannot train on it, NT-Xent neither.
        return full + (1 if rest > 1 else 0)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        epoch = self.epoch
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
        while self.position < len(self):
            pos = self.position
            idx = torch.from_numpy(perm[pos * self.batch_size : (pos + 1) * self.batch_size])
            # Noise depends only on (seed, epoch, position): a resumed run replays it exactly.
            rng = np.random.default_rng([self.seed, epoch, pos, 7])
            x = self.images.x[idx]  # (B, C, S, S) copy
            if self.views == 2:
                pair = torch.cat([augment_images(x, self.augment, rng),
                                  augment_images(x, self.augment, rng)])  # (2B, C, S, S)
                batch = {"pixel_values": normalize(pair)}
            else:
                x = augment_images(x, self.augment, rng)
                batch = {}
                if self.images.y is not None:
                    y = torch.from_numpy(self.images.y[idx.numpy()])
                    x, batch["labels"] = mix_batch(x, y, self.num_labels, self.augment, rng)
                batch["pixel_values"] = normalize(x)
            self.position = pos + 1
            yield batch
        self.epoch, self.position = epoch + 1, 0
