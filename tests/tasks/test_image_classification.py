"""The image-classification kind through the one fine-tuning path: strategies, the linear probes,
evaluate / predict on class folders and .npz, sweeps and k-fold."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pretune.config import (
    FinetuneConfig,
    OptimConfig,
    StrategyConfig,
    load_config,
)
from pretune.errors import PretuneError
from pretune.finetune.run import finetune
from pretune.finetune.strategies import apply_strategy
from pretune.models.vision import build_image_model


def test_linear_probe_keeps_the_backbone_frozen(tmp_path, image_configs):
    _, _finetune = image_configs
    torch.manual_seed(0)
    from pretune.models.vision import save_image_model

    start = save_image_model(build_image_model("resnet-tiny", 10, 16, 1), tmp_path / "start", 16, 1)
    ft = finetune(_finetune(tmp_path, f"model.name={start}", "strategy.name=linear-probe",
                                   "optim.lr=1e-2"))
    before = load_file(start / "model.safetensors")
    after = load_file(tmp_path / "vision-finetune" / "model" / "model.safetensors")
    body = [k for k in before if not k.startswith("classifier")]
    # Weights and BatchNorm running statistics are untouched; the head trained.
    assert all(torch.equal(before[k], after[k]) for k in body)
    assert ft.trainable_params == 64 * 10 + 10
    sk = finetune(_finetune(tmp_path, f"model.name={start}", "name=sk",
                                   "strategy.name=linear-probe", "strategy.sklearn=true"))
    assert sk.steps == 0 and sk.metrics["accuracy"] > 0.2
    # The fitted probe is a plain image classifier (standardisation folded into its linear
    # layer): evaluate on the run's own test split reproduces the run's test metrics.
    from transformers import AutoModelForImageClassification

    from pretune.finetune.predict import evaluate

    model_dir = tmp_path / "sk" / "model"
    AutoModelForImageClassification.from_pretrained(model_dir)
    again = evaluate(str(model_dir), "builtin:digits")
    assert again["accuracy"] == pytest.approx(sk.metrics["accuracy"], abs=1e-9)
    assert again["macro_f1"] == pytest.approx(sk.metrics["macro_f1"], abs=1e-6)


def test_strategy_groups(image_configs):
    _, _finetune = image_configs
    model = build_image_model("resnet-tiny", 3, 16, 1)
    optim = OptimConfig(lr=1.0)
    total = sum(p.numel() for p in model.parameters())
    full = apply_strategy(model, StrategyConfig(name="full"), optim)
    assert full.trainable_params == total
    partial = apply_strategy(model, StrategyConfig(name="partial", top_k=1), optim)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.startswith(("resnet.encoder.stages.2", "classifier")) for n in trainable)
    assert 0 < partial.trainable_params < total
    llrd = apply_strategy(model, StrategyConfig(name="llrd", llrd_decay=0.5), optim)
    lrs = sorted({g["lr"] for g in llrd.param_groups}, reverse=True)
    assert lrs[:3] == [1.0, 0.5, 0.25] and len(lrs) == 5  # head, 3 blocks, stem
    gradual = apply_strategy(model, StrategyConfig(name="gradual"), optim)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == \
        ["classifier.1.weight", "classifier.1.bias"]
    gradual.on_epoch_start(1, model)
    assert any(p.requires_grad for p in model.resnet.encoder.stages[2].parameters())
    with pytest.raises(PretuneError, match="lora does not apply to image-classification"):
        _finetune(Path("."), "strategy.name=lora")




# --------------------------------------------------------------------------- evaluate / predict


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, image_configs):
    """A fine-tuned 16 px digit classifier (model dir) and a 40-image slice of digits written
    as class folders of PNGs and as an .npz."""
    _, _finetune = image_configs
    from PIL import Image

    from pretune.data.images import load_image_task

    root = tmp_path_factory.mktemp("images")
    res = finetune(_finetune(root, "data.path=builtin:digits", "train.max_steps=30",
                             "data.max_images=300"))
    task = load_image_task(load_config(FinetuneConfig, None, ["data.image_size=16", "data.channels=1", "data.max_images=300"],
                                       defaults={"task": {"kind": "image-classification"}}).task)
    x = (task.test.x[:40, 0].numpy() * 255).round().astype(np.uint8)  # (40, 16, 16)
    y = task.test.y[:40]
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        d = root / "folders" / str(label)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(d / f"{i:03d}.png")
    np.savez(root / "slice.npz", x=x, y=y)
    np.savez(root / "unlabeled.npz", x=x)
    return res.out_dir / "model", root, x, y


def _own_probs(model_dir, x_uint8):
    """What the saved model itself says: plain transformers, its own image processor."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    proc = AutoImageProcessor.from_pretrained(model_dir)
    images = [Image.fromarray(a, "L") for a in x_uint8]
    with torch.no_grad():
        logits = model(**proc(images, return_tensors="pt")).logits
    return logits.softmax(-1).numpy()


def test_evaluate_and_predict_images(image_run, tmp_path):
    from pretune.finetune.predict import evaluate, predict

    model_dir, root, x, y = image_run
    probs = _own_probs(model_dir, x)
    for data in (root / "folders", root / "slice.npz"):
        m = evaluate(str(model_dir), str(data))
        assert m["accuracy"] == pytest.approx(float((probs.argmax(1) == y).mean()), abs=1e-9)
    assert (model_dir / "eval-slice.json").is_file()
    # a builtin: its test split with the model's own split settings and size
    bi = evaluate(str(model_dir), "builtin:digits")
    assert sum(c["support"] for c in bi["per_class"].values()) == 60  # 20% of 300
    out = predict(str(model_dir), str(root / "unlabeled.npz"), str(tmp_path / "p.csv"))
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[:2] == ["source", "pred"] and len(rows) == 40
    assert [int(r["pred"]) for r in rows] == probs.argmax(1).tolist()
    written = np.array([[float(r[f"prob_{c}"]) for c in range(10)] for r in rows])
    assert np.allclose(written, probs, atol=1e-5)
    folder = list(csv.DictReader(predict(str(model_dir), str(root / "folders"),
                                         str(tmp_path / "f.csv")).open()))
    assert folder[0]["source"].endswith(".png") and "label" in folder[0]
    with pytest.raises(PretuneError, match="has no labels; evaluate needs class sub-folders"):
        evaluate(str(model_dir), str(root / "unlabeled.npz"))
    with pytest.raises(PretuneError, match="not builtin:digits"):
        predict(str(model_dir), "builtin:digits", str(tmp_path / "b.csv"))


def test_image_sweep_and_kfold(tmp_path, image_configs):
    _, _finetune = image_configs
    from pretune.config import SweepConfig
    from pretune.sweep import cross_validate, run_sweep

    base = _finetune(tmp_path, "data.max_images=200", "data.budget=null", "train.max_steps=6",
                     "train.eval_every=3", "save_model=false", "output_dir=" + str(tmp_path / "ft"))
    sweep = SweepConfig.model_validate({
        "name": "img", "output_dir": str(tmp_path / "runs"), "base": base.model_dump(mode="json"),
        "sampler": "grid", "n_trials": None, "space": {"augment.shift": [0, 1]}})
    root = run_sweep(sweep)
    table = list(csv.DictReader((root / "trials.csv").open()))
    assert [r["state"] for r in table] == ["COMPLETE", "COMPLETE"]
    best = load_config(FinetuneConfig, root / "best.yaml")
    assert best.task.kind == "image-classification"
    cv = cross_validate(base.model_copy(update={"name": "cv"}), 2, overwrite=True)
    assert len(cv.fold_scores) == 2 and cv.metric == "macro_f1"
    assert 0.0 <= cv.mean <= 1.0
