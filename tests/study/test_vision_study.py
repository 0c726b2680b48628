"""The image study (``modality: image``): pre-train, fine-tune scratch vs pretrained, report."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest
from transformers import AutoModelForImageClassification

from pretune.config import ImageStudyConfig, load_study_config
from pretune.errors import PretuneError
from pretune.study.runner import plan_cells, run_study

TINY = """
modality: image
name: tiny-vision
pretrain:
  model: {name: resnet-tiny}
  data: {path: "builtin:digits", image_size: 16, channels: 1, max_images: 400}
  train: {epochs: 1, batch_size: 64, progress: false, tensorboard: false}
tasks:
  - {path: "builtin:digits", image_size: 16, channels: 1, max_images: 400}
starts: [scratch, pretrained]
strategies:
  - {name: full}
  - {name: linear-probe, sklearn: true}
budgets: [20, 40]
seeds: [0, 1]
finetune:
  train: {epochs: null, max_steps: 4, eval_every: 2, batch_size: 16}
"""


@pytest.fixture
def vision_cfg(tmp_path, monkeypatch) -> ImageStudyConfig:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    cfg = load_study_config(path, [f"output_dir={tmp_path / 'runs'}"])
    assert isinstance(cfg, ImageStudyConfig)
    return cfg


def _interrupt_fit_call(monkeypatch, n: int) -> None:
    """The n-th training run gets a real SIGINT at its first evaluation (Ctrl-C mid-cell)."""
    import dataclasses

    import pretune.finetune.run as finetune_run
    import pretune.train.pretrain_images as pretrain_images
    from pretune.train.loop import fit as real

    calls = {"n": 0}

    def fit(*args, **kwargs):
        calls["n"] += 1
        evaluation = kwargs.get("evaluate")
        if calls["n"] == n and evaluation is not None:
            def interrupting(model):
                os.kill(os.getpid(), signal.SIGINT)  # the loop's handler turns it into a stop flag
                return evaluation.fn(model)

            kwargs["evaluate"] = dataclasses.replace(evaluation, fn=interrupting)
        return real(*args, **kwargs)

    for module in (finetune_run, pretrain_images):  # the two callers of the loop here
        monkeypatch.setattr(module, "fit", fit)


def test_image_study_end_to_end_interrupt_and_rerun(vision_cfg, capsys, monkeypatch):
    with monkeypatch.context() as m:
        _interrupt_fit_call(m, 3)  # fit 1 is pre-training; fits 2 and 3 are the first two cells
        with pytest.raises(KeyboardInterrupt):
            run_study(vision_cfg)
    out = vision_cfg.output_dir + "/" + vision_cfg.name
    assert len(list((Path(out) / "cells").glob("*.json"))) == 1  # the cut-short cell is not kept
    assert "interrupted; finished cells are kept" in capsys.readouterr().out

    out = run_study(vision_cfg)
    assert "[1/" not in capsys.readouterr().out  # the finished cell was reused
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == len(plan_cells(vision_cfg)) == 2 * 2 * 2 * 2
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows if r["status"] != "ok"]
    # paired design: both starts fine-tune on the same budgeted subsample
    assert {r["train_examples"] for r in rows if r["budget_label"] == "20"} == {"20"}
    assert {r["start"] for r in rows} == {"scratch", "pretrained"}
    model = AutoModelForImageClassification.from_pretrained(out / "pretrain" / "model")
    assert model.config.num_channels == 1
    md = (out / "report.md").read_text()
    assert "Task: digits" in md and "efficiency_digits.png" in md
    assert (out / "plots" / "efficiency_digits.png").stat().st_size > 1000
    # pre-training counts images; its curve has train and validation losses
    pre = md[md.index("## Pre-training"):]
    header, _, values = pre.splitlines()[2:5]
    assert "images" in header and "| – | –" not in values.replace(" ", " ")
    # pre-training on the same digits holds most of the task's test images: flagged
    assert "test images also in the pre-training data" in md and "FLAGGED" in md
    capsys.readouterr()

    run_study(vision_cfg)  # rerun: every cell and the pre-training are reused
    printed = capsys.readouterr().out
    assert "image pre-training" not in printed and "[1/" not in printed


def test_image_study_pretrained_start_needs_a_pretrain_section(vision_cfg):
    cfg = vision_cfg.model_copy(update={"pretrain": None})
    with pytest.raises(PretuneError, match="start 'pretrained' needs a `pretrain:` section"):
        run_study(cfg)


@pytest.mark.parametrize(("override", "message"), [
    ("strategies=[{name: lora}]", "strategies.0.name=lora is for text models"),
    ("starts=[builtin:minilm]", "start 'builtin:minilm' is a text start"),
    ("modality=audio", "modality='audio'; use text or image"),
])
def test_image_study_config_errors(tmp_path, override, message):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    with pytest.raises(PretuneError, match=message):
        load_study_config(path, [override])
