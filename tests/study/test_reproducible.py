"""A study is bitwise reproducible on CPU for the same seeds and thread count: two runs in two
processes (so Python's and Rust's hash seeds differ) give the same results.csv, apart from
the wall-clock seconds. The report states the versions and threads it depends on."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

STUDY = """
name: rep
prepare:
  max_docs: 100
  tokenizer: {vocab_size: 700}
pretrain:
  model: {name: bert-tiny, overrides: {hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}}
  seq_len: 32
  train: {max_steps: 6, batch_size: 8, save_every: 3, eval_every: 3, progress: false, tensorboard: false}
tasks:
  - {path: "builtin:rotten-tomatoes", test_size: 60, val_fraction: 0.05}
starts: [scratch, pretrained]
strategies: [{name: linear-probe, sklearn: true}, {name: full}, {name: lora}]
budgets: [16]
seeds: [0, 1]
finetune:
  train: {epochs: 1, batch_size: 8, min_steps: null}
  task: {max_length: 32}
"""


def _run(tmp_path, i: int):
    env = {**os.environ, "PYTHONHASHSEED": str(i), "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "pretune.cli", "study", str(tmp_path / "s.yaml"),
         f"output_dir={tmp_path / f'runs{i}'}", f"prepare.output_dir={tmp_path / f'data{i}'}"],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp_path / f"runs{i}" / "rep"


@pytest.mark.slow
def test_two_runs_of_a_study_give_the_same_results(tmp_path):
    (tmp_path / "s.yaml").write_text(STUDY)
    a, b = _run(tmp_path, 1), _run(tmp_path, 2)
    rows_a = list(csv.DictReader((a / "results.csv").open()))
    rows_b = list(csv.DictReader((b / "results.csv").open()))
    assert len(rows_a) == len(rows_b) == 2 * (3 * 2)
    for x, y in zip(rows_a, rows_b, strict=True):
        x.pop("seconds"), y.pop("seconds")
        assert x == y
    assert {r["status"] for r in rows_a} == {"ok"}
    env = json.loads((a / "environment.json").read_text())
    assert env["torch_threads"] == 2 and env["tokenizers"] and env["torch"]
    report = (a / "report.md").read_text()
    assert "## Environment" in report and "torch_threads" in report
