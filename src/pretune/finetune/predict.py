"""``pretune evaluate`` / ``pretune predict`` on a saved fine-tuned model directory, any kind.

The directory is a plain Hugging Face checkpoint; the kind that wrote it (its
``pretune_task.json`` / ``pretune_image.json``, else its architecture) says how to read inputs:
which columns hold the text and how long inputs may be, or the image size, channels and
border. Without those files (a model saved by other tools) the kind's defaults apply.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from pretune.config import format_validation_error
from pretune.errors import PretuneError
from pretune.evaluate import threshold
from pretune.evaluate.metrics import format_table
from pretune.models.overrides import quiet_transformers
from pretune.models.start import weight_keys
from pretune.tasks import kind_of_model_dir
from pretune.tasks.base import Saved, TaskKind, read_info
from pretune.train.runtime import resolve_device


def check_output(out: Path, input: str | None, overwrite: bool) -> Path:
    """An output file that loses nothing: never the input, never a directory, and an existing
    file only with ``--overwrite``."""
    if out.is_dir():
        raise PretuneError(f"-o {out} is a directory; give a file path (e.g. "
                           f"{out / 'predictions.csv'})")
    if input not in (None, "-") and Path(input).exists() and out.exists() \
            and out.resolve() == Path(input).resolve():
        raise PretuneError(f"-o {out} is the input file; choose another output path")
    if out.exists() and not overwrite:
        raise PretuneError(f"{out} already exists; pass --overwrite to replace it or choose "
                           "another -o")
    return out


@contextlib.contextmanager
def _overrides_checked(overrides: list[str]) -> Iterator[None]:
    """Bad ``key=value`` settings of evaluate / predict are one line, like a config's."""
    try:
        yield
    except ValidationError as e:
        raise PretuneError(format_validation_error(e, f"overrides {' '.join(overrides)}")) \
            from None


def open_model_dir(model_dir: str | Path) -> tuple[TaskKind, Saved]:
    path = Path(model_dir)
    kind = kind_of_model_dir(path)
    weight_keys(path, "model dir")  # safetensors only, readable: else one line with the fix
    info = read_info(path)
    with quiet_transformers():  # no per-load report / progress bar
        if kind.name == "text-classification" and info.get("prompt"):  # a prompt run's LM
            from pretune.finetune.prompt import open_prompt

            return kind, open_prompt(path, info)
        return kind, kind.open_saved(path)


def evaluate(model_dir: str, data: str, overrides: list[str] = ()) -> dict[str, Any]:
    """Metrics of ``model_dir`` on a labeled file / folder (all of it) or a builtin task's test
    split; writes ``<model_dir>/eval-<data name>.json`` and prints the table."""
    kind, saved = open_model_dir(model_dir)
    with _overrides_checked(overrides):
        split, inputs, name = kind.read_labeled(saved, data, list(overrides))
    device = resolve_device("auto")
    saved.model.to(device)
    with torch.no_grad():
        outputs = kind.outputs(saved.model, inputs, saved.task, kind.infer_batch_size,
                               device)
    metrics = kind.metrics(saved.task, split, outputs)
    cut = saved.info.get("threshold")
    if cut is not None:  # a tuned binary threshold: its metrics beside the 0.5 ones
        pos = saved.task.labels.index(saved.info["positive"])
        tuned = kind.metrics(saved.task, split, threshold.apply(outputs, pos, cut))
        metrics.update(threshold.tuned_metrics(tuned, cut, saved.info["positive"]))
    out = Path(model_dir) / f"eval-{name}.json"
    out.write_text(json.dumps({"data": data, "examples": len(split), "metrics": metrics},
                              indent=2, default=float))
    print(f"{data}: {len(split)} {kind.example_word}")
    print(format_table(metrics))
    return metrics


def predict(model_dir: str, input: str, output: str = "predictions.csv",
            overrides: list[str] = (), overwrite: bool = False) -> Path:
    """Write ``output``: what the model predicts for every row / image of ``input``
    (classification: ``pred`` + ``prob_<label>`` columns)."""
    out = check_output(Path(output), input, overwrite)
    kind, saved = open_model_dir(model_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _overrides_checked(overrides):
        n = kind.predict(saved, input, out, list(overrides), resolve_device("auto"))
    print(f"wrote {n} predictions to {out}")
    return out
