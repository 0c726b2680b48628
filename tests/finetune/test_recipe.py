"""Defaults that learn: the `auto` learning rate by strategy and size, class weights on an
imbalanced task (every strategy, the scikit-learn probe too), a minimum number of steps, the
tuned binary threshold (saved, used by predict / evaluate), and the collapse check."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from pretune.config import FinetuneConfig, LoopConfig, TaskConfig
from pretune.data.builtin_tasks import builtin_rows
from pretune.evaluate import threshold
from pretune.finetune import recipe
from pretune.finetune.predict import evaluate, predict
from pretune.finetune.probe import fit_sklearn_probe
from pretune.finetune.run import finetune
from pretune.models.start import resolve_start


def test_auto_learning_rate_by_strategy_and_size():
    minilm = resolve_start("builtin:minilm")  # 6 layers x 384: ~11M block parameters
    assert recipe.auto_lr("full", minilm)[0] == 1e-4
    assert recipe.auto_lr("lora", minilm) == (1e-3, "LoRA on a 11M-parameter checkpoint")
    assert recipe.auto_lr("linear-probe", minilm)[0] == 1e-3
    assert recipe.auto_lr("full", resolve_start("bert-tiny"))[0] == 3e-4  # random init
    cfg = FinetuneConfig()
    assert cfg.optim.lr == "auto" and cfg.class_weights == "auto" and cfg.threshold == "auto"
    assert cfg.train.min_steps == 100 and TaskConfig(budget="all").budget is None


def test_min_steps_lengthen_a_short_epoch_budget():
    loop = LoopConfig(epochs=1, batch_size=16, min_steps=100)
    longer, note = recipe.with_min_steps(loop, 12, "text-classification")
    assert longer.epochs == pytest.approx(100 / 12) and "min_steps=100" in note
    assert longer.eval_every == 20  # about five validations, not one per short epoch
    assert recipe.with_min_steps(loop, 200, "text-classification") == (loop, None)  # enough
    assert recipe.with_min_steps(loop, 12, "generation") == (loop, None)  # its own recipe
    fixed = loop.model_copy(update={"max_steps": 5})
    assert recipe.with_min_steps(fixed, 12, "text-classification") == (fixed, None)  # user's


@pytest.fixture(scope="module")
def imbalanced_csv(tmp_path_factory):
    """260 reviews of builtin:rotten-tomatoes, 13% rotten (the minority: the positive class)."""
    rows, text_f, label_f = builtin_rows("rotten-tomatoes")
    rows = [{"text": r[text_f][:300], "label": r[label_f]} for r in rows[:1500]]
    picked = [r for r in rows if r["label"] == "fresh"][:226] + \
        [r for r in rows if r["label"] == "rotten"][:34]
    picked = [picked[i] for i in np.random.default_rng(0).permutation(len(picked))]
    path = tmp_path_factory.mktemp("imb") / "imbalanced.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(picked)
    return path


def test_class_weights_auto_decides_from_the_training_split(make_cfg, imbalanced_csv, rt_csv):
    from pretune.data.labeled import load_task

    cfg = make_cfg()
    skewed = load_task(cfg.task.model_copy(update={"path": str(imbalanced_csv)}))
    resolved, notes = recipe.resolve(cfg.model_copy(update={"class_weights": "auto"}),
                                     "text-classification", skewed, resolve_start("bert-tiny"))
    assert resolved.class_weights is True and any("class_weights=auto: on" in n for n in notes)
    balanced = load_task(cfg.task)
    resolved, _ = recipe.resolve(cfg.model_copy(update={"class_weights": "auto"}),
                                 "text-classification", balanced, resolve_start("bert-tiny"))
    assert resolved.class_weights is False


def test_sklearn_probe_honours_class_weights():
    x = np.random.default_rng(0).normal(size=(40, 4))
    y = [0] * 34 + [1] * 6
    est = fit_sklearn_probe(x, y, x[:0], [], "single_label", ["a", "b"], balanced=True)
    assert est[-1].class_weight == "balanced"
    assert fit_sklearn_probe(x, y, x[:0], [], "single_label", ["a", "b"])[-1].class_weight is None


def test_threshold_tuning_and_its_monotone_remap():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.35, 0.65]])
    labels = [0, 0, 1, 1, 1]
    t = threshold.tune(probs, labels, 1)
    assert 0.2 < t < 0.3  # both 0.3 and 0.4 are positives: the cut goes below them
    remapped = threshold.apply(probs, 1, t)
    assert list(np.argmax(remapped, 1)) == [0, 0, 1, 1, 1]
    assert np.all(np.diff(remapped[:, 1]) > 0)  # order kept: ROC-AUC unchanged
    assert threshold.positive_class([0, 0, 0, 1]) == 1 and threshold.positive_class([0, 1, 1]) == 0


def test_imbalanced_defaults_threshold_saved_and_used_by_predict_and_evaluate(
        make_cfg, imbalanced_csv, capsys):
    cfg = make_cfg(task=TaskConfig(path=str(imbalanced_csv), test_size=60, val_fraction=0.25,
                                   max_length=48))
    cfg = cfg.model_copy(update={"class_weights": "auto", "optim": cfg.optim.model_copy(
        update={"lr": "auto"}), "train": cfg.train.model_copy(update={"progress": True})})
    res = finetune(cfg)
    err = capsys.readouterr().err
    assert "optim.lr=auto: 0.0003 (full fine-tuning of a random-init model)" in err
    assert "class_weights=auto: on" in err
    saved = json.loads((res.out_dir / "metrics.json").read_text())
    assert saved["config"]["class_weights"] is True and saved["config"]["optim"]["lr"] == 3e-4
    assert saved["recipe"] and "tuned_macro_f1" in saved["test"] and "macro_f1" in saved["test"]
    t = saved["test"]["threshold"]
    assert 0 < t < 1 and saved["test"]["threshold_positive"] == "rotten"
    info = json.loads((res.out_dir / "model" / "pretune_task.json").read_text())
    assert info["threshold"] == t and info["positive"] == "rotten"
    out = predict(res.out_dir / "model", str(imbalanced_csv), str(res.out_dir / "p.csv"))
    rows = list(csv.DictReader(out.open()))
    for r in rows:  # the tuned cut-off decides, not 0.5 (probabilities are printed rounded)
        if abs(float(r["prob_rotten"]) - t) > 1e-5:
            assert r["pred"] == ("rotten" if float(r["prob_rotten"]) > t else "fresh")
    metrics = evaluate(str(res.out_dir / "model"), str(imbalanced_csv))
    assert "tuned_macro_f1" in metrics and metrics["threshold"] == t


def test_collapse_is_named_with_its_fixes(make_cfg, capsys):
    cfg = make_cfg()
    res = finetune(cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"lr": 1e-9}),
                                          "class_weights": False, "threshold": "off"}))
    err = capsys.readouterr().err
    assert "it has not learned the task; try a higher optim.lr" in err
    assert res.collapsed and json.loads((res.out_dir / "metrics.json").read_text())["collapsed"]


def test_collapse_check_itself():
    from types import SimpleNamespace as NS

    task = NS(type="single_label", labels=["a", "b"], train=NS(labels=[0, 0, 0, 1]),
              val=NS(labels=[0, 1, 0, 1]))
    one = np.array([[0.9, 0.1]] * 4)
    assert "predicts 'a' for every validation example" in recipe.collapse(
        task, one, {"macro_f1": 0.33}, "macro_f1")
    good = np.array([[0.9, 0.1], [0.1, 0.9], [0.8, 0.2], [0.2, 0.8]])
    assert recipe.collapse(task, good, {"macro_f1": 1.0}, "macro_f1") is None
