"""End to end: a tiny study from raw corpus to report, then a rerun that skips finished cells."""

from __future__ import annotations

import csv
import json

import pytest

from pretune.config import StudyConfig, load_config
from pretune.errors import PretuneError
from pretune.study.runner import plan_cells, run_study, start_finetune


@pytest.fixture
def study_cfg(tmp_path, monkeypatch, tiny_study_yaml):
    monkeypatch.chdir(tmp_path)  # the config's relative output dirs land in tmp_path
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_study_yaml)
    return load_config(StudyConfig, path, [f"output_dir={tmp_path / 'runs'}",
                                           f"prepare.output_dir={tmp_path / 'data'}"])


def test_plan_runs_zero_shot_once_per_start(study_cfg):
    cells = plan_cells(study_cfg)
    # 2 starts x (2 trained strategies x 2 budgets x 2 seeds + 1 zero-shot)
    assert len(cells) == 2 * (2 * 2 * 2 + 1)
    assert len({c.key for c in cells}) == len(cells)
    zero = [c for c in cells if c.budget_label == "zero-shot"]
    assert {c.start for c in zero} == {"scratch", "pretrained"} and len(zero) == 2


def test_exclude_rules_match_on_the_keys_they_name(study_cfg):
    cfg = study_cfg.model_copy(update={"exclude": [{"start": "scratch", "strategy": "prompt"},
                                                   {"strategy": "full", "budget": 32}]})
    cells = plan_cells(cfg)
    assert not any(c.start == "scratch" and c.strategy == "prompt" for c in cells)
    assert not any(c.strategy == "full" and c.budget_label == "32" for c in cells)
    assert len(cells) == len(plan_cells(study_cfg)) - 1 - 2 * 2


def test_tiny_study_end_to_end_and_rerun_skips(study_cfg, capsys, tb_events):
    out = run_study(study_cfg)
    for name in ("report.html", "report.md", "results.csv", "summary.csv", "study.yaml", "probes.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == len(plan_cells(study_cfg))
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows if r["status"] != "ok"]
    # the paired design: at each budget and seed, both starts trained on the same subsample
    assert {r["train_examples"] for r in rows if r["budget_label"] == "16"} == {"16"}
    probes = json.loads((out / "probes.json").read_text())
    assert sorted(p["step"] for p in probes) == [0, 3, 6]
    assert (out / "pretrain" / "final" / "config.json").is_file()
    html = (out / "report.html").read_text()
    assert "Verdict" in html and "Contamination" in html and "Compute" in html
    pre = (out / "report.md").read_text().split("## Pre-training and probes")[1].splitlines()
    header, values = pre[2], pre[4]
    assert "tokens" in header and "final train loss" in header
    assert "–" not in values.split("|")[5]  # the final train loss is reported
    printed = capsys.readouterr().out
    assert f"{len(rows)}/{len(rows)} cells done" in printed and ", ETA " in printed

    # each cell is one TensorBoard run whose hparams place it in the matrix (HParams view)
    for cell in plan_cells(study_cfg):
        events = tb_events(out / "cells" / cell.key / "train" / "tensorboard")
        hp = events["hparams"]
        assert hp["cell.start"] == cell.start and hp["cell.strategy"] == cell.strategy
        assert hp["cell.budget"] == cell.budget_label and "strategy.name" in hp
        assert any(k.startswith("test/") for k in events["hparam_metrics"])

    # rerun: every cell is reused, nothing trains again, the report is rewritten
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    run_study(study_cfg)
    printed = capsys.readouterr().out
    assert "[1/" not in printed  # no cell ran
    after = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    assert before == after


def test_failed_cell_is_reported_then_retried(study_cfg):
    cfg = study_cfg.model_copy(update={"starts": ["hf:/nonexistent/model"], "probes": False,
                                       "strategies": study_cfg.strategies[:1], "budgets": [16],
                                       "seeds": [0], "pretrain": None})
    out = run_study(cfg)
    (row,) = list(csv.DictReader((out / "results.csv").open()))
    assert row["status"] == "failed" and "nonexistent" in row["error"]
    assert "Failed" in (out / "report.html").read_text()


def test_scratch_needs_a_pretrain_section(study_cfg):
    cfg = study_cfg.model_copy(update={"pretrain": None, "probes": False})
    with pytest.raises(PretuneError, match="needs a `pretrain:` section"):
        run_study(cfg)


def test_start_finetune_from_a_mapping_and_from_a_sweep_best_yaml(study_cfg, tmp_path):
    best = tmp_path / "sweep"
    best.mkdir()
    (best / "best.yaml").write_text("optim:\n  lr: 3.0e-5\n  weight_decay: 0.0\n")
    cfg = study_cfg.model_copy(update={"start_finetune": {
        "pretrained": {"optim": {"lr": 7.0e-4}, "train": {"epochs": 2}},
        "builtin:minilm": str(best),
    }})
    assert start_finetune(cfg, "scratch") == cfg.finetune  # no entry: the study's defaults
    pre = start_finetune(cfg, "pretrained")
    assert (pre.optim.lr, pre.train.epochs, pre.train.batch_size) == (7e-4, 2, 8)
    mini = start_finetune(cfg, "builtin:minilm")
    assert (mini.optim.lr, mini.optim.weight_decay) == (3e-5, 0.0)
    assert mini.optim.betas == cfg.finetune.optim.betas  # the rest of optim is kept
    bad = study_cfg.model_copy(update={"start_finetune": {"scratch": {"optim": {"lrr": 1}}}})
    with pytest.raises(PretuneError, match="start_finetune.scratch.*optim.lrr"):
        start_finetune(bad, "scratch")
    # per-start settings are part of that start's cell keys, so changing them re-runs its cells
    keys = {c.start: c.key for c in plan_cells(cfg.model_copy(update={
        "starts": ["scratch", "pretrained", "builtin:minilm"]}))}
    assert "__ft-" not in keys["scratch"] and "__ft-" in keys["pretrained"]
    changed = cfg.model_copy(update={"starts": ["pretrained"], "start_finetune": {
        "pretrained": {"optim": {"lr": 1.0e-4}}}})
    assert plan_cells(changed)[0].key != next(
        c.key for c in plan_cells(cfg.model_copy(update={"starts": ["pretrained"]})))
    (best / "best.yaml").write_text("name: x\n")
    with pytest.raises(PretuneError, match="no `optim` section"):
        start_finetune(cfg, "builtin:minilm")


def test_two_tasks_with_one_name_are_refused(study_cfg, tmp_path):
    """a/good.csv and b/good.csv would share cell keys and mix their results."""
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "good.csv").write_text("text,label\nx,1\ny,0\n")
    tasks = [{"path": str(tmp_path / d / "good.csv")} for d in ("a", "b")]
    cfg = load_config(StudyConfig, None, [f"tasks={tasks}", "starts=[builtin:minilm]"])
    with pytest.raises(PretuneError, match="two study tasks are both named 'good'"):
        plan_cells(cfg)


def test_collapsed_cells_are_marked_in_the_report(study_cfg):
    bad = study_cfg.finetune.model_copy(update={
        "optim": study_cfg.finetune.optim.model_copy(update={"lr": 1e-9}),
        "class_weights": False})
    cfg = study_cfg.model_copy(update={"starts": ["scratch"], "probes": False,
                                       "strategies": study_cfg.strategies[1:2], "budgets": [32],
                                       "seeds": [0], "finetune": bad})
    out = run_study(cfg)
    (row,) = list(csv.DictReader((out / "results.csv").open()))
    assert "has not learned the task" in row["collapsed"]
    assert "1 of 1 cells collapsed" in (out / "report.md").read_text()
