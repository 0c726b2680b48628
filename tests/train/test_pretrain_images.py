"""``pretrain-images``: supervised / SimCLR pre-training through the one loop, exact resume, and
fine-tuning what it made."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification

from pretune.config import (
    FinetuneConfig,
    ImagePretrainConfig,
)
from pretune.data.builtin import builtin_path
from pretune.errors import PretuneError
from pretune.finetune.run import finetune
from pretune.train.pretrain_images import pretrain_images


def test_supervised_pretrain_then_finetune_beats_chance(tmp_path, image_configs):
    _pretrain, _finetune = image_configs
    cfg = _pretrain(tmp_path, "data.max_images=600", "train.epochs=2", "train.batch_size=64")
    pre = pretrain_images(cfg)
    assert pre.steps == 18 and pre.images_seen == 2 * 540
    saved = json.loads((tmp_path / "vision-pretrain" / "metrics.json").read_text())
    assert saved["objective"] == "supervised" and "accuracy" in saved["val"]
    loaded = AutoModelForImageClassification.from_pretrained(pre.model_dir)
    assert loaded.config.num_channels == 1 and loaded.config.num_labels == 10
    ft = finetune(_finetune(tmp_path, f"model.name={pre.model_dir}"))
    assert ft.train_examples == 100 and ft.steps == 40
    assert ft.metrics["accuracy"] > 0.3  # 10 classes: chance is 0.1
    out = tmp_path / "vision-finetune"
    m = json.loads((out / "metrics.json").read_text())
    assert m["test"]["accuracy"] == ft.metrics["accuracy"] and m["majority_baseline"] < 0.2
    card = (out / "model" / "README.md").read_text()
    assert "image-classification" in card
    reloaded = AutoModelForImageClassification.from_pretrained(out / "model")
    assert reloaded.config.id2label[3] == "3"
    with pytest.raises(PretuneError, match="already exists"):
        finetune(_finetune(tmp_path, f"model.name={pre.model_dir}"))


def test_simclr_on_unlabeled_images_lowers_the_loss(tmp_path, image_configs):
    _pretrain, _finetune = image_configs
    rows = np.loadtxt(builtin_path("mnist-5k"), delimiter=",", dtype=np.float32)
    pick = np.random.default_rng(0).choice(len(rows), 256, replace=False)
    x = rows[pick, :-1].reshape(-1, 28, 28).astype(np.uint8)
    np.savez(tmp_path / "unlabeled.npz", x=x)  # no 'y': self-supervised only
    cfg = _pretrain(tmp_path, f"data.path={tmp_path / 'unlabeled.npz'}", "objective=simclr",
                    "train.epochs=null", "train.max_steps=16", "train.batch_size=64",
                    "train.log_every=1", "optim.lr=3e-3", "augment.noise=0.1")
    res = pretrain_images(cfg)
    assert "val_loss" in res.metrics and "knn_accuracy" not in res.metrics
    hist = [json.loads(ln) for ln in
            (tmp_path / "vision-pretrain" / "train" / "metrics.jsonl").read_text().splitlines()]
    losses = [h["loss"] for h in hist if h["kind"] == "train"]
    assert len(losses) == 16
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.1
    assert AutoModelForImageClassification.from_pretrained(res.model_dir) is not None
    with pytest.raises(PretuneError, match="has no labels"):
        pretrain_images(cfg.model_copy(update={"objective": "supervised", "name": "sup"}))


def test_pretrain_resume_is_exact(tmp_path, image_configs):
    _pretrain, _finetune = image_configs
    common = ["data.path=builtin:digits", "data.max_images=200", "data.val_fraction=0",
              "train.epochs=null", "train.batch_size=32", "train.save_every=2",
              "optim.schedule=constant", "optim.warmup_steps=0", "augment.noise=0.05"]
    pretrain_images(_pretrain(tmp_path, *common, "name=full", "train.max_steps=4"))
    pretrain_images(_pretrain(tmp_path, *common, "name=cut", "train.max_steps=2"))
    pretrain_images(_pretrain(tmp_path, *common, "name=cut", "train.max_steps=4"), resume=True)
    a = load_file(tmp_path / "full" / "model" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_shipped_vision_quickstart_validates():
    path = Path(__file__).resolve().parents[2] / "configs" / "vision-quickstart.yaml"
    data = yaml.safe_load(path.read_text())
    assert data["modality"] == "image" and {"pretrain", "finetune"} <= set(data)
    pre = ImagePretrainConfig.model_validate(data["pretrain"])
    ft = FinetuneConfig.model_validate(data["finetune"])
    # standalone `pretrain-images` writes where `finetune` (and the study) look
    assert ft.model.name == f"{pre.output_dir}/{pre.name}/model"
    assert pre.data.image_size == ft.task.image_size and pre.data.channels == ft.task.channels
