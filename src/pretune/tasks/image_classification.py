"""Image classification: ResNet / ViT classifiers from ``transformers`` on labeled images.

Reading, resizing and splits live in ``pretune.data.images``; this module adds the kind's
parts: an ``AutoModelForImageClassification`` with a fresh classifier for the task's classes,
cross-entropy (mixup / CutMix soft targets too; frozen BatchNorm layers keep their statistics),
softmax outputs, the saved directory (weights + ``preprocessor_config.json`` +
``pretune_image.json``), and ``evaluate`` / ``predict`` on class folders, ``.npz`` or builtins.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pretune.config import FinetuneConfig, ImageDataConfig, apply_overrides
from pretune.data.images import (
    ImageBatches,
    ImageSet,
    ImageTask,
    apply_image_budget,
    label_ids,
    load_image_task,
    normalize,
    read_images,
    standardize,
)
from pretune.errors import PretuneError
from pretune.evaluate.examples import label_records, majority_outputs
from pretune.evaluate.metrics import classification_metrics
from pretune.models.start import Start
from pretune.models.vision import (
    ImageBackbone,
    checkpoint_image_info,
    load_image_model,
    save_image_model,
)
from pretune.tasks.base import Loaded, Saved, TaskKind, scalars

INFER_BATCH = 256  # images per inference batch


@dataclass(frozen=True)
class Geometry:
    """How images are fed to a model (its 'processor'): size, channels, border."""

    image_size: int
    channels: int
    border: int = 0


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def image_outputs(model: nn.Module, x: Tensor, batch_size: int = INFER_BATCH) -> np.ndarray:
    """Softmax probabilities (N, K) of [0, 1] images (N, C, S, S); accumulated on the CPU."""
    was, device = model.training, _device_of(model)
    model.eval()
    out = [model(pixel_values=normalize(x[i : i + batch_size]).to(device)).logits.float()
           .softmax(-1).cpu() for i in range(0, len(x), batch_size)]
    model.train(was)
    return torch.cat(out).double().numpy() if out else np.zeros((0, 0))


@torch.no_grad()
def image_features(model: nn.Module, x: Tensor, batch_size: int = INFER_BATCH) -> np.ndarray:
    """Pooled backbone features (N, H), no gradients."""
    was, device = model.training, _device_of(model)
    model.eval()
    bb = ImageBackbone(model)
    out = [bb.encode(normalize(x[i : i + batch_size]).to(device)).float().cpu()
           for i in range(0, len(x), batch_size)]
    model.train(was)
    return torch.cat(out).numpy() if out else np.zeros((0, bb.hidden_size), np.float32)


def freeze_bn_stats(model: nn.Module) -> None:
    """BatchNorm layers whose weights are frozen stay in eval mode: a frozen backbone must not
    drift through its running statistics either (fit puts the whole model in train mode)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None \
                and not m.weight.requires_grad:
            m.eval()


def classify_loss(model: nn.Module, batch: dict[str, Tensor],
                  weight: Tensor | None = None) -> Tensor:
    """Cross-entropy on class ids (B,) or mixup/CutMix soft targets (B, K)."""
    freeze_bn_stats(model)
    logits = model(pixel_values=batch["pixel_values"]).logits.float()  # (B, K)
    w = weight.to(logits.device) if weight is not None else None
    return F.cross_entropy(logits, batch["labels"], weight=w)


def classify_metrics(split: ImageSet, probs: np.ndarray, labels: list[str]) -> dict[str, float]:
    """Validation metrics of softmax outputs, with the validation loss."""
    m = scalars(classification_metrics(split.y, probs, labels))
    m["val_loss"] = float(F.nll_loss(torch.from_numpy(probs).clamp_min(1e-12).log(),
                                     torch.from_numpy(split.y)))
    return m


def count_images(batch: dict[str, Tensor]) -> int:
    return int(batch["pixel_values"].shape[0])  # the loop's "tokens" are images here


class ImageClassification(TaskKind):
    name = "image-classification"
    modality = "image"
    pipeline_tag = "image-classification"
    auto_class = "AutoModelForImageClassification"
    processor_class = "AutoImageProcessor"
    example_word = "images"
    tokens_per_batch = staticmethod(count_images)
    infer_batch_size = INFER_BATCH

    # ------------------------------------------------------------------ data

    def load(self, cfg: FinetuneConfig, start: Start | None = None) -> ImageTask:
        """The labeled images at the size the start expects (a checkpoint's own size when
        ``task.image_size`` is unset)."""
        size = None
        if start is not None and start.path is not None and cfg.task.image_size is None:
            size = checkpoint_image_info(start.path).get("image_size")
        return load_image_task(cfg.task, seed=cfg.train.seed, image_size=size)

    def with_budget(self, task: ImageTask, budget: int | None, seed: int) -> ImageTask:
        return apply_image_budget(task, budget, seed)

    def pool(self, task: ImageTask) -> ImageSet:
        return ImageSet.concat(task.train, task.val)

    def refold(self, task: ImageTask, train: ImageSet, val: ImageSet, fold: int, k: int
               ) -> ImageTask:
        return replace(task, train=train, val=val)

    def fold_labels(self, split: ImageSet) -> list[Any]:
        return split.labels

    def metrics(self, task: ImageTask, split: ImageSet, outputs: np.ndarray) -> dict[str, Any]:
        return classification_metrics(split.y, outputs, task.labels)

    def example_records(self, task: ImageTask, split: ImageSet, outputs: np.ndarray
                        ) -> list[dict[str, Any]]:
        return label_records([f"test image #{i}" for i in range(len(split))], split.labels,
                             outputs, task.labels, "single_label")

    def trivial(self, task: ImageTask) -> tuple[str, np.ndarray]:
        return majority_outputs("single_label", task.train.labels, len(task.labels),
                                len(task.test))

    def val_metrics(self, task: ImageTask, split: ImageSet, outputs: np.ndarray
                    ) -> dict[str, float]:
        return classify_metrics(split, outputs, task.labels)

    # ------------------------------------------------------------------ model

    def load_model(self, cfg: FinetuneConfig, task: ImageTask, start: Start) -> Loaded:
        torch.manual_seed(cfg.train.seed)  # the new head and random-init starts depend on it
        model = load_image_model(cfg.model, task.labels, task.image_size, task.channels,
                                 cfg.keep_head, start=start)
        return Loaded(model, Geometry(task.image_size, task.channels, cfg.task.border))

    def encode(self, processor: Geometry, split: ImageSet, task_cfg: Any) -> Tensor:
        return split.x

    def train_batches(self, task: ImageTask, processor: Geometry, cfg: FinetuneConfig
                      ) -> ImageBatches:
        return ImageBatches(task.train, cfg.train.batch_size, cfg.augment, task.num_labels,
                            seed=cfg.train.seed)

    def loss_fn(self, task: ImageTask, cfg: FinetuneConfig) -> Any:
        if not cfg.class_weights:
            return classify_loss
        counts = np.bincount(task.train.y, minlength=task.num_labels).astype(float)
        weight = torch.tensor(len(task.train) / (task.num_labels * np.clip(counts, 1, None)),
                              dtype=torch.float32)
        return lambda model, batch: classify_loss(model, batch, weight)

    def eval_batch_size(self, cfg: FinetuneConfig) -> int:
        return INFER_BATCH

    def outputs(self, model: nn.Module, inputs: Tensor, task: ImageTask, batch_size: int,
                device: torch.device) -> np.ndarray:
        return image_outputs(model, inputs, batch_size)

    # ------------------------------------------------------------------ sklearn probe

    def load_encoder(self, cfg: FinetuneConfig, task: ImageTask, start: Start) -> Loaded:
        return self.load_model(cfg, task, start)  # features are what the classifier sees

    def features(self, loaded: Loaded, split: ImageSet, task_cfg: Any, batch_size: int,
                 device: torch.device) -> np.ndarray:
        return image_features(loaded.model, split.x, batch_size)

    def probe_targets(self, task: ImageTask, split: ImageSet) -> tuple[list[Any], str]:
        return split.labels, "single_label"

    def probe_export(self, loaded: Loaded, head: dict[str, np.ndarray], cfg: FinetuneConfig,
                     task: ImageTask, extra: dict[str, Any]
                     ) -> tuple[Callable[[Path], None], str, str]:
        """A plain image classifier: the probe's features are what its classifier reads
        (ResNet's pooled output, ViT's final-LayerNorm CLS), so the standardisation folds
        into the classifier's linear layer: W' = W / scale, b' = b - W' · mean."""
        model = loaded.model
        linear = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)][-1]
        w = torch.as_tensor(head["weight"] / head["scale"], dtype=torch.float32)  # (K, H)
        b = torch.as_tensor(head["bias"], dtype=torch.float32) - w @ torch.as_tensor(head["mean"])
        with torch.no_grad():
            linear.weight.copy_(w.to(linear.weight.device))
            linear.bias.copy_(b.to(linear.bias.device))

        def export(path: Path) -> None:
            self.save(model.cpu(), loaded.processor, path, cfg, task,
                      {"probe": {"C": extra["probe"]["C"], "folded": True}})

        return export, self.auto_class, self.pipeline_tag

    # ------------------------------------------------------------------ export

    def save(self, model: nn.Module, processor: Geometry, path: Path, cfg: FinetuneConfig,
             task: ImageTask, extra: dict[str, Any] | None = None) -> None:
        save_image_model(model, path, processor.image_size, processor.channels,
                         {"border": processor.border, "start": cfg.model.name,
                          "kind": self.name, "task": task.name,
                          "task_config": cfg.task.model_dump(mode="json"), **(extra or {})})

    def card_facts(self, cfg: FinetuneConfig, task: ImageTask) -> list[tuple[str, Any]]:
        return [("task", f"`{cfg.task.path}` ({task.num_labels} classes)"),
                ("inputs", f"{task.image_size}x{task.image_size} px, {task.channels} channel(s), "
                           f"border {cfg.task.border}"),
                ("majority-class baseline accuracy", f"{task.majority_baseline:.4f}")]

    # ------------------------------------------------------------------ saved models

    def open_saved(self, path: Path) -> Saved:
        from transformers import AutoConfig, AutoModelForImageClassification

        config = AutoConfig.from_pretrained(path)
        if not any(a.endswith("ForImageClassification") for a in config.architectures or []):
            raise PretuneError(f"{path} holds a {config.model_type} model, not an image "
                               "classifier; pass the model dir of an image finetune run")
        info = checkpoint_image_info(path)
        model = AutoModelForImageClassification.from_pretrained(path, use_safetensors=True)
        labels = [config.id2label[i] for i in range(config.num_labels)]
        geometry = Geometry(int(info.get("image_size") or 28), int(info.get("channels") or 3),
                            int(info.get("border") or 0))
        empty = ImageSet(torch.zeros((0, geometry.channels, 1, 1)), np.zeros(0, np.int64))
        task = ImageTask(info.get("task", path.name), labels, empty, empty, empty,
                         geometry.image_size, geometry.channels)
        return Saved(path, model, geometry, task, info)

    def _data_config(self, saved: Saved, data: str, overrides: list[str]) -> ImageDataConfig:
        g: Geometry = saved.processor
        base: dict[str, Any] = {"path": data, "image_size": g.image_size, "channels": g.channels,
                                "border": g.border}
        # The model's own split settings, so `evaluate model builtin:x` scores its test split.
        keys = ("split_seed", "test_fraction", "test_size", "val_fraction", "max_images")
        base.update({k: v for k, v in (saved.info.get("task_config") or {}).items() if k in keys})
        items = [o.removeprefix("task.") for o in overrides]
        return ImageDataConfig.model_validate(apply_overrides(base, items))

    def read_labeled(self, saved: Saved, data: str, overrides: list[str]
                     ) -> tuple[ImageSet, Tensor, str]:
        cfg = self._data_config(saved, data, overrides)
        labels = saved.task.labels
        if data.startswith("builtin:"):
            task = load_image_task(cfg.model_copy(update={"budget": None}))
            if task.labels != labels:
                raise PretuneError(f"{data} has classes {task.labels} but the model predicts "
                                   f"{labels}; evaluate it on the task it was trained for")
            split = task.test
        else:
            raw = read_images(data, cfg)
            if raw.labels is None:
                raise PretuneError(f"{data} has no labels; evaluate needs class sub-folders or an "
                                   ".npz with 'y' (use `pretune predict` for unlabeled images)")
            split = ImageSet(standardize(raw, cfg), label_ids(raw.labels, labels, data))
        name = data.removeprefix("builtin:") if data.startswith("builtin:") else Path(data).stem
        return split, split.x, name

    def predict(self, saved: Saved, input: str, output: Path, overrides: list[str],
                device: torch.device) -> int:
        """CSV: ``source`` (file, or .npz row) + ``pred`` + ``prob_<label>`` per class."""
        if input.startswith("builtin:"):
            raise PretuneError(f"predict reads a folder of images or an .npz file, not {input}")
        cfg = self._data_config(saved, input, overrides)
        raw = read_images(input, cfg)
        x = standardize(raw, cfg)
        saved.model.to(device)
        probs = image_outputs(saved.model, x)
        labels = saved.task.labels
        with open(output, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["source", *(["label"] if raw.labels else []), "pred",
                             *[f"prob_{lab}" for lab in labels]])
            for i, p in enumerate(probs):
                given = [raw.labels[i]] if raw.labels else []
                writer.writerow([raw.names[i], *given, labels[int(np.argmax(p))],
                                 *[f"{v:.6f}" for v in p]])
        return len(probs)

