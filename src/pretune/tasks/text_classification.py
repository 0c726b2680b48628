"""Text classification: single-label, multi-label and regression, on texts or text pairs.

Reading and splitting live in ``pretune.data.labeled``, batching in ``pretune.data.batches``;
this module is what the kind adds: an ``AutoModelForSequenceClassification`` head, CE / BCE /
MSE losses (with optional class weights), softmax / sigmoid / value outputs, scikit-learn
metrics, the saved directory (weights + tokenizer + ``pretune_task.json``), and ``predict``'s
CSV with ``pred`` and ``prob_<label>`` columns.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from pretune.config import FinetuneConfig, TaskConfig, apply_overrides
from pretune.data.batches import Encoded, LabeledBatches, encode, sorted_batches
from pretune.data.builtin import is_builtin
from pretune.data.labeled import (
    LabeledTask,
    Split,
    apply_budget,
    load_task,
    majority_baseline,
    read_split,
    task_name,
)
from pretune.data.rows import read_rows
from pretune.data.split_ids import scored_rows
from pretune.errors import PretuneError
from pretune.evaluate.examples import label_records, majority_outputs
from pretune.evaluate.metrics import default_metric, task_metrics
from pretune.models.backbone import Backbone, unwrap
from pretune.models.probe_head import load_probe, save_probe_head
from pretune.models.registry import load_model, load_tokenizer_for
from pretune.models.start import Start
from pretune.tasks.base import TASK_FILE, Loaded, Saved, TaskKind, read_info

PROBLEM_TYPES = {"single_label": "single_label_classification",
                 "multi_label": "multi_label_classification", "regression": "regression"}
_TYPES = {v: k for k, v in PROBLEM_TYPES.items()}
_TASK_KEYS = ("text_field", "text_pair_field", "label_field", "label_sep", "max_length")


def class_weights(task: LabeledTask) -> torch.Tensor | None:
    """Inverse frequency (single-label) or neg/pos ratio (multi-label), from the train split."""
    if task.type == "regression":
        return None
    y = np.asarray(task.train.labels)
    if task.type == "single_label":
        counts = np.bincount(y, minlength=len(task.labels)).astype(float)
        return torch.tensor(len(y) / (len(task.labels) * np.clip(counts, 1, None)),
                            dtype=torch.float32)
    pos = y.sum(axis=0)
    return torch.tensor((len(y) - pos) / np.clip(pos, 1, None), dtype=torch.float32)


@torch.no_grad()
def model_outputs(model: nn.Module, enc: Encoded, task_type: str, batch_size: int = 64,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """Probabilities (N, C) (softmax / sigmoid) or regression values (N,), in input order.

    Results are accumulated on the CPU so evaluation memory does not grow on the device."""
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    for idx, batch in sorted_batches(enc, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(**batch).logits.float()  # (B, C)
        if task_type == "single_label":
            vals = logits.softmax(-1)
        elif task_type == "multi_label":
            vals = logits.sigmoid()
        else:
            vals = logits.reshape(-1)
        vals = vals.cpu().numpy()
        if out is None:
            out = np.zeros((len(enc), *vals.shape[1:]), dtype=np.float64)
        out[idx] = vals
    model.train(was_training)
    return out if out is not None else np.zeros((0,))


@torch.no_grad()
def extract_features(model: nn.Module, enc: Encoded, batch_size: int = 64,
                     device: str | torch.device = "cpu", pooling: str = "mean") -> np.ndarray:
    """Pooled backbone features (N, H) in input order, computed without gradients."""
    bb = Backbone(model)
    model.eval()
    feats = np.zeros((len(enc), bb.hidden_size), dtype=np.float32)
    for idx, batch in sorted_batches(enc, batch_size):
        h = bb.encode(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                      pooling=pooling)  # (B, H)
        feats[idx] = h.float().cpu().numpy()
    return feats


class TextClassification(TaskKind):
    name = "text-classification"
    modality = "text"
    pipeline_tag = "text-classification"
    auto_class = "AutoModelForSequenceClassification"
    peft_task_type: ClassVar[str] = "SEQ_CLS"

    # ------------------------------------------------------------------ data

    def load(self, cfg: FinetuneConfig, start: Start | None = None) -> LabeledTask:
        return load_task(cfg.task, seed=cfg.train.seed)

    def with_budget(self, task: LabeledTask, budget: int | None, seed: int) -> LabeledTask:
        return apply_budget(task, budget, seed)

    def pool(self, task: LabeledTask) -> Split:
        pairs = None
        if task.train.pairs is not None:
            pairs = list(task.train.pairs) + list(task.val.pairs or [""] * len(task.val))
        return Split(list(task.train.texts) + list(task.val.texts),
                     list(task.train.labels) + list(task.val.labels), pairs)

    def refold(self, task: LabeledTask, train: Split, val: Split, fold: int, k: int
               ) -> LabeledTask:
        return replace(task, train=train, val=val,
                       majority_baseline=majority_baseline(task.type, train, task.test),
                       info={**task.info, "fold": fold, "k": k})

    def fold_labels(self, split: Split) -> list[Any]:
        return list(split.labels)

    def default_metric(self, task: LabeledTask) -> str:
        return default_metric(task.type)

    def metrics(self, task: LabeledTask, split: Split, outputs: np.ndarray) -> dict[str, Any]:
        return task_metrics(task.type, split.labels, outputs, task.labels)

    def example_records(self, task: LabeledTask, split: Split, outputs: np.ndarray
                        ) -> list[dict[str, Any]]:
        texts = split.texts if split.pairs is None else \
            [f"{a} / {b}" for a, b in zip(split.texts, split.pairs, strict=True)]
        return label_records(texts, split.labels, outputs, task.labels, task.type)

    def trivial(self, task: LabeledTask) -> tuple[str, np.ndarray]:
        return majority_outputs(task.type, task.train.labels, len(task.labels), len(task.test))

    # ------------------------------------------------------------------ model

    def load_model(self, cfg: FinetuneConfig, task: LabeledTask, start: Start) -> Loaded:
        tokenizer = load_tokenizer_for(cfg.model, cfg.tokenizer, start=start)
        torch.manual_seed(cfg.train.seed)  # random heads / random-init starts depend on the seed
        id2label = {0: "value"} if task.type == "regression" else dict(enumerate(task.labels))
        model = load_model(cfg.model, "classify", tokenizer, start=start,
                           num_labels=task.num_labels, problem_type=PROBLEM_TYPES[task.type],
                           id2label=id2label)
        return Loaded(model, tokenizer)

    def notes(self, model: nn.Module, cfg: FinetuneConfig, start: Start) -> list[str]:
        # BERT's classifier reads [CLS] through a pooler (dense + tanh); an MLM-only checkpoint
        # never trained one, so a linear probe on it sees little signal.
        fresh_pooler = (getattr(unwrap(model).base_model, "pooler", None) is not None
                        and not start.random_init and not start.has_pooler)
        if cfg.strategy.name == "linear-probe" and fresh_pooler:
            return [f"{cfg.model.name} has no trained pooler (masked-LM pre-training), so this "
                    "linear probe's head reads the [CLS] token through a freshly initialised "
                    "pooler and sees little signal; strategy.sklearn=true probes mean-pooled "
                    "features instead"]
        return []

    def encode(self, tokenizer: Any, split: Split, task_cfg: TaskConfig) -> Encoded:
        return encode(tokenizer, split.texts, split.pairs, task_cfg.max_length)

    def train_batches(self, task: LabeledTask, tokenizer: Any, cfg: FinetuneConfig
                      ) -> LabeledBatches:
        mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None \
            else tokenizer.unk_token_id
        return LabeledBatches(self.encode(tokenizer, task.train, cfg.task), task.train.labels,
                              task.type, cfg.train.batch_size, seed=cfg.train.seed,
                              augment=cfg.augment, special_ids=set(tokenizer.all_special_ids),
                              mask_id=mask_id)

    def loss_fn(self, task: LabeledTask, cfg: FinetuneConfig) -> Any:
        """CE / BCE-with-logits / MSE on the task head."""
        weight = class_weights(task) if cfg.class_weights else None
        kind = task.type

        def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            logits = model(**inputs).logits.float()  # (B, C)
            labels = batch["labels"]
            w = weight.to(logits.device) if weight is not None else None
            if kind == "single_label":
                return nn.functional.cross_entropy(logits, labels, weight=w)
            if kind == "multi_label":
                return nn.functional.binary_cross_entropy_with_logits(logits, labels,
                                                                      pos_weight=w)
            return nn.functional.mse_loss(logits.reshape(-1), labels.reshape(-1))

        return loss_fn

    def outputs(self, model: nn.Module, inputs: Encoded, task: LabeledTask, batch_size: int,
                device: torch.device) -> np.ndarray:
        return model_outputs(model, inputs, task.type, batch_size, device)

    # ------------------------------------------------------------------ sklearn probe

    def load_encoder(self, cfg: FinetuneConfig, task: LabeledTask, start: Start) -> Loaded:
        tokenizer = load_tokenizer_for(cfg.model, cfg.tokenizer, start=start)
        torch.manual_seed(cfg.train.seed)  # random-init starts depend on the seed
        return Loaded(load_model(cfg.model, "base", tokenizer, start=start), tokenizer)

    def features(self, loaded: Loaded, split: Split, task_cfg: TaskConfig, batch_size: int,
                 device: torch.device) -> np.ndarray:
        enc = self.encode(loaded.processor, split, task_cfg)
        return extract_features(loaded.model, enc, batch_size, device)

    def feature_keys(self, split: Split) -> list[str]:
        pairs = split.pairs or [""] * len(split)
        return [f"{t}\x00{p}" for t, p in zip(split.texts, pairs, strict=True)]

    def probe_targets(self, task: LabeledTask, split: Split) -> tuple[list[Any], str]:
        return list(split.labels), task.type

    def probe_export(self, loaded: Loaded, head: dict[str, np.ndarray], cfg: FinetuneConfig,
                     task: LabeledTask, extra: dict[str, Any]
                     ) -> tuple[Callable[[Path], None], str, str]:
        """The frozen encoder (plain ``AutoModel``) + ``probe.safetensors``: BERT's classifier
        reads [CLS] through a pooler, the probe mean-pooled features (see probe_head)."""
        def export(path: Path) -> None:
            self.save(loaded.model.cpu(), loaded.processor, path, cfg, task, extra)
            save_probe_head(path, head)

        return export, "AutoModel", "feature-extraction"

    # ------------------------------------------------------------------ export

    def save(self, model: nn.Module, tokenizer: Any, path: Path, cfg: FinetuneConfig,
             task: LabeledTask, extra: dict[str, Any] | None = None) -> None:
        model.save_pretrained(path, safe_serialization=True)
        tokenizer.save_pretrained(path)
        t = cfg.task
        info = {"kind": self.name, "task": task.name, "type": task.type, "labels": task.labels,
                "text_field": t.text_field, "text_pair_field": t.text_pair_field,
                "label_field": t.label_field, "label_sep": t.label_sep,
                "max_length": t.max_length, "strategy": cfg.strategy.name,
                "start": cfg.model.name, "task_config": t.model_dump(mode="json"),
                **(extra or {})}
        (path / TASK_FILE).write_text(json.dumps(info, indent=2))

    def card_facts(self, cfg: FinetuneConfig, task: LabeledTask) -> list[tuple[str, Any]]:
        labels = ", ".join(task.labels[:20])
        return [("task", f"`{cfg.task.path}` ({task.type}, {len(task.labels)} labels: {labels})"),
                ("majority-class baseline accuracy", f"{task.majority_baseline:.4f}")]

    # ------------------------------------------------------------------ saved models

    def open_saved(self, path: Path) -> Saved:
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        info = read_info(path)
        if info.get("probe"):  # the scikit-learn probe: the encoder + its fitted head
            return self._open_probe(path, info)
        config = AutoConfig.from_pretrained(path)
        archs = config.architectures or []
        if not any(a.endswith("ForSequenceClassification") for a in archs):
            raise PretuneError(
                f"{path} holds a {', '.join(archs) or config.model_type} model, not a sequence "
                "classifier; evaluate/predict need the model dir of a finetune run")
        model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(path)
        kind = _TYPES.get(config.problem_type or "", "single_label")
        labels = [] if kind == "regression" else \
            [config.id2label[i] for i in range(config.num_labels)]
        info = {"type": kind, "labels": labels, "max_length": 512, **info}
        empty = Split([], [])
        task = LabeledTask(info.get("task", path.name), info["type"], info["labels"], empty,
                           empty, empty, float("nan"))
        return Saved(path, model, tokenizer, task, info)

    def _open_probe(self, path: Path, info: dict[str, Any]) -> Saved:
        from transformers import AutoTokenizer

        model = load_probe(path, info["probe"].get("pooling", "mean"))
        empty = Split([], [])
        task = LabeledTask(info.get("task", path.name), info["type"], info["labels"], empty,
                           empty, empty, float("nan"))
        return Saved(path, model, AutoTokenizer.from_pretrained(path), task, info)

    def _task_config(self, saved: Saved, data: str, overrides: list[str]) -> TaskConfig:
        info = saved.info
        base = {k: info[k] for k in _TASK_KEYS if info.get(k) is not None}
        # The model's own split settings, so `evaluate model builtin:x` scores the same test split.
        split_keys = ("split_seed", "test_fraction", "test_size", "val_fraction")
        base.update({k: v for k, v in (info.get("task_config") or {}).items() if k in split_keys})
        base["path"] = data
        items = [o.removeprefix("task.") for o in overrides]
        return TaskConfig.model_validate(apply_overrides(base, items))

    def read_labeled(self, saved: Saved, data: str, overrides: list[str]
                     ) -> tuple[Split, Encoded, str]:
        """The labeled rows to score. On the run's own source file: its test rows only (the
        others trained or validated it), unless ``rows=all``; on any other file, a warning
        with counts when scored rows are training rows of the run."""
        every = "rows=all" in overrides
        cfg = self._task_config(saved, data, [o for o in overrides
                                              if o.split("=", 1)[0] != "rows"])
        split = read_split(data, cfg, saved.task.type, saved.task.labels)
        split = scored_rows(saved.path, data, split, every)
        return split, self.encode(saved.processor, split, cfg), task_name(cfg)

    def predict(self, saved: Saved, input: str, output: Path, overrides: list[str],
                device: torch.device) -> int:
        """CSV: the input columns + ``pred`` + ``prob_<label>`` per label (regression: ``pred``)."""
        if is_builtin(input):
            raise PretuneError(f"predict reads a CSV/JSONL/parquet file, not {input}")
        cfg = self._task_config(saved, input, overrides)
        rows, cols = read_rows(input, cfg.format, cfg.encoding)
        for fld, key in ((cfg.text_field, "text_field"), (cfg.text_pair_field, "text_pair_field")):
            if fld is not None and fld not in cols:
                raise PretuneError(f"{input} has no column '{fld}' (columns: "
                                   f"{', '.join(map(str, cols))}); pass {key}=<column>")
        texts = ["" if r.get(cfg.text_field) is None else str(r[cfg.text_field]) for r in rows]
        pairs = None
        if cfg.text_pair_field:
            pairs = ["" if r.get(cfg.text_pair_field) is None else str(r[cfg.text_pair_field])
                     for r in rows]
        saved.model.to(device)
        outputs = model_outputs(saved.model, encode(saved.processor, texts, pairs, cfg.max_length),
                                saved.task.type, self.infer_batch_size, device)
        labels, kind = saved.task.labels, saved.task.type
        decide = outputs
        if saved.info.get("threshold") is not None and kind == "single_label":
            from pretune.evaluate.threshold import apply  # the tuned binary cut-off

            decide = apply(outputs, labels.index(saved.info["positive"]),
                           saved.info["threshold"])
        extra_cols = ["pred"] + ([] if kind == "regression" else [f"prob_{lab}" for lab in labels])
        with open(output, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow([*cols, *extra_cols])
            for row, o, d in zip(rows, outputs, decide, strict=True):
                if kind == "regression":
                    pred: Any = float(o)
                elif kind == "multi_label":
                    pred = cfg.label_sep.join(lab for lab, p in zip(labels, o, strict=True)
                                              if p >= 0.5)
                else:
                    pred = labels[int(np.argmax(d))]
                probs = [] if kind == "regression" else [f"{p:.6f}" for p in o]
                writer.writerow([_cell(row.get(c)) for c in cols] + [pred, *probs])
        return len(rows)


def _cell(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, list | dict) else ("" if v is None else v)
