"""Study phases: the loop's metrics.jsonl becomes the report's loss curve points."""

from __future__ import annotations

import json

from pretune.study.phases import loop_history


def test_loop_history_maps_train_and_eval_records(tmp_path):
    records = [
        {"kind": "train", "step": 10, "epoch": 0, "tokens": 640, "loss": 2.5, "lr": 1e-3},
        {"kind": "eval", "step": 10, "tokens": 640, "val_loss": 2.7, "accuracy": 0.3},
        {"kind": "train", "step": 20, "epoch": 0, "tokens": 1280, "loss": 2.0},
        {"kind": "eval", "step": 20, "tokens": 1280, "knn_accuracy": 0.5},  # no loss: skipped
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    assert loop_history(path) == [
        {"step": 10, "tokens": 640, "train_loss": 2.5},
        {"step": 10, "tokens": 640, "val_loss": 2.7},
        {"step": 20, "tokens": 1280, "train_loss": 2.0},
    ]
    assert loop_history(tmp_path / "missing.jsonl") == []
