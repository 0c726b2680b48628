"""Labeled tasks: readers, task types, stratified deterministic splits, budgets, bad input."""

from __future__ import annotations

import bz2
import csv
import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pretune.config import TaskConfig
from pretune.data.labeled import apply_budget, infer_type, load_task, read_split, task_fingerprint
from pretune.errors import PretuneError


def _rows(n: int = 120, classes: tuple[str, ...] = ("pos", "neg", "mid")) -> list[dict]:
    return [{"text": f"example number {i} about {classes[i % len(classes)]}",
             "label": classes[i % len(classes)], "other": i} for i in range(n)]


def _write(path: Path, rows: list[dict], fmt: str) -> Path:
    opener = gzip.open if path.suffix == ".gz" else bz2.open if path.suffix == ".bz2" else open
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        if fmt == "jsonl":
            f.writelines(json.dumps(r) + "\n" for r in rows)
        else:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if fmt == "tsv" else ",")
            w.writeheader()
            w.writerows(rows)
    return path


@pytest.mark.parametrize("name,fmt", [
    ("d.csv", "csv"), ("d.tsv", "tsv"), ("d.jsonl", "jsonl"), ("d.parquet", "parquet"),
    ("d.csv.gz", "csv"), ("d.jsonl.bz2", "jsonl"),
])
def test_every_reader_gives_the_same_task(tmp_path, name, fmt):
    path = _write(tmp_path / name, _rows(), fmt)
    task = load_task(TaskConfig(path=str(path), test_size=30))
    assert task.type == "single_label" and task.labels == ["mid", "neg", "pos"]
    assert len(task.train) + len(task.val) + len(task.test) == 120 and len(task.test) == 30
    ref = load_task(TaskConfig(path=str(_write(tmp_path / "ref.csv", _rows(), "csv")), test_size=30))
    assert task.test.texts == ref.test.texts and task.test.labels == ref.test.labels


def test_builtin_rotten_tomatoes_and_wiki_topics():
    rt = load_task(TaskConfig(path="builtin:rotten-tomatoes", test_size=2000))
    assert rt.labels == ["fresh", "rotten"] and len(rt.test) == 2000
    assert len(rt.train) + len(rt.val) + len(rt.test) == 12808
    assert 0.55 < rt.majority_baseline < 0.60  # fresh is the majority (57.8%)
    wt = load_task(TaskConfig(path="builtin:wiki-topics"))
    assert len(wt.labels) == 11 and "Uncategorized" not in wt.labels
    assert len(wt.train) + len(wt.val) + len(wt.test) == 9033


def test_splits_are_stratified_deterministic_and_fixed_across_budgets(tmp_path):
    rows = _rows(300, ("a", "b")) + _rows(60, ("c",))  # unbalanced: c is 1/6
    path = _write(tmp_path / "d.csv", rows, "csv")
    cfg = TaskConfig(path=str(path), test_fraction=0.2, split_seed=3)
    t1, t2 = load_task(cfg), load_task(cfg.model_copy(update={"budget": 30}), seed=7)
    assert t1.test.texts == t2.test.texts and t1.val.texts == t2.val.texts
    share = Counter(t1.test.labels)[t1.labels.index("c")] / len(t1.test)
    assert abs(share - 60 / 360) < 0.02
    other = load_task(cfg.model_copy(update={"split_seed": 4}))
    assert other.test.texts != t1.test.texts
    assert task_fingerprint(cfg) == task_fingerprint(cfg.model_copy(update={"budget": 30}))
    assert task_fingerprint(cfg) != task_fingerprint(cfg.model_copy(update={"split_seed": 4}))


def test_budget_is_stratified_seeded_and_covers_every_class(tmp_path):
    rows = _rows(400, tuple("abcdefgh"))
    task = load_task(TaskConfig(path=str(_write(tmp_path / "d.csv", rows, "csv"))))
    small = apply_budget(task, 8, seed=0)
    assert len(small.train) == 8 and sorted(set(small.train.labels)) == list(range(8))
    assert apply_budget(task, 40, 1).train.texts == apply_budget(task, 40, 1).train.texts
    assert apply_budget(task, 40, 1).train.texts != apply_budget(task, 40, 2).train.texts
    assert set(apply_budget(task, 40, 1).train.texts) <= set(task.train.texts)
    with pytest.raises(PretuneError, match="larger than the"):
        apply_budget(task, 10_000, 0)
    with pytest.raises(PretuneError, match="smaller than the 8 classes"):
        apply_budget(task, 5, 0)


def test_multi_label_from_separator_and_json_list(tmp_path):
    sets = [["x"], ["y"], ["x", "y"], ["z"]]
    rows = [{"text": f"t{i}", "label": "|".join(sets[i % 4])} for i in range(80)]
    task = load_task(TaskConfig(path=str(_write(tmp_path / "m.csv", rows, "csv")), test_size=20))
    assert task.type == "multi_label" and task.labels == ["x", "y", "z"]
    assert all(len(y) == 3 for y in task.train.labels)
    rows_j = [{"text": f"t{i}", "label": sets[i % 4]} for i in range(80)]
    task_j = load_task(TaskConfig(path=str(_write(tmp_path / "m.jsonl", rows_j, "jsonl")), test_size=20))
    assert task_j.type == "multi_label" and task_j.train.labels == task.train.labels
    assert apply_budget(task, 5, 0).train.labels  # every label covered in a tiny budget
    assert np.asarray(apply_budget(task, 3, 0).train.labels).sum(axis=0).min() >= 1


def test_regression_and_type_inference(tmp_path):
    rows = [{"text": f"t{i}", "label": f"{i * 0.37:.2f}"} for i in range(100)]
    task = load_task(TaskConfig(path=str(_write(tmp_path / "r.csv", rows, "csv")), test_size=20))
    assert task.type == "regression" and task.labels == [] and task.num_labels == 1
    assert isinstance(task.train.labels[0], float)
    assert infer_type(["1", "0", "1"], "|") == "single_label"  # few distinct numbers: classes
    assert infer_type(["a|b", "c"], "|") == "multi_label"
    bad = rows[:50] + [{"text": "x", "label": "n/a"}] + rows[50:]
    path = _write(tmp_path / "bad.csv", bad, "csv")
    with pytest.raises(PretuneError, match=r"row 51: regression target 'n/a' is not a number"):
        load_task(TaskConfig(path=str(path), type="regression"))


def test_given_validation_and_test_files_and_pairs(tmp_path):
    rows = [{**r, "pair": "second " + r["text"]} for r in _rows(60)]
    tr = _write(tmp_path / "tr.csv", rows, "csv")
    va = _write(tmp_path / "va.csv", rows[:9], "csv")
    te = _write(tmp_path / "te.jsonl", rows[9:21], "jsonl")
    task = load_task(TaskConfig(path=str(tr), validation=str(va), test=str(te), text_pair_field="pair"))
    assert (len(task.train), len(task.val), len(task.test)) == (60, 9, 12)
    assert task.test.pairs[0].startswith("second ")
    split = read_split(str(te), TaskConfig(path=str(te)), "single_label", task.labels)
    assert split.labels == task.test.labels


def test_bad_inputs_have_one_line_errors(tmp_path):
    path = _write(tmp_path / "d.csv", _rows(), "csv")
    with pytest.raises(PretuneError, match=r"d.csv has no column 'body' \(columns: text, label, other\)"):
        load_task(TaskConfig(path=str(path), text_field="body"))
    with pytest.raises(PretuneError, match="no column 'y'.*label_field"):
        load_task(TaskConfig(path=str(path), label_field="y"))
    unseen = _write(tmp_path / "t.csv", [{"text": "a", "label": "weird", "other": 0}], "csv")
    with pytest.raises(PretuneError, match="labels never seen in training.*weird"):
        load_task(TaskConfig(path=str(path), test=str(unseen)))
    one = _write(tmp_path / "one.csv", _rows(20, ("only",)), "csv")
    with pytest.raises(PretuneError, match="single class"):
        load_task(TaskConfig(path=str(one)))
    empty = _write(tmp_path / "e.csv", [{"text": " ", "label": "a"}] * 3, "csv")
    with pytest.raises(PretuneError, match="every row has an empty 'text'"):
        load_task(TaskConfig(path=str(empty)))
    with pytest.raises(PretuneError, match="cannot tell the format"):
        load_task(TaskConfig(path=str(_write(tmp_path / "d.dat", _rows(), "csv"))))
    with pytest.raises(PretuneError, match="not found"):
        load_task(TaskConfig(path=str(tmp_path / "missing.csv")))
    (tmp_path / "latin.csv").write_bytes(b"text,label\ncaf\xe9,a\nb,b\n")
    with pytest.raises(PretuneError, match="not utf-8 text.*set task.encoding=cp1252"):
        load_task(TaskConfig(path=str(tmp_path / "latin.csv")))
    with pytest.raises(PretuneError, match="budget=9999 is larger"):
        load_task(TaskConfig(path=str(path), budget=9999))


def test_empty_text_rows_are_dropped_with_a_warning(tmp_path):
    rows = _rows(60) + [{"text": "", "label": "pos", "other": 0}] * 4
    path = _write(tmp_path / "d.csv", rows, "csv")
    with pytest.warns(UserWarning, match="dropped 4 rows with an empty 'text'"):
        task = load_task(TaskConfig(path=str(path), test_size=12))
    assert len(task.train) + len(task.val) + len(task.test) == 60


def test_a_class_with_one_example_stays_in_training(tmp_path, capsys):
    rows = _rows(40, ("a", "b")) + [{"text": "the only c", "label": "c", "other": 0}]
    task = load_task(TaskConfig(path=str(_write(tmp_path / "s.csv", rows, "csv"))))
    c = task.labels.index("c")
    assert task.train.labels.count(c) == 1 and c not in task.val.labels + task.test.labels
    assert "single example (c): kept in training" in capsys.readouterr().err
    # the other classes are still stratified: test holds a and b evenly
    counts = Counter(task.test.labels)
    assert set(counts) == {task.labels.index("a"), task.labels.index("b")}
    assert max(counts.values()) - min(counts.values()) <= 1


def test_tasks_too_small_to_split_are_refused_with_counts(tmp_path):
    two = _write(tmp_path / "two.csv", _rows(2, ("a", "b")), "csv")
    with pytest.raises(PretuneError, match="2 labeled rows are too few to hold out"):
        load_task(TaskConfig(path=str(two)))
    three = _write(tmp_path / "three.csv", _rows(3, ("a", "b")), "csv")
    with pytest.raises(PretuneError, match="3 labeled rows|too few to hold out 1 for validation"):
        load_task(TaskConfig(path=str(three)))
