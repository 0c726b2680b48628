"""``pretune pretrain-images``: supervised or SimCLR pre-training of an image model.

Supervised pre-training is image classification on the source images (the image kind's loss
and metrics); SimCLR trains the backbone with NT-Xent on two augmented views and watches a
cosine k-NN accuracy when labels exist. Both run the one loop on ``ImageBatches``. Output
``runs/<name>/``: ``train/`` (metrics.jsonl, TensorBoard, checkpoints), ``model/`` (loads with
``AutoModelForImageClassification`` / ``AutoImageProcessor``) and ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pretune.config import ImagePretrainConfig
from pretune.data.images import ImageBatches, ImageSet, load_image_task
from pretune.evaluate.metrics import metric_mode
from pretune.models.vision import SimCLRModel, load_image_model, nt_xent, save_image_model
from pretune.tasks.image_classification import (
    classify_loss,
    classify_metrics,
    count_images,
    image_features,
    image_outputs,
)
from pretune.train.loop import Evaluation, fit
from pretune.train.rundir import prepare_run_dir, run_lock
from pretune.train.trackers import Trackers, run_trackers


@dataclass
class ImagePretrainResult:
    model_dir: Path
    metrics: dict[str, float]  # last validation metrics
    seconds: float
    steps: int
    images_seen: int


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
    with run_lock(Path(cfg.output_dir) / cfg.name):
        return _pretrain_images(cfg, overwrite, resume)


def _pretrain_images(cfg: ImagePretrainConfig, overwrite: bool, resume: bool
                     ) -> ImagePretrainResult:
    t0 = time.perf_counter()
    out = prepare_run_dir(cfg.output_dir, cfg.name, overwrite, resume)
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
                dev = next(m.parameters()).device
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
        loss_fn, metric = classify_loss, "accuracy"

        def evaluate(m: nn.Module) -> dict[str, float]:
            return classify_metrics(task.val, image_outputs(m, task.val.x), task.labels)

    has_eval = len(task.val) > 1
    evaluation = Evaluation(evaluate, metric=metric, mode=metric_mode(metric),
                            restore_best=True) if has_eval else None
    trackers = run_trackers(cfg, out / "train")
    with contextlib.closing(trackers):  # finished below on success
        return _fit_and_export(cfg, net, loss_fn, batches, evaluation, export, resume, out,
                               task, metric, trackers, t0)


def _fit_and_export(cfg: ImagePretrainConfig, net: nn.Module, loss_fn: Any, batches: Any,
                    evaluation: Evaluation | None, export: Any, resume: bool, out: Path,
                    task: Any, metric: str, trackers: Trackers, t0: float
                    ) -> ImagePretrainResult:
    result = fit(net, loss_fn, batches, cfg.train, cfg.optim, out / "train", evaluate=evaluation,
                 save_fn=export, resume=resume, tokens_per_batch=count_images, trackers=trackers)
    if result.stopped_reason == "interrupted":  # SIGINT/SIGTERM: a checkpoint, not a model
        print(f"interrupted at step {result.steps}; checkpoint {result.last_checkpoint}; "
              "continue with --resume")
        raise KeyboardInterrupt
    if result.already_finished and (out / "model" / "config.json").is_file() \
            and (out / "metrics.json").is_file():
        done = json.loads((out / "metrics.json").read_text())
        print(f"{out} already finished at step {result.steps:,} ({result.stopped_reason}); "
              f"nothing to do: {out / 'model'}")
        return ImagePretrainResult(out / "model", done["val"], done["timing"]["seconds"],
                                   result.steps, result.tokens)
    export(net, out / "model")
    last = next((h for h in reversed(result.history) if h["kind"] == "eval"), {})
    metrics = {k: v for k, v in last.items() if k not in ("kind", "step", "tokens")}
    seconds = time.perf_counter() - t0
    payload = {"objective": cfg.objective, "data": cfg.data.path, "train_images": len(task.train),
               "val": metrics, "best": {metric: result.best_metric, "step": result.best_step},
               "timing": {"seconds": seconds, "steps": result.steps, "images": result.tokens},
               "config": cfg.model_dump(mode="json")}
    (out / "metrics.json").write_text(json.dumps(payload, indent=2, default=float))
    trackers.finish({f"final/{k}": v for k, v in metrics.items()}, step=result.steps)
    if cfg.train.progress:
        print(f"{cfg.objective} pre-training on {task.name}: {result.steps} steps, "
              f"{result.tokens} images, {seconds:.0f}s; val {metrics}")
    return ImagePretrainResult(out / "model", metrics, seconds, result.steps, result.tokens)
