"""``run_sweep`` end to end on a tiny BERT: outputs, resume, interrupted trials, grid, k-fold,
best.yaml reproducing the best validation score, pruning, and input errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import optuna
import pytest

from pretune.config import FinetuneConfig, SweepConfig, load_config
from pretune.errors import PretuneError
from pretune.finetune.run import finetune
from pretune.sweep import run_sweep
from pretune.sweep.search import _reporter, make_pruner

PROBE = {"name": "linear-probe", "sklearn": True}  # ~1 s per trial on CPU, scores vary by seed


def rows(root) -> list[dict]:
    with open(root / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def study_of(root, name="sw") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'optuna.db'}")


def test_sweep_writes_outputs_and_resumes(make_sweep, base_cfg):
    base = base_cfg.model_copy(update={"strategy": base_cfg.strategy.model_copy(update=PROBE)})
    base = base.model_dump(mode="json")
    space = {"train.seed": {"low": 0, "high": 50, "int": True}}  # one searched parameter
    root = run_sweep(make_sweep(n_trials=2, space=space, base=base))
    assert [r["state"] for r in rows(root)] == ["COMPLETE", "COMPLETE"]
    assert (root / "trials" / "0" / "metrics.json").is_file()  # each trial its own dir
    assert (root / "trials" / "1" / "metrics.json").is_file()
    html = (root / "report.html").read_text()
    assert html.count("<svg") >= 2  # history + score vs train.seed, inline SVG
    assert "at least 2 searched parameters" in html  # importances skipped with a note
    assert (root / "plots" / "history.png").is_file() and "plots/history.png" in (
        root / "report.md").read_text()
    summary = json.loads((root / "summary.json").read_text())
    assert summary["metric"] == "macro_f1" and summary["direction"] == "maximize"
    assert summary["best"]["value"] == pytest.approx(max(float(r["value"]) for r in rows(root)))

    # Resume: n_trials 2 -> 3 runs exactly one more trial.
    run_sweep(make_sweep(n_trials=3, space=space, base=base))
    assert [r["number"] for r in rows(root)] == ["0", "1", "2"]

    # A trial left RUNNING by a killed process: marked FAIL, not counted, its params re-run.
    killed = study_of(root).ask()
    seed = killed.suggest_int("train.seed", 0, 50)
    run_sweep(make_sweep(n_trials=4, space=space, base=base))
    table = rows(root)
    assert [r["state"] for r in table] == ["COMPLETE"] * 3 + ["FAIL", "COMPLETE"]
    assert "interrupted" in table[3]["error"] and table[4]["retry_of"] == "3"
    assert int(table[4]["train.seed"]) == seed
    run_sweep(make_sweep(n_trials=4, space=space, base=base))  # nothing left to do
    assert len(rows(root)) == 5

    with pytest.raises(PretuneError, match=r"different config \(changed: space"):
        run_sweep(make_sweep(n_trials=4, space={**space, "optim.lr": [0.1]}, base=base))
    # --overwrite starts afresh; this one runs the training-loop path (full fine-tuning).
    run_sweep(make_sweep(n_trials=1, space={"optim.lr": {"low": 1e-4, "high": 1e-2,
                                                         "log": True}}), overwrite=True)
    assert len(rows(root)) == 1
    trial = json.loads((root / "trials" / "0" / "metrics.json").read_text())
    assert trial["timing"]["steps"] > 0  # the loop ran (the sklearn probe path has no optimizer steps)


def test_grid_covers_every_point_and_best_yaml_reproduces_it(make_sweep, base_cfg):
    base = base_cfg.model_copy(update={"strategy": base_cfg.strategy.model_copy(update=PROBE)})
    cfg = make_sweep(sampler="grid", n_trials=None, base=base.model_dump(mode="json"),
                     space={"train.seed": [1, 2], "task.max_length": {"low": 16, "high": 32,
                                                                      "int": True, "step": 16}})
    root = run_sweep(cfg)
    table = rows(root)
    points = {(r["train.seed"], r["task.max_length"]) for r in table}
    assert points == {("1", "16"), ("1", "32"), ("2", "16"), ("2", "32")} and len(table) == 4
    assert "fANOVA" in (root / "report.md").read_text()  # 2 params, 4 trials: importances
    summary = json.loads((root / "summary.json").read_text())
    scores = [float(r["value"]) for r in table]
    assert len(set(scores)) > 1  # the search space actually matters here
    best = load_config(FinetuneConfig, root / "best.yaml")
    assert best.name == "sw-best" and best.train.seed == summary["best"]["params"]["train.seed"]
    again = finetune(best)  # same seed on CPU -> the same validation score
    assert again.val_metrics["macro_f1"] == pytest.approx(summary["best"]["value"], abs=1e-12)
    assert summary["best"]["value"] == max(scores)


def test_kfold_sweep_optimises_the_cv_mean(make_sweep, base_cfg, tmp_path):
    base = base_cfg.model_copy(update={"strategy": base_cfg.strategy.model_copy(update=PROBE)})
    cfg = make_sweep(name="cv", sampler="random", n_trials=2, kfold=3, seed=1,
                     base=base.model_dump(mode="json"), space={"train.seed": [0, 1, 2]})
    root = tmp_path / "runs" / "cv"
    run_sweep(cfg)
    for r in rows(root):
        cv = json.loads((root / "trials" / r["number"] / "cv.json").read_text())
        folds = [json.loads((root / "trials" / r["number"] / f"fold-{i}" / "metrics.json")
                            .read_text())["val"]["macro_f1"] for i in range(3)]
        assert float(r["value"]) == pytest.approx(np.mean(folds)) == pytest.approx(cv["mean"])
        assert float(r["std"]) == pytest.approx(np.std(folds, ddof=1))
    assert "3-fold cross-validation mean" in (root / "report.html").read_text()


def test_sweep_input_errors(make_sweep, tmp_path):
    with pytest.raises(PretuneError, match="larger than class '(fresh|rotten)', which has only"):
        run_sweep(make_sweep(name="e1", kfold=100))
    with pytest.raises(PretuneError, match="sweep metric 'f2' is not a metric.*macro_f1"):
        run_sweep(make_sweep(name="e2", metric="f2"))
    no_val = make_sweep().base.task.model_copy(update={"val_fraction": 0.0})
    base = make_sweep().base.model_copy(update={"task": no_val})
    with pytest.raises(PretuneError, match="needs a validation split"):
        run_sweep(make_sweep(name="e3", base=base.model_dump(mode="json")))
    holder = subprocess.Popen(  # another process runs sweep e4
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from pretune.train."
         "rundir import run_lock\nwith run_lock(Path(sys.argv[1])):\n print('held', flush=True)"
         "; time.sleep(60)", str(tmp_path / "runs" / "e4")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PretuneError, match=f"e4 is in use by pid {holder.pid}"):
            run_sweep(make_sweep(name="e4"))
    finally:
        holder.kill()
        holder.wait()


def test_median_pruner_stops_a_trial_below_the_median():
    cfg = SweepConfig(space={"optim.lr": [0.1]})
    study = optuna.create_study(direction="maximize", pruner=make_pruner(cfg))
    for _ in range(3):  # n_startup_trials
        t = study.ask()
        _reporter(t)(0, 0.9)
        study.tell(t, 0.9)
    t = study.ask()
    _reporter(t)(0, float("nan"))  # ignored, not reported
    assert t.number not in study.trials[-1].intermediate_values
    with pytest.raises(optuna.TrialPruned):
        _reporter(t)(0, 0.1)
    nop = optuna.create_study(pruner=make_pruner(SweepConfig(pruner="none", space={"optim.lr": [0.1]})))
    t = nop.ask()
    _reporter(t)(0, 0.1)  # never prunes


def test_a_failed_trial_is_one_line_with_its_traceback_in_a_file(make_sweep, capfd):
    cfg = make_sweep(name="bad", sampler="grid",
                     space={"model.overrides.num_attention_heads": [2, 3]})  # 32 % 3 != 0
    root = run_sweep(cfg)
    out, err = capfd.readouterr()
    failed = [line for line in (out + err).splitlines() if " failed" in line.lower()
              and line.lower().startswith(("trial", "[w"))]
    assert len(failed) == 1 and failed[0].startswith("trial 0 failed: ")
    assert "not divisible by num_attention_heads 3" in failed[0]
    assert "Traceback" not in out + err
    (log,) = (root / "trials").glob("*.traceback.txt")
    assert "Traceback (most recent call last)" in log.read_text()


def test_sweep_trials_are_mlflow_runs_with_their_sampled_values(make_sweep, base_cfg,
                                                                monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = base_cfg.model_copy(update={
        "strategy": base_cfg.strategy.model_copy(update=PROBE),
        "train": base_cfg.train.model_copy(update={"report_to": ["mlflow"]})})
    space = {"train.seed": {"low": 0, "high": 50, "int": True}}
    root = run_sweep(make_sweep(n_trials=2, space=space, base=base.model_dump(mode="json")))
    client = MlflowClient(tracking_uri=(root / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("sw").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["trial-0", "trial-1"]
    table = {r["number"]: r for r in rows(root)}
    for r in runs:
        number = r.info.run_name.removeprefix("trial-")
        assert r.data.params["sweep.train.seed"] == table[number]["train.seed"]
        assert r.data.metrics["val/macro_f1"] == pytest.approx(float(table[number]["value"]))
