"""Image loaders (builtins, class folders, npz), resizing/channels, splits, budgets, batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pretune.config import ImageAugmentConfig, ImageDataConfig
from pretune.data.images import (
    ImageBatches,
    apply_image_budget,
    load_image_task,
    normalize,
    read_images,
)
from pretune.errors import PretuneError


def _png(path, size, value, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0]) + ((3,) if mode == "RGB" else ()), value, dtype=np.uint8)
    arr[: size[1] // 2] = 0  # some structure
    Image.fromarray(arr, mode).save(path)


def test_mnist_builtin_layout_and_splits():
    cfg = ImageDataConfig(path="builtin:mnist-5k", max_images=300, channels=1, image_size=None)
    task = load_image_task(cfg)
    assert task.labels == [str(i) for i in range(10)]
    assert task.image_size == 28 and task.channels == 1
    x = task.train.x
    assert x.shape[1:] == (1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.9
    assert len(task.train) + len(task.val) + len(task.test) == 300
    assert len(task.test) == 60 and len(task.val) == 24
    # The csv is sorted by class: the capped subset and the splits are stratified anyway.
    for split in (task.train, task.val, task.test):
        assert set(split.y.tolist()) == set(range(10))
    assert 0.0 < task.majority_baseline < 0.2


def test_digits_resized_with_border_and_three_channels():
    cfg = ImageDataConfig(path="builtin:digits", max_images=100, image_size=28, border=4,
                          channels=3, val_fraction=0, test_fraction=0)
    task = load_image_task(cfg)
    x = task.train.x
    assert x.shape == (100, 3, 28, 28)
    assert torch.equal(x[:, 0], x[:, 2])  # gray copied into RGB
    ring = torch.ones(28, 28, dtype=torch.bool)
    ring[4:24, 4:24] = False
    assert float(x[:, :, ring].abs().max()) == 0.0  # the border is black
    assert float(x[:, :, 4:24, 4:24].max()) > 0.5
    # Same split seed and cap: the same images.
    assert torch.equal(load_image_task(cfg).train.x, x)


def test_folder_of_pngs(tmp_path):
    for i in range(4):
        _png(tmp_path / "cat" / f"{i}.png", (12, 12), 200)
        _png(tmp_path / "dog" / f"{i}.jpg", (20, 16), 100, mode="RGB")  # other size, RGB
    cfg = ImageDataConfig(path=str(tmp_path), image_size=16, channels=1, val_fraction=0,
                          test_fraction=0.25)
    task = load_image_task(cfg)
    assert task.labels == ["cat", "dog"]
    assert task.train.x.shape[1:] == (1, 16, 16)
    assert sorted(np.bincount(task.test.y).tolist()) == [1, 1]
    # Mixed sizes without a resize setting: one line naming the files.
    with pytest.raises(PretuneError, match=r"different sizes .*cat.*0\.png.*dog.*image_size"):
        load_image_task(cfg.model_copy(update={"image_size": None}))


def test_unlabeled_folder(tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.png", (8, 8), 255)
    cfg = ImageDataConfig(path=str(tmp_path), image_size=8, val_fraction=0, test_fraction=0)
    task = load_image_task(cfg, require_labels=False)
    assert task.labels == [] and task.train.y is None and len(task.train) == 3
    with pytest.raises(PretuneError, match="has no labels"):
        load_image_task(cfg)


def test_npz_layouts(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 10, 10), dtype=np.uint8)
    y = np.array(["a", "b"] * 10)
    np.savez(tmp_path / "hw.npz", x=x, y=y)
    raw = read_images(str(tmp_path / "hw.npz"), ImageDataConfig())
    assert raw.labels[:2] == ["a", "b"] and raw.images[0].shape == (10, 10, 1)
    np.testing.assert_allclose(raw.images[3][..., 0], x[3] / 255.0, rtol=1e-6)
    chw = rng.random((20, 3, 10, 10)).astype(np.float32)  # floats in [0, 1], channels first
    np.savez(tmp_path / "chw.npz", x=chw, y=np.arange(20) % 2)
    task = load_image_task(ImageDataConfig(path=str(tmp_path / "chw.npz"), image_size=None,
                                           val_fraction=0, test_size=10))
    assert task.train.x.shape == (10, 3, 10, 10) and task.labels == ["0", "1"]
    np.savez(tmp_path / "nox.npz", images=x)
    with pytest.raises(PretuneError, match="no array 'x'"):
        read_images(str(tmp_path / "nox.npz"), ImageDataConfig())


def test_bad_inputs(tmp_path):
    _png(tmp_path / "a" / "0.png", (8, 8), 1)
    (tmp_path / "a" / "1.png").write_bytes(b"not an image")
    with pytest.raises(PretuneError, match=r"cannot read image .*1\.png"):
        read_images(str(tmp_path), ImageDataConfig())
    (tmp_path / "a" / "1.png").unlink()
    (tmp_path / "b").mkdir()
    with pytest.raises(PretuneError, match=r"class folder .*b has no images"):
        read_images(str(tmp_path), ImageDataConfig())
    with pytest.raises(PretuneError, match="not found"):
        read_images(str(tmp_path / "missing"), ImageDataConfig())
    with pytest.raises(PretuneError, match="not an image set"):
        read_images("builtin:news", ImageDataConfig())
    # A label only in the test source.
    np.savez(tmp_path / "tr.npz", x=np.zeros((4, 8, 8), np.uint8), y=np.array([0, 1, 0, 1]))
    np.savez(tmp_path / "te.npz", x=np.zeros((2, 8, 8), np.uint8), y=np.array([0, 7]))
    cfg = ImageDataConfig(path=str(tmp_path / "tr.npz"), test=str(tmp_path / "te.npz"),
                          val_fraction=0, image_size=8)
    with pytest.raises(PretuneError, match="label '7' that the training data lacks"):
        load_image_task(cfg)


def test_budget_is_stratified_and_seeded():
    task = load_image_task(ImageDataConfig(path="builtin:digits", max_images=400, image_size=8))
    small = apply_image_budget(task, 20, seed=3)
    assert len(small.train) == 20 and small.budget == 20
    assert set(small.train.y.tolist()) == set(range(10))
    assert torch.equal(apply_image_budget(task, 20, seed=3).train.x, small.train.x)
    assert not torch.equal(apply_image_budget(task, 20, seed=4).train.x, small.train.x)
    with pytest.raises(PretuneError, match="smaller than the 10 classes"):
        apply_image_budget(task, 5, seed=0)
    with pytest.raises(PretuneError, match="larger than"):
        apply_image_budget(task, 10_000, seed=0)


def test_batches_shapes_resume_and_views():
    task = load_image_task(ImageDataConfig(path="builtin:digits", max_images=70, image_size=8,
                                           channels=1, val_fraction=0, test_fraction=0))
    aug = ImageAugmentConfig(shift=1, noise=0.05)
    stream = ImageBatches(task.train, 16, aug, task.num_labels, seed=1)
    assert len(stream) == 5  # 70 = 4 x 16 + 6
    it = iter(stream)
    first = [next(it) for _ in range(2)]
    assert first[0]["pixel_values"].shape == (16, 1, 8, 8)
    assert first[0]["labels"].dtype == torch.long and first[0]["labels"].shape == (16,)
    assert float(first[0]["pixel_values"].min()) >= -1.0
    state = stream.state_dict()
    rest = list(it)
    resumed = ImageBatches(task.train, 16, aug, task.num_labels, seed=1)
    resumed.load_state_dict(state)
    again = list(resumed)
    assert len(again) == 3
    for a, b in zip(rest, again, strict=True):
        assert torch.equal(a["pixel_values"], b["pixel_values"])
    # A last batch of one image is dropped (BatchNorm / NT-Xent cannot use it).
    assert len(ImageBatches(task.train.subset(range(33)), 16, aug)) == 2
    pairs = ImageBatches(task.train, 16, aug, views=2)
    batch = next(iter(pairs))
    assert batch["pixel_values"].shape == (32, 1, 8, 8) and "labels" not in batch
    assert not torch.equal(batch["pixel_values"][:16], batch["pixel_values"][16:])
    mixed = ImageBatches(task.train, 16, ImageAugmentConfig(mixup=0.4), task.num_labels)
    soft = next(iter(mixed))["labels"]
    assert soft.shape == (16, 10) and torch.allclose(soft.sum(1), torch.ones(16))


def test_normalize_range():
    x = torch.tensor([0.0, 0.5, 1.0])
    assert normalize(x).tolist() == [-1.0, 0.0, 1.0]
