"""k-fold CV: fold membership and stratification on a hand-made task, errors, and a real
cross_validate run (scikit-learn probe on a tiny BERT) whose mean is the mean of its folds."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from pretune.config import StrategyConfig
from pretune.data.labeled import LabeledTask, Split
from pretune.errors import PretuneError
from pretune.sweep.kfold import cross_validate, fold_indices, make_folds
from pretune.tasks import KINDS

TEXT = KINDS["text-classification"]


def pool(task):
    return TEXT.pool(task)


def hand_task() -> LabeledTask:
    """18 pool examples: class a (id 0) x12, class b (id 1) x6; 15 in train, 3 in val."""
    train_labels = [0] * 10 + [1] * 5
    val_labels = [0, 0, 1]
    train = Split([f"tr{i}-{'ab'[y]}" for i, y in enumerate(train_labels)], train_labels)
    val = Split([f"va{i}-{'ab'[y]}" for i, y in enumerate(val_labels)], val_labels)
    test = Split(["te0-a", "te1-b"], [0, 1])
    return LabeledTask(name="hand", type="single_label", labels=["a", "b"], train=train,
                       val=val, test=test, majority_baseline=0.5, budget=15)


def test_folds_are_disjoint_stratified_and_train_on_the_rest():
    task = hand_task()
    folds = make_folds(TEXT, task, 3, seed=0)
    assert len(folds) == 3
    everything = set(pool(task).texts)
    held_out = [set(f.val.texts) for f in folds]
    assert set().union(*held_out) == everything and sum(map(len, held_out)) == 18  # disjoint
    for f, held in zip(folds, held_out, strict=True):
        assert Counter(f.val.labels) == {0: 4, 1: 2}  # 12/3 a and 6/3 b in every fold
        assert set(f.train.texts) == everything - held and len(f.train) == 12
        # labels travel with their texts
        assert all(t.endswith("ab"[y]) for t, y in zip(f.train.texts, f.train.labels, strict=True))
        assert f.test.texts == task.test.texts and f.budget == 15 and f.labels == ["a", "b"]
    again = [sorted(f.val.texts) for f in make_folds(TEXT, task, 3, seed=0)]
    assert again == [sorted(h) for h in held_out]  # folds depend only on the seed
    assert again != [sorted(f.val.texts) for f in make_folds(TEXT, task, 3, seed=1)]


def test_k_larger_than_smallest_class_names_the_class():
    with pytest.raises(PretuneError, match="larger than class 'b', which has only 6"):
        make_folds(TEXT, hand_task(), 7)
    with pytest.raises(PretuneError, match="k >= 2"):
        fold_indices([0, 1, 0, 1], "single_label", 1)


def test_regression_and_multilabel_use_plain_kfold():
    folds = fold_indices(list(np.linspace(0, 1, 10)), "regression", 3, seed=0)
    assert sorted(len(f) for f in folds) == [3, 3, 4]
    assert sorted(np.concatenate(folds).tolist()) == list(range(10))
    assert len(fold_indices([[1.0, 0.0]] * 5, "multi_label", 5)) == 5
    with pytest.raises(PretuneError, match="larger than the 4 examples"):
        fold_indices([0.1, 0.2, 0.3, 0.4], "regression", 5)


def test_pool_keeps_text_pairs():
    task = hand_task()
    task.train.pairs = [f"p{i}" for i in range(15)]
    task.val.pairs = ["q0", "q1", "q2"]
    merged = pool(task)
    assert merged.pairs[-1] == "q2" and len(merged.pairs) == len(merged) == 18


def test_cross_validate_mean_is_the_mean_of_saved_fold_scores(base_cfg, tmp_path):
    cfg = base_cfg.model_copy(update={"strategy": StrategyConfig(name="linear-probe",
                                                                  sklearn=True)})
    out = tmp_path / "cv"
    seen: list[tuple[int, float]] = []
    res = cross_validate(cfg, 3, out_dir=out, on_fold=lambda i, s: seen.append((i, s)))
    assert res.metric == "macro_f1" and len(res.fold_scores) == 3
    assert [i for i, _ in seen] == [0, 1, 2] and [s for _, s in seen] == res.fold_scores
    on_disk = [json.loads((out / f"fold-{i}" / "metrics.json").read_text())["val"]["macro_f1"]
               for i in range(3)]
    assert on_disk == pytest.approx(res.fold_scores)
    assert res.mean == pytest.approx(np.mean(on_disk))
    assert res.std == pytest.approx(np.std(on_disk, ddof=1))
    assert res.mean_metrics["macro_f1"] == pytest.approx(res.mean)
    saved = json.loads((out / "cv.json").read_text())
    assert saved["mean"] == pytest.approx(res.mean) and len(saved["folds"]) == 3
    # 160 train+val rows: every row is held out once, classes spread evenly over folds
    counts = [f["val_class_counts"] for f in saved["folds"]]
    assert sum(f["val_examples"] for f in saved["folds"]) == 160
    for label in counts[0]:
        per_fold = [c[label] for c in counts]
        assert max(per_fold) - min(per_fold) <= 1
    with pytest.raises(PretuneError, match="already exists"):
        cross_validate(cfg, 3, out_dir=out)
