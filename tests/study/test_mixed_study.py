"""A text study with a classification task and a token-tagging task side by side, on the
embedded Chinese data: each task judged on its own metric, the tagging task's test and
validation sentences held out of the pre-training corpus it comes from, and the contamination
check then clean."""

from __future__ import annotations

import csv
import json

from pretune.config import StudyConfig, load_config
from pretune.study.runner import plan_cells, run_study

MIXED = """
name: mixed
prepare:
  sources: [builtin:peoples-daily]
  max_docs: 2000
  word_boundaries: dictionary
  tokenizer: {vocab_size: 800}
pretrain:
  model: {name: bert-tiny, overrides: {hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}}
  seq_len: 32
  whole_word_mask: true
  train: {max_steps: 4, batch_size: 8, save_every: 2, eval_every: 2, progress: false, tensorboard: false}
tasks:
  - {path: "builtin:chn-sentiment", test_size: 40, val_fraction: 0.005, max_length: 32}
  - {path: "builtin:peoples-daily-ner", test_size: 40, val_fraction: 0.001, max_length: 32}
starts: [scratch, pretrained]
strategies:
  - {name: linear-probe, sklearn: true}
  - {name: full}
budgets: [32]
seeds: [0]
task_finetune:
  peoples-daily-ner: {optim: {lr: 1.0e-3}}
finetune:
  train: {epochs: 1, batch_size: 8, min_steps: null}
"""


def test_mixed_kinds_metrics_and_holdout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED)
    cfg = load_config(StudyConfig, path, [f"output_dir={tmp_path / 'runs'}",
                                          f"prepare.output_dir={tmp_path / 'data'}"])
    cells = plan_cells(cfg)
    assert {(c.task, c.strategy) for c in cells} == {
        ("chn-sentiment", "linear-probe-sklearn"), ("chn-sentiment", "full"),
        ("peoples-daily-ner", "full")}  # no scikit-learn probe for tagging
    out = run_study(cfg)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == len(cells) and all(r["status"] == "ok" for r in rows)
    ner = [r for r in rows if r["task"] == "peoples-daily-ner"]
    assert all(r["f1"] != "" and r["token_accuracy"] != "" for r in ner)
    report = (out / "report.md").read_text()
    assert "chn-sentiment: macro-F1 (macro_f1); peoples-daily-ner: entity F1 (f1)" in report
    held = [json.loads(x) for x in (out / "holdout.jsonl").read_text().splitlines()]
    assert len(held) == 40 + 44  # the NER task's test + validation sentences, nothing else
    meta = json.loads(next((tmp_path / "data").glob("*/meta.json")).read_text())
    assert meta["stats"]["clean"]["removed"]["held_out"] >= 1 and meta["word_starts"]
    assert "corpus docs held out" in report
    line = next(x for x in report.splitlines() if x.startswith("| peoples-daily-ner |"))
    assert "| 0 | 0.00% | ok |" in line  # nothing of the test split left in the corpus
