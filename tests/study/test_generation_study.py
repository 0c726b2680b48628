"""A generation study on the embedded news: gpt-tiny pre-trained on builtin:news (with the
headline task's test and validation articles held out) vs the same architecture from scratch,
fine-tuned on builtin:news-headlines; ROUGE-L verdicts, paired statistics, a table of example
generations side by side, and a clean contamination check."""

from __future__ import annotations

import csv
import json

from pretune.config import StudyConfig, load_config
from pretune.study.runner import plan_cells, run_study

GEN = """
name: gen
prepare:
  sources: [builtin:news]
  max_docs: 300
  tokenizer: {kind: bpe, vocab_size: 600}
pretrain:
  model: {name: gpt-tiny, overrides: {n_embd: 32, n_layer: 1, n_head: 2, n_inner: 64}}
  seq_len: 32
  train: {max_steps: 4, batch_size: 8, save_every: 2, eval_every: 2, progress: false, tensorboard: false}
tasks:
  - {path: "builtin:news-headlines", test_size: 12, val_size: 6, max_length: 48,
     max_target_length: 12, decode: {max_new_tokens: 6}}
starts: [scratch, pretrained]
strategies:
  - {name: full}
  - {name: prompt}
budgets: [24]
seeds: [0, 1]
exclude:
  - {start: scratch, strategy: prompt}
finetune:
  optim: {lr: 1.0e-3}
  train: {epochs: 1, batch_size: 8, min_steps: null}
"""


def test_generation_study_rouge_examples_and_holdout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "gen.yaml"
    path.write_text(GEN)
    cfg = load_config(StudyConfig, path, [f"output_dir={tmp_path / 'runs'}",
                                          f"prepare.output_dir={tmp_path / 'data'}"])
    cells = plan_cells(cfg)
    assert len(cells) == 2 * 2 + 1  # two starts x two seeds, one zero-shot cell
    out = run_study(cfg)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 5 and all(r["status"] == "ok" for r in rows), rows
    assert all(r["rougeL"] != "" and float(r["perplexity"]) > 1 for r in rows)
    examples = json.loads(rows[0]["examples"])
    assert len(examples) == 5 and {"input", "target", "generated"} <= set(examples[0])
    report = (out / "report.md").read_text()
    assert "Metric: ROUGE-L (rougeL)" in report and "example generations" in report
    assert "pretrained · full (24)" in report and "pretrained · prompt (zero-shot)" in report
    held = [json.loads(x) for x in (out / "holdout.jsonl").read_text().splitlines()]
    assert len(held) == 12 + 6  # the task's test + validation articles
    line = next(x for x in report.splitlines() if x.startswith("| news-headlines |"))
    assert "| 0.00% |" in line  # none of the test articles' 13-grams left in the corpus


def test_generation_quickstart_plan_excludes_by_seed():
    from pathlib import Path

    from pretune.config import load_study_config

    cfg = load_study_config(str(Path(__file__).parents[2] / "configs" /
                                "quickstart-generation.yaml"), [])
    keys = {(c.start, c.strategy, c.budget_label, c.seed) for c in plan_cells(cfg)}
    assert keys == {("scratch", "full", "512", 0), ("scratch", "full", "512", 1),
                    ("pretrained", "full", "512", 0), ("pretrained", "full", "512", 1),
                    ("builtin:smollm2", "lora", "192", 0),
                    ("builtin:smollm2", "prompt", "zero-shot", 0)}
