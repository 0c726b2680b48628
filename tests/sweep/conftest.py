"""Fixtures for sweep tests: 200 rows of builtin:rotten-tomatoes as CSV (the shared WordPiece
fixture trains on them here), and a tiny random BERT fine-tuned for one short epoch."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pretune.config import FinetuneConfig, LoopConfig, ModelConfig, SweepConfig, TaskConfig
from pretune.data.builtin_tasks import builtin_rows

TINY_BERT = ModelConfig(name="bert-tiny", overrides={
    "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 64})


@pytest.fixture(scope="session")
def rt_rows() -> list[dict[str, str]]:
    rows, text_f, label_f = builtin_rows("rotten-tomatoes")
    return [{"text": r[text_f][:200], "label": r[label_f]} for r in rows[:200]]


@pytest.fixture(scope="session")
def rt_csv(tmp_path_factory, rt_rows) -> Path:
    path = tmp_path_factory.mktemp("data") / "rt.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(rt_rows)
    return path


@pytest.fixture()
def base_cfg(tmp_path, rt_csv, wordpiece_dir) -> FinetuneConfig:
    """Tiny BERT on the 200-row slice (120 train / 40 val / 40 test), one epoch, quiet."""
    return FinetuneConfig(
        name="ft", output_dir=str(tmp_path / "ft-runs"), model=TINY_BERT,
        tokenizer=str(wordpiece_dir), save_model=False,
        task=TaskConfig(path=str(rt_csv), test_size=40, val_fraction=0.25, max_length=32),
        train=LoopConfig(epochs=1, batch_size=16, progress=False, tensorboard=False,
                         log_every=5),
    )


@pytest.fixture()
def make_sweep(tmp_path, base_cfg):
    """SweepConfig factory over ``base_cfg`` writing to tmp_path/runs/<name>."""

    def make(**kw) -> SweepConfig:
        data = {"name": "sw", "output_dir": str(tmp_path / "runs"),
                "base": base_cfg.model_dump(mode="json"),
                "space": {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}}}
        data.update(kw)
        return SweepConfig.model_validate(data)

    return make
