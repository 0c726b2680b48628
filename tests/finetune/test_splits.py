"""Splits you can trust: split.json per run, task.split_from reuses it, evaluate on the run's
own file scores its test rows (rows=all: every row), overlap with training rows is counted."""

from __future__ import annotations

import csv
import json

import pytest

from pretune.errors import PretuneError
from pretune.finetune.predict import evaluate
from pretune.finetune.run import finetune


@pytest.fixture()
def run(make_cfg):
    cfg = make_cfg()
    return cfg, finetune(cfg.model_copy(update={"threshold": "off"}))


def test_every_run_writes_its_row_numbers(run, rt_csv):
    cfg, res = run
    rec = json.loads((res.out_dir / "split.json").read_text())
    rows = list(csv.DictReader(rt_csv.open()))
    assert len(rec["test_ids"]) == 60 and len(rec["val_ids"]) == 48
    assert len(rec["train_ids"]) == res.train_examples == 192
    everything = rec["train_ids"] + rec["val_ids"] + rec["test_ids"]
    assert sorted(everything) == list(range(len(rows)))  # each row in exactly one split


def test_split_from_reuses_the_same_rows(make_cfg, rt_csv, tmp_path):
    import shutil

    copy = tmp_path / "copy.csv"
    shutil.copy(rt_csv, copy)
    base = make_cfg()
    base = base.model_copy(update={"task": base.task.model_copy(update={"path": str(copy)})})
    first = finetune(base)

    def again(name: str, **task) -> object:
        t = base.task.model_copy(update={"split_seed": 7, "split_from": str(first.out_dir),
                                         **task})
        return finetune(base.model_copy(update={"name": name, "task": t, "train": base.train.
                                                model_copy(update={"seed": 3})}))

    second = again("second")
    a = json.loads((first.out_dir / "split.json").read_text())
    b = json.loads((second.out_dir / "split.json").read_text())
    assert a["test_ids"] == b["test_ids"] and a["train_ids"] == b["train_ids"]
    with pytest.raises(PretuneError, match="was made with task.path="):
        again("third", path=str(rt_csv))  # another file
    rows = list(csv.DictReader(copy.open()))
    rows[a["test_ids"][0]]["text"] += " (edited)"
    with open(copy, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(PretuneError, match="1 of 60 test rows .* changed since that run"):
        again("fourth")


def test_evaluate_on_the_training_file_scores_its_test_rows(run, rt_csv, tmp_path, capsys):
    cfg, res = run
    model = str(res.out_dir / "model")
    evaluate(model, str(rt_csv))
    out = capsys.readouterr()
    assert "scoring its 60 test rows (of 300" in out.err
    assert json.loads((res.out_dir / "model" / "eval-rt.json").read_text())["examples"] == 60
    evaluate(model, str(rt_csv), ["rows=all"])
    assert json.loads((res.out_dir / "model" / "eval-rt.json").read_text())["examples"] == 300
    # another file holding 10 training rows and 5 test rows: the 10 are counted
    rec = json.loads((res.out_dir / "split.json").read_text())
    rows = list(csv.DictReader(rt_csv.open()))
    mixed = [rows[i] for i in rec["train_ids"][:10] + rec["test_ids"][:5]]
    other = tmp_path / "mixed.csv"
    with open(other, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(mixed)
    capsys.readouterr()
    evaluate(model, str(other))
    assert "warning: 10 of 15 scored rows" in capsys.readouterr().err
