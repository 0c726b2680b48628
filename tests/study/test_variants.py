"""Several pre-training recipes side by side in one study (``pretrain_variants``): each is a
start of its own (``pretrained-<key>``), cached like the main phase, named in the report."""

from __future__ import annotations

import csv

import pytest

from pretune.config import StudyConfig, load_config
from pretune.errors import PretuneError
from pretune.study.runner import run_study

STUDY = """
name: variants
prepare:
  max_docs: 80
  tokenizer: {vocab_size: 500}
pretrain:
  model: {name: bert-tiny, overrides: {hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}}
  seq_len: 32
  train: {max_steps: 4, batch_size: 8, eval_every: 2, progress: false, tensorboard: false}
pretrain_variants:
  electra: {objective: electra, electra_generator_size: 0.5}
  wv: {objective: wordvec}
starts: [scratch, pretrained, pretrained-electra, pretrained-wv]
strategies: [{name: linear-probe, sklearn: true}, {name: full}]
budgets: [16]
seeds: [0]
probes: false
finetune:
  train: {epochs: 1, batch_size: 8, min_steps: null}
  task: {max_length: 32}
"""


@pytest.fixture
def cfg(tmp_path, monkeypatch, rt_csv):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(STUDY)

    def make(*overrides: str) -> StudyConfig:
        return load_config(StudyConfig, tmp_path / "s.yaml", [
            f"output_dir={tmp_path / 'runs'}", f"prepare.output_dir={tmp_path / 'data'}",
            f"tasks=[{{path: {rt_csv}, test_size: 30, val_fraction: 0.1}}]", *overrides])
    return make


def test_variants_are_starts_of_their_own(cfg, tmp_path, capsys):
    out = run_study(cfg())
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["start"] for r in rows} == {"scratch", "pretrained", "pretrained-electra",
                                         "pretrained-wv"}
    assert all(r["status"] == "ok" for r in rows)
    assert (out / "pretrain-electra" / "final" / "config.json").is_file()
    assert (out / "pretrain-wv" / "final" / "config.json").is_file()
    report = (out / "report.md").read_text()
    assert "Pre-training (electra)" in report and "Pre-training (wv)" in report
    # rerun: every phase reused, nothing trained again
    capsys.readouterr()
    run_study(cfg())
    log = capsys.readouterr().out
    assert "== pre-training (electra)" not in log and "== pre-training (wv)" not in log


def test_variant_errors_name_the_field(cfg):
    with pytest.raises(PretuneError, match=r"pretrain_variants\.bad.*objectiv"):
        cfg("pretrain_variants.bad={objectiv: electra}")
    with pytest.raises(PretuneError, match=r"pretrain_variants\.x"):
        run_study(cfg("starts=[scratch, pretrained-x]"))
