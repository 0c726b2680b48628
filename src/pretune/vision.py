"""Vision entry points: pre-train an image model (supervised or SimCLR) and fine-tune one.

Both run the one training loop (``pretune.train.loop.fit``) on ``ImageBatches``. Outputs go to
``<output_dir>/<name>/``: ``train/`` (metrics.jsonl, TensorBoard, checkpoints), ``model/``
(a Hugging Face directory loadable by ``AutoModelForImageClassification`` and
``AutoImageProcessor``) and ``metrics.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pretune.config import (
    IMAGE_STRATEGIES,
    ImageFinetuneConfig,
    ImagePretrainConfig,
    OptimConfig,
    StrategyConfig,
)
from pretune.data.images import (
    ImageBatches,
    ImageSet,
    ImageTask,
    apply_image_budget,
    load_image_task,
    normalize,
)
from pretune.errors import PretuneError
from pretune.evaluate.metrics import classification_metrics, format_table, metric_mode
from pretune.finetune.run import FinetuneResult
from pretune.finetune.strategies import StrategyPlan
from pretune.models.vision import (
    ImageBackbone,
    SimCLRModel,
    checkpoint_image_info,
    load_image_model,
    nt_xent,
    resolve_image_start,
    save_image_model,
)


@dataclass
class ImagePretrainResult:
    model_dir: Path
    metrics: dict[str, float]  # last validation metrics
    seconds: float
    steps: int
    images_seen: int


# Same fields as text fine-tuning (so a study can treat both alike): one result type.
ImageFinetuneResult = FinetuneResult


def _out_dir(output_dir: str, name: str, overwrite: bool, resume: bool = False) -> Path:
    out = Path(output_dir) / name
    if out.exists() and not resume:
        if not overwrite:
            raise PretuneError(f"{out} already exists; pass --overwrite or choose another name=")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _images(batch: dict[str, Tensor]) -> int:
    return int(batch["pixel_values"].shape[0])  # the loop's "tokens" are images here


def _scalars(m: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in m.items() if isinstance(v, int | float)}


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def image_outputs(model: nn.Module, x: Tensor, batch_size: int = 256) -> np.ndarray:
    """Softmax probabilities (N, K) of [0, 1] images (N, C, S, S); accumulated on the CPU."""
    was, device = model.training, _device_of(model)
    model.eval()
    out = [model(pixel_values=normalize(x[i : i + batch_size]).to(device)).logits.float()
           .softmax(-1).cpu() for i in range(0, len(x), batch_size)]
    model.train(was)
    return torch.cat(out).double().numpy() if out else np.zeros((0, 0))


@torch.no_grad()
def image_features(model: nn.Module, x: Tensor, batch_size: int = 256) -> np.ndarray:
    """Pooled backbone features (N, H), no gradients."""
    was, device = model.training, _device_of(model)
    model.eval()
    bb = ImageBackbone(model)
    out = [bb.encode(normalize(x[i : i + batch_size]).to(device)).float().cpu()
           for i in range(0, len(x), batch_size)]
    model.train(was)
    return torch.cat(out).numpy() if out else np.zeros((0, bb.hidden_size), np.float32)


def _freeze_bn_stats(model: nn.Module) -> None:
    """BatchNorm layers whose weights are frozen stay in eval mode: a frozen backbone must not
    drift through its running statistics either (fit puts the whole model in train mode)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None \
                and not m.weight.requires_grad:
            m.eval()


def classify_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Cross-entropy on class ids (B,) or mixup/CutMix soft targets (B, K)."""
    _freeze_bn_stats(model)
    logits = model(pixel_values=batch["pixel_values"]).logits.float()  # (B, K)
    return F.cross_entropy(logits, batch["labels"])


def _classify_eval(split: ImageSet, labels: list[str]) -> Any:
    if not len(split) or split.y is None:
        return None

    def evaluate(model: nn.Module) -> dict[str, float]:
        probs = image_outputs(model, split.x)
        m = _scalars(classification_metrics(split.y, probs, labels))
        m["val_loss"] = float(F.nll_loss(torch.from_numpy(probs).clamp_min(1e-12).log(),
                                         torch.from_numpy(split.y)))
        return m

    return evaluate


# --------------------------------------------------------------------------- strategies


def apply_image_strategy(model: nn.Module, cfg: StrategyConfig, optim: OptimConfig) -> StrategyPlan:
    """full | linear-probe | partial | gradual | llrd: ``apply_strategy`` itself (its layer
    groups come from ``ImageBackbone`` for image models); text-only strategies are refused."""
    from pretune.finetune.strategies import apply_strategy

    if cfg.name not in IMAGE_STRATEGIES:
        raise PretuneError(f"strategy.name={cfg.name} is for text models; image models support "
                           f"{', '.join(IMAGE_STRATEGIES)}")
    return apply_strategy(model, cfg, optim)


# --------------------------------------------------------------------------- pre-training


def _knn_accuracy(model: nn.Module, train: ImageSet, val: ImageSet, k: int = 10) -> float:
    """Cosine k-NN accuracy of backbone features (val vs <= 2000 training images)."""
    # A random reference subset: splits keep the source order, and mnist-5k is sorted by class.
    ref = train.subset(np.sort(np.random.default_rng(0).permutation(len(train))[:2000]))
    a = F.normalize(torch.from_numpy(image_features(model, ref.x)), dim=1)  # (R, H)
    b = F.normalize(torch.from_numpy(image_features(model, val.x)), dim=1)  # (V, H)
    sim, idx = (b @ a.T).topk(min(k, len(ref)), dim=1)  # (V, k)
    votes = torch.zeros(len(val), int(max(ref.y.max(), val.y.max())) + 1)
    votes.scatter_add_(1, torch.from_numpy(ref.y)[idx], sim.clamp_min(0) + 1e-6)
    return float((votes.argmax(1).numpy() == val.y).mean())


def pretrain_images(cfg: ImagePretrainConfig, overwrite: bool = False, resume: bool = False
                    ) -> ImagePretrainResult:
    """Pre-train ``cfg.model`` on ``cfg.data``: supervised classification, or SimCLR (NT-Xent
    on two augmented views; labels are optional and only used for the k-NN monitor)."""
    from pretune.train.loop import fit

    t0 = time.perf_counter()
    out = _out_dir(cfg.output_dir, cfg.name, overwrite, resume)
    simclr = cfg.objective == "simclr"
    task = load_image_task(cfg.data, seed=cfg.train.seed, require_labels=not simclr)
    labels = task.labels or ["LABEL_0", "LABEL_1"]  # unlabeled: a placeholder head
    torch.manual_seed(cfg.train.seed)
    model = load_image_model(cfg.model, labels, task.image_size, task.channels, keep_head=True)
    info = {"border": cfg.data.border, "pretrained_on": cfg.data.path, "objective": cfg.objective}

    def export(m: nn.Module, path: Path) -> None:
        save_image_model(m.model if isinstance(m, SimCLRModel) else m, path, task.image_size,
                         task.channels, info)

    if simclr:
        net: nn.Module = SimCLRModel(model, cfg.projection_dim)
        batches = ImageBatches(task.train, cfg.train.batch_size, cfg.augment, seed=cfg.train.seed,
                               views=2)

        def loss_fn(m: nn.Module, batch: dict[str, Tensor]) -> Tensor:
            return nt_xent(m(batch["pixel_values"]), cfg.temperature)

        def evaluate(m: nn.Module) -> dict[str, float]:
            res: dict[str, float] = {}
            if len(task.val) > 1:
                vb = ImageBatches(task.val, max(cfg.train.batch_size, 2), cfg.augment, seed=12345,
                                  views=2)
                dev = _device_of(m)
                losses = [float(loss_fn(m, {"pixel_values": b["pixel_values"].to(dev)}))
                          for b in vb]
                res["val_loss"] = float(np.mean(losses))
            if task.labels and len(task.val):
                res["knn_accuracy"] = _knn_accuracy(m.model, task.train, task.val)
            return res

        metric = "knn_accuracy" if task.labels and len(task.val) else "val_loss"
    else:
        net = model
        batches = ImageBatches(task.train, cfg.train.batch_size, cfg.augment, task.num_labels,
                               seed=cfg.train.seed)
        loss_fn, evaluate, metric = classify_loss, _classify_eval(task.val, task.labels), "accuracy"
    has_eval = len(task.val) > 1
    result = fit(net, loss_fn, batches, cfg.train, cfg.optim, out / "train",
                 evaluate=evaluate if has_eval else None, metric=metric if has_eval else None,
                 mode=metric_mode(metric), restore_best=has_eval, save_fn=export, resume=resume,
                 tokens_per_batch=_images)
    if result.stopped_reason == "interrupted":  # SIGINT/SIGTERM: a checkpoint, not a model
        print(f"interrupted at step {result.steps}; checkpoint {result.last_checkpoint}; "
              "continue with --resume")
        raise KeyboardInterrupt
    export(net, out / "model")
    last = next((h for h in reversed(result.history) if h["kind"] == "eval"), {})
    metrics = {k: v for k, v in last.items() if k not in ("kind", "step", "tokens")}
    seconds = time.perf_counter() - t0
    payload = {"objective": cfg.objective, "data": cfg.data.path, "train_images": len(task.train),
               "val": metrics, "best": {metric: result.best_metric, "step": result.best_step},
               "timing": {"seconds": seconds, "steps": result.steps, "images": result.tokens},
               "config": cfg.model_dump(mode="json")}
    (out / "metrics.json").write_text(json.dumps(payload, indent=2, default=float))
    if cfg.train.progress:
        print(f"{cfg.objective} pre-training on {task.name}: {result.steps} steps, "
              f"{result.tokens} images, {seconds:.0f}s; val {metrics}")
    return ImagePretrainResult(out / "model", metrics, seconds, result.steps, result.tokens)


# --------------------------------------------------------------------------- fine-tuning


def load_finetune_task(cfg: ImageFinetuneConfig) -> ImageTask:
    """The labeled task at the size the start model expects (a checkpoint's own size when
    ``data.image_size`` is unset)."""
    size = None
    how, where = resolve_image_start(cfg.model.name)
    if how == "dir" and cfg.data.image_size is None:
        size = checkpoint_image_info(Path(where)).get("image_size")
    return load_image_task(cfg.data, seed=cfg.train.seed, image_size=size)


def finetune_images(cfg: ImageFinetuneConfig, overwrite: bool = False, *,
                    task: ImageTask | None = None) -> ImageFinetuneResult:
    """Fine-tune ``cfg.model`` on labeled images with ``cfg.strategy``; test metrics."""
    from pretune.finetune.strategies import fit_sklearn_probe, probe_outputs
    from pretune.train.loop import fit

    t0 = time.perf_counter()
    out = _out_dir(cfg.output_dir, cfg.name, overwrite)
    if task is None:
        task = load_finetune_task(cfg)
    elif task.budget is None and cfg.data.budget is not None:
        # a pre-loaded task (the study's) gets this run's budget, drawn with the run's seed
        task = apply_image_budget(task, cfg.data.budget, cfg.train.seed)
    if not len(task.test):
        raise PretuneError("the task has no test images; set data.test or data.test_fraction > 0")
    metric = "macro_f1" if cfg.metric == "auto" else cfg.metric
    torch.manual_seed(cfg.train.seed)  # the new head and random-init starts depend on the seed
    model = load_image_model(cfg.model, task.labels, task.image_size, task.channels, cfg.keep_head)
    plan = apply_image_strategy(model, cfg.strategy, cfg.optim)
    steps, val_probs, stopped = 0, None, ""
    if plan.sklearn:
        x = {s: image_features(model, getattr(task, s).x) for s in ("train", "val", "test")}
        y_val = task.val.y.tolist() if len(task.val) else []
        est = fit_sklearn_probe(x["train"], task.train.y.tolist(), x["val"], y_val,
                                "single_label", task.labels, cfg.train.seed)
        test_probs = probe_outputs(est, x["test"], "single_label", task.num_labels)
        if len(task.val):
            val_probs = probe_outputs(est, x["val"], "single_label", task.num_labels)
        trainable = int(np.size(est[-1].coef_) + np.size(est[-1].intercept_))
    else:
        batches = ImageBatches(task.train, cfg.train.batch_size, cfg.augment, task.num_labels,
                               seed=cfg.train.seed)
        evaluate = _classify_eval(task.val, task.labels)
        result = fit(plan.model, classify_loss, batches, cfg.train, cfg.optim, out / "train",
                     param_groups=plan.param_groups, evaluate=evaluate,
                     metric=metric if evaluate else None, mode=metric_mode(metric),
                     restore_best=evaluate is not None, on_epoch_start=plan.on_epoch_start,
                     tokens_per_batch=_images)
        # Best weights are restored in memory; a fine-tune run is not resumable: drop checkpoints.
        shutil.rmtree(out / "train" / "checkpoints", ignore_errors=True)
        steps, trainable, stopped = int(result.steps), plan.trainable_params, result.stopped_reason
        test_probs = image_outputs(model, task.test.x)
        if len(task.val):
            val_probs = image_outputs(model, task.val.x)
    test_m = classification_metrics(task.test.y, test_probs, task.labels)
    val_m = classification_metrics(task.val.y, val_probs, task.labels) if val_probs is not None \
        else {}
    seconds = time.perf_counter() - t0
    res = ImageFinetuneResult(test_m, val_m, out, seconds, len(task.train), trainable, steps,
                              stopped)
    if cfg.save_model and not plan.sklearn:
        path = save_image_model(model, out / "model", task.image_size, task.channels,
                                {"border": cfg.data.border, "start": cfg.model.name})
        (path / "README.md").write_text(_model_card(cfg, task, test_m))
    payload = {"task": task.name, "labels": task.labels, "selection_metric": metric,
               "majority_baseline": task.majority_baseline, "test": test_m, "val": val_m,
               "timing": {"seconds": seconds, "steps": steps, "train_examples": len(task.train),
                          "trainable_params": trainable},
               "config": cfg.model_dump(mode="json")}
    (out / "metrics.json").write_text(json.dumps(payload, indent=2, default=float))
    if cfg.train.progress:
        print(f"{task.name} | {cfg.model.name} | {cfg.strategy.name} | {len(task.train)} train "
              f"images | test (majority baseline {task.majority_baseline:.4f})")
        print(format_table(test_m))
    return res


def _model_card(cfg: ImageFinetuneConfig, task: ImageTask, test: dict[str, Any]) -> str:
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in _scalars(test).items())
    return f"""---
library_name: transformers
pipeline_tag: image-classification
tags: [pretune]
---
# {cfg.name}

Fine-tuned with pretune from `{cfg.model.name}` on `{cfg.data.path}` ({task.num_labels} classes,
{len(task.train)} training images, strategy `{cfg.strategy.name}`, seed {cfg.train.seed}).
Inputs: {task.image_size}x{task.image_size} px, {task.channels} channel(s), border {cfg.data.border}.

| metric | value |
|---|---|
{rows}

```python
from transformers import AutoImageProcessor, AutoModelForImageClassification
processor = AutoImageProcessor.from_pretrained("<this dir>")
model = AutoModelForImageClassification.from_pretrained("<this dir>")
```
"""


__all__ = ["ImageFinetuneResult", "ImagePretrainResult", "apply_image_strategy",
           "finetune_images", "image_features", "image_outputs", "pretrain_images"]
