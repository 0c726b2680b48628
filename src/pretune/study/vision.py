"""The image half of ``pretune study`` (``modality: image``): pre-train an image model, then
hand the runner a cell function that fine-tunes every start on the image tasks.

The matrix, caching, retries, statistics and the report are the text study's own
(``pretune.study.runner``); only the phases before the matrix and the per-cell call differ.
The pre-trained model lives in ``runs/<study>/pretrain/model`` and is reused on rerun.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pretune.config import ImageDataConfig, ImageFinetuneConfig, ImageStudyConfig, ModelConfig
from pretune.errors import PretuneError
from pretune.study.phases import Phase, loop_history
from pretune.study.runner import Cell, Setup, start_finetune, task_label


def _pretrain(cfg: ImageStudyConfig, out: Path, phases: list[Phase]) -> tuple[Path | None, dict | None]:
    """Run (resume, or reuse) the pre-training phase; returns (model dir, report info)."""
    from pretune.train.checkpoint import latest_checkpoint
    from pretune.vision import pretrain_images

    if cfg.pretrain is None:
        return None, None
    run_dir = out / "pretrain"
    pcfg = cfg.pretrain.model_copy(update={"name": "pretrain", "output_dir": str(out)})
    if not ((run_dir / "model" / "config.json").is_file() and (run_dir / "metrics.json").is_file()):
        resume = latest_checkpoint(run_dir / "train" / "checkpoints") is not None
        print(f"== image pre-training: {'resuming' if resume else 'starting'} "
              f"({pcfg.model.name}, {pcfg.objective}, {pcfg.data.path}) ==", flush=True)
        pretrain_images(pcfg, overwrite=not resume, resume=resume)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    timing = metrics.get("timing", {})
    phases.append(Phase("pre-training", timing.get("images"), float(timing.get("seconds", 0.0)),
                        None))
    info = {"tokens": timing.get("images"), "seconds": timing.get("seconds"), "flops": None,
            "history": loop_history(run_dir / "train" / "metrics.jsonl"),
            "corpus": cfg.pretrain.data.path.removeprefix("builtin:"),
            "model": cfg.pretrain.model.name, "objective": cfg.pretrain.objective,
            "unit": "images"}
    return run_dir / "model", info


def _start_spec(cfg: ImageStudyConfig, start: str, pretrained: Path | None,
                base: ModelConfig) -> ModelConfig:
    """The model a start fine-tunes: scratch is the pre-training architecture at random init."""
    from pretune.models.vision import resolve_image_start

    if start == "scratch":
        arch = cfg.pretrain.model if cfg.pretrain is not None else base
        if resolve_image_start(arch.name)[0] != "arch":
            raise PretuneError(f"start 'scratch' needs an architecture name, not {arch.name}; "
                               "add a `pretrain:` section or set finetune.model.name=resnet-tiny")
        return base.model_copy(update={"name": arch.name, "overrides": arch.overrides})
    if start == "pretrained":
        if pretrained is None:
            raise PretuneError("start 'pretrained' needs a `pretrain:` section in the study config")
        return base.model_copy(update={"name": str(pretrained), "overrides": {}})
    resolve_image_start(start)  # unknown names and missing directories fail before any cell
    return base.model_copy(update={"name": start})


def _load_tasks(cfg: ImageStudyConfig, pretrained: Path | None) -> dict[str, Any]:
    """Each task once, all training images (budgets are drawn per cell with the cell's seed);
    without ``image_size`` a task takes the pre-trained checkpoint's size."""
    from pretune.data.images import load_image_task
    from pretune.models.vision import checkpoint_image_info

    size = checkpoint_image_info(pretrained).get("image_size") if pretrained else None
    loaded = {}
    for t in cfg.tasks:
        name = task_label(t)
        if name in loaded:
            raise PretuneError(f"two study tasks are both named '{name}'; rename one of the files")
        loaded[name] = load_image_task(t.model_copy(update={"budget": None}), seed=0,
                                       image_size=None if t.image_size else size)
    return loaded


def _contamination(cfg: ImageStudyConfig, tasks: dict[str, ImageDataConfig],
                   loaded: dict[str, Any]) -> list[dict] | None:
    """Test images that are pixel-identical to a pre-training image in the task's format."""
    from pretune.data.images import load_image_task
    from pretune.study.contamination import image_overlap

    if cfg.pretrain is None or not cfg.contamination:
        return None
    results = []
    for name, task in loaded.items():
        data = cfg.pretrain.data.model_copy(update={
            "image_size": task.image_size, "border": tasks[name].border,
            "channels": task.channels, "budget": None})
        seen = load_image_task(data, seed=cfg.pretrain.train.seed, require_labels=False).train
        results.append({"task": name, **image_overlap(seen.x, task.test.x)})
    return results


def image_setup(cfg: ImageStudyConfig, out: Path, phases: list[Phase]) -> Setup:
    """Pre-train, load the tasks, check contamination; cells run ``finetune_images``."""
    from pretune.vision import finetune_images

    pretrained, info = _pretrain(cfg, out, phases)
    tasks = {task_label(t): t for t in cfg.tasks}
    loaded = _load_tasks(cfg, pretrained)
    specs = {s: _start_spec(cfg, s, pretrained, cfg.finetune.model) for s in cfg.starts}
    contamination = _contamination(cfg, tasks, loaded)

    def run_cell(cell: Cell) -> tuple[Any, list[str]]:
        ft = start_finetune(cfg, cell.start)
        assert isinstance(ft, ImageFinetuneConfig)
        spec = specs[cell.start]
        model = ft.model.model_copy(update={"name": spec.name, "overrides": spec.overrides})
        cell_cfg = ft.model_copy(update={
            "name": cell.key, "output_dir": str(out / "cells"), "model": model,
            "data": tasks[cell.task].model_copy(update={"budget": cell.budget}),
            "strategy": cfg.strategies[cell.strategy_index],
            "train": ft.train.model_copy(update={"seed": cell.seed, "progress": False,
                                                 "tensorboard": False}),
            "save_model": False,
        })
        task = loaded[cell.task]
        return finetune_images(cell_cfg, overwrite=True, task=task), task.labels

    return Setup(run_cell, info, None, contamination)


__all__ = ["image_setup"]
