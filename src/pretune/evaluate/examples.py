"""Per-example predictions: what a run answered on each test example, kept for error analysis.

Every fine-tuning run writes ``predictions.jsonl`` beside ``metrics.json``: one line per test
example, ``{"id", "text", "true", "pred", "p", "score"}``. ``id`` is the example's row in its
source file where the task knows it (else its position in the test split), ``text`` what a
reader recognises it by (cut to 300 characters), ``p`` the model's confidence in ``pred``
(classification), and ``score`` the per-example result on a higher-is-better scale: 1 / 0 for
right / wrong (classification, an exactly right entity set), ROUGE-L for generation, minus
the absolute error for regression. The study report compares two starts through ``score``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PREDICTIONS = "predictions.jsonl"
TEXT_CHARS = 300


def cut(text: str, n: int = TEXT_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def label_records(texts: Sequence[str], y_true: Sequence[Any], outputs: np.ndarray,
                  labels: list[str], task_type: str) -> list[dict[str, Any]]:
    """Records of a classification (or regression) split from its outputs: probabilities
    (N, C) for single- and multi-label tasks, values (N,) or (N, 1) for regression."""
    out = np.asarray(outputs, dtype=float)
    recs: list[dict[str, Any]] = []
    for i, text in enumerate(texts):
        if task_type == "regression":
            pred, true = float(out.reshape(len(texts), -1)[i, 0]), float(y_true[i])
            recs.append({"text": cut(text), "true": true, "pred": round(pred, 6), "p": None,
                         "score": -abs(pred - true)})
        elif task_type == "multi_label":
            on = [labels[j] for j in np.flatnonzero(out[i] >= 0.5)]
            gold = [labels[j] for j, v in enumerate(y_true[i]) if float(v) >= 0.5]
            recs.append({"text": cut(text), "true": "|".join(gold), "pred": "|".join(on),
                         "p": None, "score": float(on == gold)})
        else:
            j = int(np.argmax(out[i]))
            recs.append({"text": cut(text), "true": labels[int(y_true[i])], "pred": labels[j],
                         "p": round(float(out[i, j]), 4), "score": float(j == int(y_true[i]))})
    return recs


def majority_outputs(task_type: str, train_labels: Sequence[Any], n_labels: int, n: int
                     ) -> tuple[str, np.ndarray]:
    """(name, outputs for n test examples) of the trivial classifier: the most frequent
    training class (each label's majority for multi-label, the training mean for regression)."""
    if task_type == "regression":
        return "training mean", np.full(n, float(np.mean(np.asarray(train_labels, dtype=float))))
    if task_type == "multi_label":
        on = (np.asarray(train_labels, dtype=float).mean(axis=0) >= 0.5).astype(float)
        return "majority label set", np.tile(on, (n, 1))
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=n_labels)
    hot = np.zeros((n, n_labels))
    hot[:, int(np.argmax(counts))] = 1.0
    return "majority class", hot


def bio_entities(tokens: Sequence[str], tags: Sequence[str], joiner: str = " ") -> list[str]:
    """``["Obama/PER", ...]`` of a BIO tag sequence (an I- without its B- starts an entity)."""
    ents: list[str] = []
    start, kind = None, None
    for i, tag in enumerate([*tags, "O"]):
        inside = tag.startswith("I-") and kind == tag[2:]
        if start is not None and not inside:
            ents.append(f"{joiner.join(tokens[start:i])}/{kind}")
            start, kind = None, None
        if tag != "O" and not inside:
            start, kind = i, tag[2:]
    return ents


def write_predictions(path: Path, records: list[dict[str, Any]],
                      ids: Sequence[int] | None = None) -> Path:
    """``records`` (a kind's ``example_records``) as JSON lines, each with its ``id``."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for i, rec in enumerate(records):
            row = {"id": int(ids[i]) if ids is not None and i < len(ids) else i, **rec}
            if isinstance(row.get("score"), float):
                row["score"] = round(row["score"], 6)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_predictions(path: Path) -> list[dict[str, Any]] | None:
    """The records of a ``predictions.jsonl`` (None when the run saved none)."""
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
