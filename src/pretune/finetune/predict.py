"""``pretune evaluate`` / ``pretune predict`` on a saved fine-tuned model directory.

The directory is a plain Hugging Face sequence-classification checkpoint; ``pretune_task.json``
(written by ``finetune``) says which columns hold the text and how long inputs may be. Without
it (a classifier saved by other tools) the defaults ``text``/``label`` and 512 tokens apply.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretune.config import TaskConfig, apply_overrides
from pretune.data.builtin import is_builtin
from pretune.data.labeled import read_rows, read_split, task_name
from pretune.errors import PretuneError
from pretune.evaluate.metrics import format_table, task_metrics
from pretune.finetune.batches import encode, model_outputs
from pretune.finetune.run import PROBLEM_TYPES, TASK_FILE, resolve_device

_TYPES = {v: k for k, v in PROBLEM_TYPES.items()}
_TASK_KEYS = ("text_field", "text_pair_field", "label_field", "label_sep", "max_length")


def load_classifier(model_dir: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, info) of a sequence-classification dir; PretuneError otherwise."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    d = Path(model_dir)
    if not (d / "config.json").is_file():
        raise PretuneError(
            f"{d} is not a model directory (no config.json); pass runs/<name>/model of a "
            "finetune run"
        )
    info = json.loads((d / TASK_FILE).read_text()) if (d / TASK_FILE).is_file() else {}
    config = AutoConfig.from_pretrained(d)
    archs = config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise PretuneError(
            f"{d} holds a {', '.join(archs) or config.model_type} model, not a sequence "
            "classifier; evaluate/predict need the model dir of a finetune run (prompt few-shot "
            "and linear-probe sklearn runs save none)"
        )
    if not any(d.glob("*.safetensors")):
        raise PretuneError(f"{d} has no .safetensors weights")
    model = AutoModelForSequenceClassification.from_pretrained(d, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(d)
    kind = _TYPES.get(config.problem_type or "", "single_label")
    labels = [] if kind == "regression" else [config.id2label[i] for i in range(config.num_labels)]
    info = {"type": kind, "labels": labels, "max_length": 512, **info}
    return model, tokenizer, info


def _task_config(info: dict[str, Any], data: str, overrides: list[str]) -> TaskConfig:
    base = {k: info[k] for k in _TASK_KEYS if info.get(k) is not None}
    # The model's own split settings, so `evaluate model builtin:x` scores the same test split.
    split_keys = ("split_seed", "test_fraction", "test_size", "val_fraction")
    base.update({k: v for k, v in (info.get("task_config") or {}).items() if k in split_keys})
    base["path"] = data
    items = [o.removeprefix("task.") for o in overrides]
    return TaskConfig.model_validate(apply_overrides(base, items))


def _outputs(model: Any, tokenizer: Any, texts: list[str], pairs: list[str] | None,
             kind: str, max_length: int) -> np.ndarray:
    device = resolve_device("auto")
    model.to(device)
    enc = encode(tokenizer, texts, pairs, max_length)
    return model_outputs(model, enc, kind, 64, device)


def evaluate(model_dir: str, data: str, overrides: list[str] = ()) -> dict[str, Any]:
    """Metrics of ``model_dir`` on a labeled file (all rows) or a builtin task's test split;
    writes ``<model_dir>/eval-<data name>.json`` and prints the table."""
    model, tokenizer, info = load_classifier(model_dir)
    cfg = _task_config(info, data, list(overrides))
    split = read_split(data, cfg, info["type"], info["labels"])
    with torch.no_grad():
        outputs = _outputs(model, tokenizer, split.texts, split.pairs, info["type"],
                           cfg.max_length)
    metrics = task_metrics(info["type"], split.labels, outputs, info["labels"])
    name = task_name(cfg)
    out = Path(model_dir) / f"eval-{name}.json"
    out.write_text(json.dumps({"data": data, "examples": len(split), "metrics": metrics},
                              indent=2, default=float))
    print(f"{data}: {len(split)} examples")
    print(format_table(metrics))
    return metrics


def predict(model_dir: str, input: str, output: str = "predictions.csv",
            overrides: list[str] = ()) -> Path:
    """Write ``output`` (CSV): the input columns + ``pred`` + ``prob_<label>`` per label
    (regression: ``pred`` only)."""
    if is_builtin(input):
        raise PretuneError(f"predict reads a CSV/JSONL/parquet file, not {input}")
    model, tokenizer, info = load_classifier(model_dir)
    cfg = _task_config(info, input, list(overrides))
    rows, cols = read_rows(input, cfg.format)
    for fld, key in ((cfg.text_field, "text_field"), (cfg.text_pair_field, "text_pair_field")):
        if fld is not None and fld not in cols:
            raise PretuneError(
                f"{input} has no column '{fld}' (columns: {', '.join(map(str, cols))}); "
                f"pass {key}=<column>"
            )
    texts = ["" if r.get(cfg.text_field) is None else str(r[cfg.text_field]) for r in rows]
    pairs = None
    if cfg.text_pair_field:
        pairs = ["" if r.get(cfg.text_pair_field) is None else str(r[cfg.text_pair_field])
                 for r in rows]
    outputs = _outputs(model, tokenizer, texts, pairs, info["type"], cfg.max_length)
    labels, kind = info["labels"], info["type"]
    extra_cols = ["pred"] + ([] if kind == "regression" else [f"prob_{lab}" for lab in labels])
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*cols, *extra_cols])
        for row, o in zip(rows, outputs, strict=True):
            if kind == "regression":
                pred: Any = float(o)
            elif kind == "multi_label":
                pred = cfg.label_sep.join(lab for lab, p in zip(labels, o, strict=True) if p >= 0.5)
            else:
                pred = labels[int(np.argmax(o))]
            probs = [] if kind == "regression" else [f"{p:.6f}" for p in o]
            writer.writerow([_cell(row.get(c)) for c in cols] + [pred, *probs])
    print(f"wrote {len(rows)} predictions to {out}")
    return out


def _cell(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, list | dict) else ("" if v is None else v)
