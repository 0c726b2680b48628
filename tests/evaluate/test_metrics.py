"""Metrics against values computed by hand on tiny examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pretune.evaluate.metrics import (
    classification_metrics,
    default_metric,
    format_table,
    metric_mode,
    regression_metrics,
)


def test_binary_metrics_match_hand_computed_values():
    # y_true 1,1,0,0,1 ; predicted (argmax) 1,0,0,1,1 -> TP=2 FN=1 TN=1 FP=1
    y = [1, 1, 0, 0, 1]
    p1 = np.array([0.9, 0.4, 0.2, 0.6, 0.8])
    m = classification_metrics(y, np.stack([1 - p1, p1], 1), ["neg", "pos"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["per_class"]["pos"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["pos"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["neg"]["f1"] == pytest.approx(0.5)  # P=1/2, R=1/2
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert m["micro_f1"] == pytest.approx(3 / 5)
    assert m["weighted_f1"] == pytest.approx((3 * 2 / 3 + 2 * 0.5) / 5)
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    # AUC: positives {0.9,0.4,0.8} vs negatives {0.2,0.6}: pairs won 5 of 6
    assert m["roc_auc"] == pytest.approx(5 / 6)
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2-1)/sqrt(3*3*2*2)
    assert m["mcc"] == pytest.approx(1 / 6)


def test_multiclass_auc_and_missing_class_note():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2]])
    m = classification_metrics([0, 1, 2, 1], probs, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 4) and 0 <= m["roc_auc"] <= 1
    m2 = classification_metrics([0, 1, 1, 0], probs, ["a", "b", "c"])
    assert "roc_auc" not in m2 and "classes absent from y_true: c" in m2["notes"][0]
    assert m2["per_class"]["c"]["support"] == 0


def test_multilabel_metrics():
    y = np.array([[1, 0], [1, 1], [0, 1]])
    probs = np.array([[0.9, 0.2], [0.8, 0.3], [0.1, 0.7]])  # predicts [1,0],[1,0],[0,1]
    m = classification_metrics(y, probs, ["x", "y"])
    assert m["subset_accuracy"] == pytest.approx(2 / 3)
    assert m["hamming_loss"] == pytest.approx(1 / 6)
    # label y: TP=1 FN=1 FP=0 -> F1 = 2/3 ; label x: perfect
    assert m["per_class"]["y"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1))  # TP=3 FP=0 FN=1
    assert m["roc_auc_micro"] == pytest.approx(1.0)


def test_regression_metrics():
    m = regression_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 4.0, 3.0])
    assert m["mse"] == pytest.approx(0.5) and m["mae"] == pytest.approx(0.5)
    assert m["r2"] == pytest.approx(1 - 2 / 5)  # SS_res 2, SS_tot 5
    assert m["pearson"] == pytest.approx(0.8) and m["spearman"] == pytest.approx(0.8)
    flat = regression_metrics([1.0, 2.0], [3.0, 3.0])
    assert math.isnan(flat["pearson"]) and flat["notes"]


def test_defaults_and_table():
    assert default_metric("single_label") == "macro_f1" and default_metric("regression") == "r2"
    assert metric_mode("mse") == "min" and metric_mode("macro_f1") == "max"
    probs = np.array([[0.8, 0.2], [0.3, 0.7]])
    table = format_table(classification_metrics([0, 1], probs, ["neg", "pos"]))
    assert "macro_f1" in table and "pos" in table and "confusion matrix" in table
