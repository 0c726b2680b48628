"""Sweep outputs from a real (in-memory) Optuna study, without training anything."""

from __future__ import annotations

import csv
import json

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from pretune.config import FinetuneConfig, SweepConfig, load_config
from pretune.sweep.report import write_outputs

DISTS = {"optim.lr": FloatDistribution(1e-5, 1e-2, log=True),
         "strategy.name": CategoricalDistribution(["full", "lora"])}


def make_study(n: int = 8) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for i in range(n):  # score rises with lr, strategy barely matters
        lr = 1e-5 * (2.5 ** i)
        params = {"optim.lr": lr, "strategy.name": ["full", "lora"][i % 2]}
        study.add_trial(create_trial(value=0.5 + 0.04 * i + 0.001 * (i % 2), params=params,
                                     distributions=DISTS, user_attrs={"std": 0.01}))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"optim.lr": 1e-5,
                                                                  "strategy.name": "full"},
                                 distributions=DISTS, intermediate_values={0: 0.2}))
    study.add_trial(create_trial(state=TrialState.FAIL, params={"optim.lr": 1e-2,
                                                                "strategy.name": "lora"},
                                 distributions=DISTS, user_attrs={"error": "loss became NaN"}))
    return study


def test_outputs_from_a_study(tmp_path):
    cfg = SweepConfig(name="rep", kfold=3, space={
        "optim.lr": {"low": 1e-5, "high": 1e-2, "log": True}, "strategy.name": ["full", "lora"]})
    summary = write_outputs(tmp_path, cfg, make_study(), "macro_f1", "maximize")
    best = summary["best"]
    assert best["number"] == 7 and best["value"] == 0.5 + 0.28 + 0.001
    assert summary["states"]["PRUNED"] == 1 and summary["errors"] == ["loss became NaN"]
    imp = summary["importances"]
    assert set(imp) == {"optim.lr", "strategy.name"} and imp["optim.lr"] > imp["strategy.name"]

    with open(tmp_path / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["number", "state", "value", "std", "duration_s", "optim.lr",
                             "strategy.name", "retry_of", "error"]
    assert rows[8]["state"] == "PRUNED" and float(rows[8]["value"]) == 0.2  # last report
    assert rows[9]["error"] == "loss became NaN" and rows[9]["value"] == ""

    ft = load_config(FinetuneConfig, tmp_path / "best.yaml")
    assert ft.name == "rep-best" and ft.strategy.name == "lora"
    assert abs(ft.optim.lr - 1e-5 * 2.5 ** 7) < 1e-15
    assert "validation macro_f1" in (tmp_path / "best.yaml").read_text().splitlines()[0]

    html = (tmp_path / "report.html").read_text()
    # history + importances + one plot per parameter, all inline; nothing fetched from outside
    assert html.count("<svg") == 4 and "http" not in html.lower()
    assert "0.7810 ± 0.0100" in html and "3-fold cross-validation" in html
    md = (tmp_path / "report.md").read_text()
    for png in ("history.png", "importances.png", "param_optim_lr.png",
                "param_strategy_name.png"):
        assert f"plots/{png}" in md and (tmp_path / "plots" / png).stat().st_size > 1000
    assert json.loads((tmp_path / "summary.json").read_text())["best"]["number"] == 7


def test_no_completed_trial_and_single_parameter(tmp_path):
    cfg = SweepConfig(name="none", space={"optim.lr": [0.1, 0.2]})
    study = optuna.create_study(direction="minimize")
    study.add_trial(create_trial(state=TrialState.FAIL, params={"optim.lr": 0.1},
                                 distributions={"optim.lr": CategoricalDistribution([0.1, 0.2])}))
    summary = write_outputs(tmp_path, cfg, study, "mse", "minimize")
    assert summary["best"] is None and not (tmp_path / "best.yaml").exists()
    md = (tmp_path / "report.md").read_text()
    assert "No trial completed" in md and "at least 2 searched parameters" in md
    assert "interrupted" in (tmp_path / "trials.csv").read_text()
