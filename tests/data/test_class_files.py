"""Labeled text with the label in a file or folder name: one file per class (a list or a
glob), a folder of class folders; plain text for predict; budget=all; encodings."""

from __future__ import annotations

import pytest

from pretune.config import FinetuneConfig, TaskConfig
from pretune.config.tasks import infer_kind
from pretune.data.labeled import load_task, task_name
from pretune.data.rows import read_rows
from pretune.errors import PretuneError

POS = ["a wonderful, moving film", "great acting and a clever plot", "I loved every minute",
       "a delight from start to finish", "funny, warm and smart", "the best film this year"]
NEG = ["a dull, lifeless mess", "boring and far too long", "I want those hours back",
       "the plot makes no sense", "flat jokes and wooden acting", "the worst film this year"]


def _files(root, encoding="utf-8"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "pos.txt").write_text("\n".join(POS * 3) + "\n\n", encoding=encoding)
    (root / "neg.txt").write_text("\n".join(NEG * 3), encoding=encoding)
    return root


def test_one_text_file_per_class_as_a_list_or_a_glob(tmp_path):
    root = _files(tmp_path / "reviews")
    by_list = TaskConfig(path=[str(root / "pos.txt"), str(root / "neg.txt")], test_size=6,
                         val_fraction=0.2)
    task = load_task(by_list)
    assert task.labels == ["neg", "pos"] and task_name(by_list) == "reviews"
    assert len(task.train) + len(task.val) + len(task.test) == 36
    by_glob = by_list.model_copy(update={"path": str(root / "*.txt")})
    assert load_task(by_glob).test.texts == task.test.texts  # the same rows, the same split
    assert infer_kind({"path": [str(root / "pos.txt")]}) == "text-classification"
    ft = FinetuneConfig.model_validate({"task": {"path": [str(root / "pos.txt"),
                                                          str(root / "neg.txt")]}})
    assert ft.task.kind == "text-classification"


def test_a_folder_of_class_folders(tmp_path):
    root = tmp_path / "imdb"
    for label, texts in (("pos", POS), ("neg", NEG)):
        (root / label).mkdir(parents=True)
        for i, t in enumerate(texts * 2):
            (root / label / f"{i}.txt").write_text(t + "\n")
    assert infer_kind({"path": str(root)}) == "text-classification"  # not images
    task = load_task(TaskConfig(path=str(root), test_size=6, val_fraction=0.2))
    assert task.labels == ["neg", "pos"] and task.name == "imdb"
    assert sorted(task.train.texts + task.val.texts + task.test.texts) == sorted(POS * 2 + NEG * 2)


def test_class_file_errors_are_one_line(tmp_path):
    root = _files(tmp_path / "r")
    with pytest.raises(PretuneError, match="matches no file"):
        load_task(TaskConfig(path=str(root / "*.csv")))
    with pytest.raises(PretuneError, match="one class"):
        load_task(TaskConfig(path=[str(root / "pos.txt")]))
    latin = _files(tmp_path / "latin", encoding="latin-1")
    (latin / "pos.txt").write_text("\n".join(["très bon film, émouvant"] * 18), encoding="latin-1")
    with pytest.raises(PretuneError, match="set task.encoding="):
        load_task(TaskConfig(path=str(latin / "*.txt"), test_size=6))
    task = load_task(TaskConfig(path=str(latin / "*.txt"), test_size=6, encoding="latin-1"))
    assert any("très" in t for t in task.train.texts + task.test.texts)


def test_plain_text_rows(tmp_path):
    p = tmp_path / "new.txt"
    p.write_text("first review\n\nsecond one\n")
    assert read_rows(p) == ([{"text": "first review"}, {"text": "second one"}], ["text"])


def test_budget_all():
    assert TaskConfig(budget="all").budget is None
    assert FinetuneConfig.model_validate({"task": {"budget": "ALL"}}).task.budget is None
