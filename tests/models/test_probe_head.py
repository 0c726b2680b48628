"""The exported scikit-learn probe head reproduces scikit-learn's own probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pretune.finetune.probe import fit_sklearn_probe
from pretune.models.probe_head import head_arrays


def _apply(arrays, x, kind):
    z = (x - arrays["mean"]) / arrays["scale"]
    logits = torch.as_tensor(z @ arrays["weight"].T + arrays["bias"])
    if kind == "single_label":
        return logits.softmax(-1).numpy()
    return logits.sigmoid().numpy() if kind == "multi_label" else logits.numpy().reshape(-1)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_single_label_heads_match_predict_proba(n_classes):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = list(rng.integers(0, n_classes, 60))
    est = fit_sklearn_probe(x, y, x[:0], [], "single_label", [str(i) for i in range(n_classes)])
    got = _apply(head_arrays(est, "single_label", n_classes), x, "single_label")
    assert np.allclose(got, est.predict_proba(x), atol=1e-5)


def test_a_class_absent_from_training_gets_no_probability():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    y = [0, 2] * 15  # class 1 never seen
    est = fit_sklearn_probe(x, y, x[:0], [], "single_label", ["a", "b", "c"])
    got = _apply(head_arrays(est, "single_label", 3), x, "single_label")
    assert np.allclose(got[:, 1], 0, atol=1e-6)
    assert np.allclose(got[:, [0, 2]], est.predict_proba(x), atol=1e-5)


def test_multi_label_and_regression_heads():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    hot = (rng.random((50, 3)) > 0.5).astype(int)
    est = fit_sklearn_probe(x, hot.tolist(), x[:0], [], "multi_label", ["a", "b", "c"])
    got = _apply(head_arrays(est, "multi_label", 3), x, "multi_label")
    assert np.allclose(got, est.predict_proba(x), atol=1e-5)
    y = list(x @ np.array([1.0, -2.0, 0.5, 0.0]) + 3)
    est = fit_sklearn_probe(x, y, x[:0], [], "regression", [])
    assert np.allclose(_apply(head_arrays(est, "regression", 1), x, "regression"),
                       est.predict(x), atol=1e-4)
