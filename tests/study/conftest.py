"""Study fixtures: the tiny real study (raw corpus -> report in seconds) several tests share."""

from __future__ import annotations

import pytest

from pretune.config import StudyConfig, load_config

TINY = """
name: tiny
prepare:
  max_docs: 120
  tokenizer: {vocab_size: 600}
pretrain:
  model: {name: bert-tiny, overrides: {hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}}
  seq_len: 32
  train: {max_steps: 6, batch_size: 8, save_every: 3, eval_every: 3, progress: false, tensorboard: false}
tasks:
  - {path: "builtin:rotten-tomatoes", test_size: 60, val_fraction: 0.05}
starts: [scratch, pretrained]
strategies:
  - {name: linear-probe, sklearn: true}
  - {name: full}
  - {name: prompt}
budgets: [16, 32]
seeds: [0, 1]
finetune:
  train: {epochs: 1, batch_size: 8, min_steps: null}
  task: {max_length: 32}
"""


@pytest.fixture(scope="session")
def tiny_study_yaml() -> str:
    return TINY


@pytest.fixture(scope="session")
def tiny_studies(tmp_path_factory):
    """Two real tiny studies, run once per session: ``tiny`` (the full matrix above) and
    ``tiny-short`` (one strategy, two budgets, shorter pre-training) — what the browser and
    compare tests read. Returns their report directories."""
    from pretune.study.runner import run_study

    root = tmp_path_factory.mktemp("tiny-studies")
    path = root / "tiny.yaml"
    path.write_text(TINY)
    base = [f"output_dir={root / 'runs'}", f"prepare.output_dir={root / 'data'}"]
    full = run_study(load_config(StudyConfig, path, base))
    short = run_study(load_config(StudyConfig, path, [
        *base, "name=tiny-short", "pretrain.train.max_steps=3", "strategies=[{name: full}]",
        "seeds=[0]", "budgets=[16, 32]"]))
    return full, short
