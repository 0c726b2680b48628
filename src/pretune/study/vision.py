"""The image study's phases before the matrix (``modality: image``): pre-train an image model
(resumable, reused on rerun), load the image tasks, and check contamination. ``image_setup``
hands the matrix its ``Setup``; the cells are the same fine-tuning runs as a text study's.
The pre-trained model lives in ``runs/<study>/pretrain/model``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pretune.config import ImageDataConfig, ImageStudyConfig
from pretune.data.images import load_image_task
from pretune.errors import PretuneError
from pretune.models.start import resolve_start
from pretune.models.vision import checkpoint_image_info
from pretune.study.contamination import image_overlap
from pretune.study.identity import (
    config_identity,
    digest,
    plan_phase,
    source_identity,
    task_identity,
)
from pretune.study.matrix import Phase, Setup, StartSpec, task_labels
from pretune.study.phases import loop_history
from pretune.train.pretrain_images import pretrain_images


def _pretrain(cfg: ImageStudyConfig, out: Path, phases: list[Phase]) -> tuple[Path | None, dict | None]:
    """Run (resume, or reuse) the pre-training phase; returns (model dir, report info)."""
    if cfg.pretrain is None:
        return None, None
    run_dir = out / "pretrain"
    pcfg = cfg.pretrain.model_copy(update={"name": "pretrain", "output_dir": str(out)})
    fingerprint = digest(config_identity(pcfg), source_identity(pcfg.model.name),
                         task_identity(pcfg.data))
    done = (run_dir / "model" / "config.json").is_file() and (run_dir / "metrics.json").is_file()
    plan = plan_phase(run_dir, fingerprint, done, run_dir / "train" / "checkpoints",
                      "image pre-training")
    if plan is not None:
        print(f"== image pre-training: {plan} ({pcfg.model.name}, {pcfg.objective}, "
              f"{pcfg.data.path}) ==", flush=True)
        pretrain_images(pcfg, overwrite=plan == "start", resume=plan == "resume")
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


def _start_spec(cfg: ImageStudyConfig, start: str, pretrained: Path | None) -> StartSpec:
    """The model a start fine-tunes: scratch is the pre-training architecture at random init."""
    if start == "scratch":
        arch = cfg.pretrain.model if cfg.pretrain is not None else cfg.finetune.model
        if not resolve_start(arch.name).require("image").random_init:
            raise PretuneError(f"start 'scratch' needs an architecture name, not {arch.name}; "
                               "add a `pretrain:` section or set finetune.model.name=resnet-tiny")
        return StartSpec(arch.name, dict(arch.overrides))
    if start == "pretrained":
        if pretrained is None:
            raise PretuneError("start 'pretrained' needs a `pretrain:` section in the study config")
        return StartSpec(str(pretrained), {})
    resolve_start(start).require("image")  # unknown names / missing dirs fail before any cell
    return StartSpec(start)


def _load_tasks(cfg: ImageStudyConfig, pretrained: Path | None) -> dict[str, Any]:
    """Each task once, all training images (budgets are drawn per cell with the cell's seed);
    without ``image_size`` a task takes the pre-trained checkpoint's size."""
    size = checkpoint_image_info(pretrained).get("image_size") if pretrained else None
    return {name: load_image_task(t.model_copy(update={"budget": None}), seed=0,
                                  image_size=None if t.image_size else size)
            for name, t in task_labels(cfg).items()}


def _contamination(cfg: ImageStudyConfig, tasks: dict[str, ImageDataConfig],
                   loaded: dict[str, Any]) -> list[dict] | None:
    """Test images that are pixel-identical to a pre-training image in the task's format."""
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
    """Pre-train, load the tasks, check contamination."""
    pretrained, info = _pretrain(cfg, out, phases)
    tasks = task_labels(cfg)
    loaded = _load_tasks(cfg, pretrained)
    starts = {s: _start_spec(cfg, s, pretrained) for s in cfg.starts}
    return Setup(starts, tasks, loaded, info, None, _contamination(cfg, tasks, loaded))


__all__ = ["image_setup"]
