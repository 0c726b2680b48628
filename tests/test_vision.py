"""Vision entry points: supervised / SimCLR pre-training and fine-tuning through the one loop."""

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
    ImageFinetuneConfig,
    ImagePretrainConfig,
    OptimConfig,
    StrategyConfig,
    load_config,
)
from pretune.data.builtin import builtin_path
from pretune.errors import PretuneError
from pretune.models.vision import build_image_model
from pretune.vision import apply_image_strategy, finetune_images, pretrain_images

QUIET = ["train.progress=false", "train.tensorboard=false"]
SMALL = ["data.image_size=16", "data.channels=1"]


def _pretrain(tmp_path: Path, *overrides: str) -> ImagePretrainConfig:
    return load_config(ImagePretrainConfig, None, [f"output_dir={tmp_path}", *QUIET, *SMALL,
                                                   *overrides])


def _finetune(tmp_path: Path, *overrides: str) -> ImageFinetuneConfig:
    return load_config(ImageFinetuneConfig, None, [
        f"output_dir={tmp_path}", *QUIET, *SMALL, "data.max_images=500", "data.budget=100",
        "train.epochs=null", "train.max_steps=40", "train.eval_every=20", *overrides])


def test_supervised_pretrain_then_finetune_beats_chance(tmp_path):
    cfg = _pretrain(tmp_path, "data.max_images=600", "train.epochs=2", "train.batch_size=64")
    pre = pretrain_images(cfg)
    assert pre.steps == 18 and pre.images_seen == 2 * 540
    saved = json.loads((tmp_path / "vision-pretrain" / "metrics.json").read_text())
    assert saved["objective"] == "supervised" and "accuracy" in saved["val"]
    loaded = AutoModelForImageClassification.from_pretrained(pre.model_dir)
    assert loaded.config.num_channels == 1 and loaded.config.num_labels == 10
    ft = finetune_images(_finetune(tmp_path, f"model.name={pre.model_dir}"))
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
        finetune_images(_finetune(tmp_path, f"model.name={pre.model_dir}"))


def test_simclr_on_unlabeled_images_lowers_the_loss(tmp_path):
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


def test_pretrain_resume_is_exact(tmp_path):
    common = ["data.path=builtin:digits", "data.max_images=200", "data.val_fraction=0",
              "train.epochs=null", "train.batch_size=32", "train.save_every=2",
              "optim.schedule=constant", "optim.warmup_steps=0", "augment.noise=0.05"]
    pretrain_images(_pretrain(tmp_path, *common, "name=full", "train.max_steps=4"))
    pretrain_images(_pretrain(tmp_path, *common, "name=cut", "train.max_steps=2"))
    pretrain_images(_pretrain(tmp_path, *common, "name=cut", "train.max_steps=4"), resume=True)
    a = load_file(tmp_path / "full" / "model" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_linear_probe_keeps_the_backbone_frozen(tmp_path):
    torch.manual_seed(0)
    from pretune.models.vision import save_image_model

    start = save_image_model(build_image_model("resnet-tiny", 10, 16, 1), tmp_path / "start", 16, 1)
    ft = finetune_images(_finetune(tmp_path, f"model.name={start}", "strategy.name=linear-probe",
                                   "optim.lr=1e-2"))
    before = load_file(start / "model.safetensors")
    after = load_file(tmp_path / "vision-finetune" / "model" / "model.safetensors")
    body = [k for k in before if not k.startswith("classifier")]
    # Weights and BatchNorm running statistics are untouched; the head trained.
    assert all(torch.equal(before[k], after[k]) for k in body)
    assert ft.trainable_params == 64 * 10 + 10
    sk = finetune_images(_finetune(tmp_path, f"model.name={start}", "name=sk",
                                   "strategy.name=linear-probe", "strategy.sklearn=true"))
    assert sk.steps == 0 and sk.metrics["accuracy"] > 0.2


def test_strategy_groups():
    model = build_image_model("resnet-tiny", 3, 16, 1)
    optim = OptimConfig(lr=1.0)
    total = sum(p.numel() for p in model.parameters())
    full = apply_image_strategy(model, StrategyConfig(name="full"), optim)
    assert full.trainable_params == total
    partial = apply_image_strategy(model, StrategyConfig(name="partial", top_k=1), optim)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.startswith(("resnet.encoder.stages.2", "classifier")) for n in trainable)
    assert 0 < partial.trainable_params < total
    llrd = apply_image_strategy(model, StrategyConfig(name="llrd", llrd_decay=0.5), optim)
    lrs = sorted({g["lr"] for g in llrd.param_groups}, reverse=True)
    assert lrs[:3] == [1.0, 0.5, 0.25] and len(lrs) == 5  # head, 3 blocks, stem
    gradual = apply_image_strategy(model, StrategyConfig(name="gradual"), optim)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == \
        ["classifier.1.weight", "classifier.1.bias"]
    gradual.on_epoch_start(1, model)
    assert any(p.requires_grad for p in model.resnet.encoder.stages[2].parameters())
    with pytest.raises(PretuneError, match="image models support full"):
        apply_image_strategy(model, StrategyConfig(name="lora"), optim)


def test_shipped_vision_quickstart_validates():
    path = Path(__file__).resolve().parents[1] / "configs" / "vision-quickstart.yaml"
    data = yaml.safe_load(path.read_text())
    assert data["modality"] == "image" and {"pretrain", "finetune"} <= set(data)
    pre = ImagePretrainConfig.model_validate(data["pretrain"])
    ft = ImageFinetuneConfig.model_validate(data["finetune"])
    # standalone `pretrain-images` writes where `finetune-images` (and the study) look
    assert ft.model.name == f"{pre.output_dir}/{pre.name}/model"
    assert pre.data.image_size == ft.data.image_size and pre.data.channels == ft.data.channels
