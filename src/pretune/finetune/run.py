"""``pretune finetune``: adapt a starting model to a labeled task with one strategy.

Flow: task (splits + budget) -> start model + tokenizer -> strategy -> train with the one loop
(selection on val each epoch, best restored) or fit scikit-learn on frozen features, or score
prompts -> test metrics -> ``runs/<name>/metrics.json`` and (``save_model``) ``runs/<name>/model``,
a plain Hugging Face directory loadable by ``AutoModelForSequenceClassification``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pretune.config import FinetuneConfig
from pretune.data.labeled import LabeledTask, apply_budget, load_task
from pretune.errors import PretuneError
from pretune.evaluate.metrics import default_metric, format_table, metric_mode, task_metrics
from pretune.finetune.batches import LabeledBatches, encode, model_outputs

PROBLEM_TYPES = {"single_label": "single_label_classification",
                 "multi_label": "multi_label_classification", "regression": "regression"}


@dataclass
class FinetuneResult:
    metrics: dict[str, Any]  # test split
    val_metrics: dict[str, Any]
    out_dir: Path
    seconds: float
    train_examples: int
    trainable_params: int
    steps: int
    stopped_reason: str = ""  # from the loop: "interrupted" when SIGINT/SIGTERM cut training short


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PretuneError(f"train.device={name} but no CUDA GPU is visible; use device=cpu")
    return torch.device(name)


def selection_metric(cfg: FinetuneConfig, task_type: str) -> str:
    return default_metric(task_type) if cfg.metric == "auto" else cfg.metric


def _scalars(m: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in m.items() if isinstance(v, int | float)}


def _prepare_out(cfg: FinetuneConfig, overwrite: bool) -> Path:
    out = Path(cfg.output_dir) / cfg.name
    if out.exists():
        if not overwrite:
            raise PretuneError(f"{out} already exists; pass --overwrite or choose another name=")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def prepare_task(cfg: FinetuneConfig, task: LabeledTask | None) -> LabeledTask:
    """A pre-loaded task (from the study) gets this run's budget if it has none yet."""
    if task is None:
        return load_task(cfg.task, seed=cfg.train.seed)
    if task.budget is None and cfg.task.budget is not None:
        return apply_budget(task, cfg.task.budget, cfg.train.seed)
    return task


def loss_function(task: LabeledTask, class_weights: bool) -> Any:
    """loss_fn(model, batch) -> scalar loss: CE / BCE-with-logits / MSE on the task head."""
    weight = None
    if class_weights and task.type != "regression":
        # Inverse frequency (single-label) or neg/pos ratio (multi-label), from the train split.
        y = np.asarray(task.train.labels)
        if task.type == "single_label":
            counts = np.bincount(y, minlength=len(task.labels)).astype(float)
            weight = torch.tensor(len(y) / (len(task.labels) * np.clip(counts, 1, None)),
                                  dtype=torch.float32)
        else:
            pos = y.sum(axis=0)
            weight = torch.tensor((len(y) - pos) / np.clip(pos, 1, None), dtype=torch.float32)

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits.float()  # (B, C)
        labels = batch["labels"]
        w = weight.to(logits.device) if weight is not None else None
        if task.type == "single_label":
            return nn.functional.cross_entropy(logits, labels, weight=w)
        if task.type == "multi_label":
            return nn.functional.binary_cross_entropy_with_logits(logits, labels, pos_weight=w)
        return nn.functional.mse_loss(logits.reshape(-1), labels.reshape(-1))

    return loss_fn


def _evaluator(task: LabeledTask, tokenizer: Any, max_length: int, batch_size: int,
               device: torch.device) -> Any:
    if not len(task.val):
        return None
    enc = encode(tokenizer, task.val.texts, task.val.pairs, max_length)

    def evaluate(model: nn.Module) -> dict[str, float]:
        outputs = model_outputs(model, enc, task.type, batch_size, device)
        return _scalars(task_metrics(task.type, task.val.labels, outputs, task.labels))

    return evaluate


def _observed(evaluate: Callable[[nn.Module], dict[str, float]],
              hook: Callable[[int, dict[str, float]], None]) -> Callable[[nn.Module], dict[str, float]]:
    """Wrap the validation function so ``hook(i, metrics)`` sees every evaluation."""
    count = iter(range(1 << 62))

    def evaluate_and_report(model: nn.Module) -> dict[str, float]:
        metrics = evaluate(model)
        hook(next(count), metrics)
        return metrics

    return evaluate_and_report


def _start_key(cfg: FinetuneConfig) -> str:
    """Identity of the feature extractor for the shared feature cache."""
    from pretune.models.registry import resolve_start

    how, where = resolve_start(cfg.model.name)
    if how == "dir":
        stamp = (Path(where) / "config.json").stat().st_mtime
        return f"dir:{Path(where).resolve()}:{stamp}:{cfg.task.max_length}"
    # Random init: the weights depend on the seed, overrides and tokenizer.
    return f"arch:{where}:{sorted(cfg.model.overrides.items())}:{cfg.tokenizer}:" \
           f"{cfg.train.seed}:{cfg.task.max_length}"


def _features(model: nn.Module, tokenizer: Any, split: Any, cfg: FinetuneConfig,
              device: torch.device, cache: dict | None) -> np.ndarray:
    from pretune.finetune.strategies import extract_features

    store = cache.setdefault(_start_key(cfg), {}) if cache is not None else {}
    pairs = split.pairs or [""] * len(split)
    keys = [f"{t}\x00{p}" for t, p in zip(split.texts, pairs, strict=True)]
    todo = [i for i, k in enumerate(keys) if k not in store]
    if todo:
        sub = split.subset(todo)
        enc = encode(tokenizer, sub.texts, sub.pairs, cfg.task.max_length)
        feats = extract_features(model, enc, max(cfg.train.batch_size, 64), device)
        for i, f in zip(todo, feats, strict=True):
            store[keys[i]] = f
    return np.stack([store[k] for k in keys]) if keys else np.zeros((0, 1), np.float32)


def _load(cfg: FinetuneConfig, task: LabeledTask, kind: str) -> tuple[nn.Module, Any]:
    from pretune.models.registry import load_model, load_tokenizer_for

    tokenizer = load_tokenizer_for(cfg.model, cfg.tokenizer)
    torch.manual_seed(cfg.train.seed)  # random heads / random-init starts depend on the seed
    if kind != "classify":
        return load_model(cfg.model, kind, tokenizer), tokenizer
    id2label = ({0: "value"} if task.type == "regression"
                else dict(enumerate(task.labels)))
    model = load_model(cfg.model, "classify", tokenizer, num_labels=task.num_labels,
                       problem_type=PROBLEM_TYPES[task.type], id2label=id2label)
    return model, tokenizer


def _fresh_pooler(model: nn.Module, cfg: FinetuneConfig) -> bool:
    """True when the classifier reads a pooler (BERT's [CLS] dense + tanh) that the start
    checkpoint does not contain: an MLM-only pre-training never trains [CLS] or the pooler."""
    from safetensors import safe_open

    from pretune.models.backbone import unwrap
    from pretune.models.registry import resolve_start

    if getattr(unwrap(model).base_model, "pooler", None) is None:
        return False
    how, where = resolve_start(cfg.model.name)
    if how == "arch":
        return False  # random init: every weight is fresh anyway
    for f in Path(where).glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            if any("pooler." in k for k in st.keys()):  # noqa: SIM118 - safe_open has no __iter__
                return False
    return True


def finetune(cfg: FinetuneConfig, overwrite: bool = False, *, task: LabeledTask | None = None,
             features_cache: dict | None = None,
             on_evaluate: Callable[[int, dict[str, float]], None] | None = None) -> FinetuneResult:
    """Fine-tune ``cfg.model`` on ``cfg.task`` with ``cfg.strategy``; evaluate on the test split.

    ``on_evaluate(i, val_metrics)`` is called after the i-th (0-based) validation of the
    training loop; it may raise (a sweep raises ``optuna.TrialPruned`` to prune)."""
    t0 = time.perf_counter()
    out = _prepare_out(cfg, overwrite)
    task = prepare_task(cfg, task)
    device = resolve_device(cfg.train.device)
    metric = selection_metric(cfg, task.type)
    status: dict[str, str] = {}  # the loop's stop reason
    name = cfg.strategy.name
    if name == "prompt":
        from pretune.finetune.prompt import run_prompt

        test_out, val_out, trainable, steps, saver = run_prompt(cfg, task, out, device, metric)
    elif name == "linear-probe" and cfg.strategy.sklearn:
        test_out, val_out, trainable, steps, saver = _run_sklearn(cfg, task, device, features_cache)
    else:
        test_out, val_out, trainable, steps, saver = _run_loop(cfg, task, out, device, metric,
                                                               on_evaluate, status)
    test_m = task_metrics(task.type, task.test.labels, test_out, task.labels)
    val_m = (task_metrics(task.type, task.val.labels, val_out, task.labels)
             if len(task.val) else {})
    seconds = time.perf_counter() - t0
    result = FinetuneResult(test_m, val_m, out, seconds, len(task.train), trainable, steps,
                            status.get("stopped_reason", ""))
    if cfg.save_model and saver is not None:
        saver(out / "model", test_m)
    _write_metrics(cfg, task, result, metric)
    if cfg.train.progress:
        print(f"{task.name} | {cfg.model.name} | {name} | {len(task.train)} train examples "
              f"| test (majority baseline {task.majority_baseline:.4f})")
        print(format_table(test_m))
    return result


def _write_metrics(cfg: FinetuneConfig, task: LabeledTask, r: FinetuneResult, metric: str) -> None:
    payload = {
        "task": task.name, "type": task.type, "labels": task.labels, "selection_metric": metric,
        "majority_baseline": task.majority_baseline, "test": r.metrics, "val": r.val_metrics,
        "timing": {"seconds": r.seconds, "steps": r.steps, "train_examples": r.train_examples,
                   "trainable_params": r.trainable_params},
        "config": cfg.model_dump(mode="json"),
    }
    (r.out_dir / "metrics.json").write_text(json.dumps(payload, indent=2, default=float))


def _run_sklearn(cfg: FinetuneConfig, task: LabeledTask, device: torch.device,
                 cache: dict | None) -> tuple:
    from pretune.finetune.strategies import fit_sklearn_probe, probe_outputs

    model, tokenizer = _load(cfg, task, "base")
    model.to(device)
    x = {s: _features(model, tokenizer, getattr(task, s), cfg, device, cache)
         for s in ("train", "val", "test")}
    est = fit_sklearn_probe(x["train"], task.train.labels, x["val"], task.val.labels,
                            task.type, task.labels, cfg.train.seed)
    val_out = probe_outputs(est, x["val"], task.type, len(task.labels)) if len(task.val) else None
    test_out = probe_outputs(est, x["test"], task.type, len(task.labels))
    coef = getattr(est[-1], "coef_", None)
    trainable = int(np.size(coef) + np.size(getattr(est[-1], "intercept_", 0))) if coef is not None else 0
    return test_out, val_out, trainable, 0, None  # no HF model to save: the head is sklearn


def _run_loop(cfg: FinetuneConfig, task: LabeledTask, out: Path, device: torch.device,
              metric: str, on_evaluate: Callable[[int, dict[str, float]], None] | None = None,
              status: dict[str, str] | None = None) -> tuple:
    from pretune.finetune.strategies import apply_strategy, export_model
    from pretune.train.loop import fit

    model, tokenizer = _load(cfg, task, "classify")
    if cfg.strategy.name == "linear-probe" and _fresh_pooler(model, cfg):
        print(f"note: {cfg.model.name} has no trained pooler (masked-LM pre-training), so this "
              "linear probe's head reads the [CLS] token through a freshly initialised pooler "
              "and sees little signal; strategy.sklearn=true probes mean-pooled features "
              "instead", file=sys.stderr)
    plan = apply_strategy(model, cfg.strategy, cfg.optim)
    enc = encode(tokenizer, task.train.texts, task.train.pairs, cfg.task.max_length)
    batches = LabeledBatches(
        enc, task.train.labels, task.type, cfg.train.batch_size, seed=cfg.train.seed,
        augment=cfg.augment, special_ids=set(tokenizer.all_special_ids),
        mask_id=tokenizer.mask_token_id if tokenizer.mask_token_id is not None
        else tokenizer.unk_token_id,
    )
    evaluate = _evaluator(task, tokenizer, cfg.task.max_length, max(cfg.train.batch_size, 64),
                          device)
    if evaluate is not None and on_evaluate is not None:
        evaluate = _observed(evaluate, on_evaluate)
    # Without TensorBoard/periodic saves nothing in out/train is needed: skip the loop's final
    # checkpoint write (model + optimizer, ~270 MB for MiniLM) in every study cell.
    train_dir = out / "train" if (cfg.train.tensorboard or cfg.train.save_every) else None
    result = fit(
        plan.model, loss_function(task, cfg.class_weights), batches, cfg.train, cfg.optim,
        train_dir, param_groups=plan.param_groups, evaluate=evaluate,
        metric=metric if evaluate else None, mode=metric_mode(metric),
        restore_best=evaluate is not None, on_epoch_start=plan.on_epoch_start,
    )  # optim.l1 (L1 on weight matrices) is applied inside fit
    if status is not None:
        status["stopped_reason"] = result.stopped_reason
    # A finetune run cannot be resumed, and the best weights are already restored: drop the
    # loop's checkpoints (a study would otherwise keep two model copies per cell on disk).
    shutil.rmtree(out / "train" / "checkpoints", ignore_errors=True)
    model = plan.model
    batch_size = max(cfg.train.batch_size, 64)
    test_enc = encode(tokenizer, task.test.texts, task.test.pairs, cfg.task.max_length)
    test_out = model_outputs(model, test_enc, task.type, batch_size, device)
    val_out = None
    if len(task.val):
        val_enc = encode(tokenizer, task.val.texts, task.val.pairs, cfg.task.max_length)
        val_out = model_outputs(model, val_enc, task.type, batch_size, device)

    def save(path: Path, test_metrics: dict[str, Any]) -> None:
        save_model_dir(export_model(model), tokenizer, path, cfg, task, test_metrics)

    return test_out, val_out, plan.trainable_params, int(result.steps), save


# --------------------------------------------------------------------------- export

TASK_FILE = "pretune_task.json"  # how to read inputs for evaluate/predict (fields, max_length)


def save_model_dir(model: nn.Module, tokenizer: Any, path: Path, cfg: FinetuneConfig,
                   task: LabeledTask, test_metrics: dict[str, Any],
                   extra: dict[str, Any] | None = None) -> Path:
    """Write an HF directory (safetensors + config with label maps + tokenizer + model card)
    via a temp dir and a rename, so a crash never leaves a half-written model."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    t = cfg.task
    info = {"task": task.name, "type": task.type, "labels": task.labels,
            "text_field": t.text_field, "text_pair_field": t.text_pair_field,
            "label_field": t.label_field, "label_sep": t.label_sep, "max_length": t.max_length,
            "strategy": cfg.strategy.name, "start": cfg.model.name,
            "task_config": t.model_dump(mode="json"), **(extra or {})}
    (tmp / TASK_FILE).write_text(json.dumps(info, indent=2))
    (tmp / "README.md").write_text(model_card(cfg, task, test_metrics, extra))
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def model_card(cfg: FinetuneConfig, task: LabeledTask, test_metrics: dict[str, Any],
               extra: dict[str, Any] | None = None) -> str:
    scalars = "\n".join(f"| {k} | {v:.4f} |" for k, v in _scalars(test_metrics).items())
    auto = "AutoModelForMaskedLM" if extra and extra.get("prompt") else \
        "AutoModelForSequenceClassification"
    return f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [pretune]
---
# {cfg.name}

Fine-tuned with [pretune](https://example.invalid/pretune) from `{cfg.model.name}`.

- task: `{cfg.task.path}` ({task.type}, {len(task.labels)} labels: {", ".join(task.labels[:20])})
- strategy: `{cfg.strategy.name}`; training examples: {len(task.train)} (budget {task.budget or "all"}, seed {cfg.train.seed})
- test examples: {len(task.test)}; majority-class baseline accuracy {task.majority_baseline:.4f}

## Test metrics

| metric | value |
|---|---|
{scalars}

## Load it (no pretune needed)

```python
from transformers import AutoTokenizer, {auto}
tok = AutoTokenizer.from_pretrained("<this dir>")
model = {auto}.from_pretrained("<this dir>")
```

Or with pretune: `pretune predict <this dir> input.csv -o predictions.csv`.
"""


__all__ = ["FinetuneResult", "finetune", "save_model_dir"]
