"""``pretune evaluate`` / ``pretune predict`` on a saved fine-tuned model directory, any kind.

The directory is a plain Hugging Face checkpoint; the kind that wrote it (its
``pretune_task.json`` / ``pretune_image.json``, else its architecture) says how to read inputs:
which columns hold the text and how long inputs may be, or the image size, channels and
border. Without those files (a model saved by other tools) the kind's defaults apply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pretune.errors import PretuneError
from pretune.evaluate.metrics import format_table
from pretune.models.overrides import quiet_transformers
from pretune.tasks import kind_of_model_dir
from pretune.tasks.base import Saved, TaskKind
from pretune.train.runtime import resolve_device


def open_model_dir(model_dir: str | Path) -> tuple[TaskKind, Saved]:
    path = Path(model_dir)
    kind = kind_of_model_dir(path)
    if not any(path.glob("*.safetensors")):
        raise PretuneError(f"{path} has no .safetensors weights")
    with quiet_transformers():  # no per-load report / progress bar
        return kind, kind.open_saved(path)


def evaluate(model_dir: str, data: str, overrides: list[str] = ()) -> dict[str, Any]:
    """Metrics of ``model_dir`` on a labeled file / folder (all of it) or a builtin task's test
    split; writes ``<model_dir>/eval-<data name>.json`` and prints the table."""
    kind, saved = open_model_dir(model_dir)
    split, inputs, name = kind.read_labeled(saved, data, list(overrides))
    device = resolve_device("auto")
    saved.model.to(device)
    with torch.no_grad():
        outputs = kind.outputs(saved.model, inputs, saved.task, kind.infer_batch_size,
                               device)
    metrics = kind.metrics(saved.task, split, outputs)
    out = Path(model_dir) / f"eval-{name}.json"
    out.write_text(json.dumps({"data": data, "examples": len(split), "metrics": metrics},
                              indent=2, default=float))
    print(f"{data}: {len(split)} {kind.example_word}")
    print(format_table(metrics))
    return metrics


def predict(model_dir: str, input: str, output: str = "predictions.csv",
            overrides: list[str] = ()) -> Path:
    """Write ``output``: what the model predicts for every row / image of ``input``
    (classification: ``pred`` + ``prob_<label>`` columns)."""
    kind, saved = open_model_dir(model_dir)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = kind.predict(saved, input, out, list(overrides), resolve_device("auto"))
    print(f"wrote {n} predictions to {out}")
    return out
