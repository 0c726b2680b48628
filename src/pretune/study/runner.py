"""``pretune study``: prepare -> pre-train -> the fine-tuning matrix -> one report.

The runner only calls public entry points (prepare, pretrain, finetune, the stats/report
functions); the training loop knows nothing about studies. Every finished cell is a JSON file
under ``runs/<study>/cells/``, written atomically, so a rerun skips finished cells and retries
failed ones; nothing is dropped silently (failures are rows with status "failed").
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pretune.config import (
    FinetuneConfig,
    ImageFinetuneConfig,
    ImageStudyConfig,
    MatrixConfig,
    ModelConfig,
    StrategyConfig,
    StudyConfig,
    TaskConfig,
    config_hash,
    deep_merge,
    dump_yaml,
    format_validation_error,
    load_yaml,
)
from pretune.errors import PretuneError
from pretune.study.phases import (
    Phase,
    contamination_for_tasks,
    run_pretraining,
    run_probes,
)

ZERO_SHOT = "zero-shot"


@dataclass(frozen=True)
class Cell:
    """One fine-tuning run of the matrix."""

    task: str
    start: str
    strategy: str  # display name: strategy name (+ "-sklearn" variant)
    strategy_index: int
    budget: int | None  # None = all training examples
    budget_label: str
    seed: int
    settings: str = ""  # hash of the start's `start_finetune` settings ("" = study defaults)

    @property
    def key(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.start)
        tag = f"__ft-{self.settings}" if self.settings else ""
        return f"{self.task}__{safe}__{self.strategy}__{self.budget_label}__s{self.seed}{tag}"


def strategy_label(s: StrategyConfig) -> str:
    if s.name == "linear-probe" and s.sklearn:
        return "linear-probe-sklearn"
    if s.name == "prompt" and s.few_shot:
        return "prompt-few-shot"
    return s.name


def task_label(t: Any) -> str:
    """A task's short name from its ``path`` (TaskConfig or ImageDataConfig)."""
    return Path(t.path.removeprefix("builtin:")).stem.split(".")[0]


def _excluded(cfg: MatrixConfig, cell: Cell) -> bool:
    fields = {"task": cell.task, "start": cell.start, "strategy": cell.strategy,
              "budget": cell.budget_label}
    return any(all(str(v) == fields[k] for k, v in rule.items()) for rule in cfg.exclude)


def plan_cells(cfg: MatrixConfig) -> list[Cell]:
    """The matrix, less ``exclude``d cells. Zero-shot prompting trains nothing, so it runs once
    per task and start."""
    return [c for c in _all_cells(cfg) if not _excluded(cfg, c)]


def _all_cells(cfg: MatrixConfig) -> list[Cell]:
    cells: list[Cell] = []
    # A start with its own fine-tuning settings gets them in its cell keys: changing them
    # re-runs that start's cells instead of silently reusing results of the old settings.
    tags = {s: config_hash(start_finetune(cfg, s))[:8] if s in cfg.start_finetune else ""
            for s in cfg.starts}
    for task in cfg.tasks:  # every MatrixConfig subclass has tasks
        tname = task_label(task)
        for start in cfg.starts:
            for si, strat in enumerate(cfg.strategies):
                label = strategy_label(strat)
                if strat.name == "prompt" and not strat.few_shot:
                    cells.append(Cell(tname, start, label, si, None, ZERO_SHOT, cfg.seeds[0],
                                      tags[start]))
                    continue
                for budget in cfg.budgets:
                    b = None if budget == "all" else int(budget)
                    for seed in cfg.seeds:
                        cells.append(Cell(tname, start, label, si, b, str(budget), seed,
                                          tags[start]))
    return cells


def _atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _start_model(cfg: StudyConfig, start: str, checkpoints: dict[str, Path]) -> tuple[ModelConfig, str | None]:
    """Map a start name to (model spec, tokenizer for random-init starts)."""
    base = cfg.finetune.model
    if start == "scratch":
        if cfg.pretrain is None:
            raise PretuneError("start 'scratch' needs a `pretrain:` section (its architecture); add one or drop the start")
        arch = cfg.pretrain.model.model_copy(update={"name": cfg.pretrain.model.name})
        return base.model_copy(update={"name": arch.name, "overrides": arch.overrides}), str(checkpoints["tokenizer"])
    if start in ("pretrained", "continued"):
        if start not in checkpoints:
            section = "pretrain" if start == "pretrained" else "continued"
            raise PretuneError(f"start '{start}' needs a `{section}:` section in the study config")
        return base.model_copy(update={"name": str(checkpoints[start])}), None
    return base.model_copy(update={"name": start}), None


def start_finetune(cfg: StudyConfig | ImageStudyConfig, start: str
                   ) -> FinetuneConfig | ImageFinetuneConfig:
    """The study's fine-tuning defaults with ``start_finetune[start]`` applied: a sweep's tuned
    optimiser settings (sweep dir or best.yaml) or an explicit mapping."""
    extra = cfg.start_finetune.get(start)
    if extra is None:
        return cfg.finetune
    if isinstance(extra, str):
        path = Path(extra) / "best.yaml" if Path(extra).is_dir() else Path(extra)
        best = load_yaml(path)
        if not isinstance(best.get("optim"), dict):
            raise PretuneError(f"start_finetune.{start}: {path} has no `optim` section "
                               "(expected a sweep's best.yaml)")
        extra = {"optim": best["optim"]}
    merged = deep_merge(cfg.finetune.model_dump(mode="json"), extra)
    try:
        return type(cfg.finetune).model_validate(merged)
    except ValidationError as e:
        raise PretuneError(format_validation_error(e, f"study start_finetune.{start}")) from None


def _cell_config(cfg: StudyConfig, cell: Cell, task: TaskConfig, model: ModelConfig,
                 tokenizer: str | None, out: Path) -> FinetuneConfig:
    ft = start_finetune(cfg, cell.start)
    return ft.model_copy(update={
        "name": cell.key,
        "output_dir": str(out / "cells"),
        "model": model,
        "tokenizer": tokenizer,
        "task": task.model_copy(update={"budget": cell.budget}),
        "strategy": cfg.strategies[cell.strategy_index],
        "train": ft.train.model_copy(update={"seed": cell.seed, "progress": False, "tensorboard": False}),
        "save_model": False,
    })


def _flatten(cell: Cell, result: Any, labels: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task": cell.task, "start": cell.start, "strategy": cell.strategy,
        "budget": _row_budget(cell, result.train_examples),
        "budget_label": cell.budget_label, "seed": cell.seed, "status": "ok", "error": "",
        "seconds": round(result.seconds, 2), "train_examples": result.train_examples,
        "trainable_params": result.trainable_params,
    }
    for k, v in result.metrics.items():
        if isinstance(v, int | float | str):
            row[k] = v
    if "confusion_matrix" in result.metrics:  # the report draws the best run's matrix per start
        row["confusion"] = result.metrics["confusion_matrix"]
        row["labels"] = labels
    return row


@dataclass
class Setup:
    """What a modality hands the matrix: a cell runner and the report's extra sections."""

    run_cell: Callable[[Cell], tuple[Any, list[str]]]  # cell -> (FinetuneResult, label names)
    pretrain: dict | None = None
    probes: list[dict] | None = None
    contamination: list[dict] | None = None


def _text_setup(cfg: StudyConfig, out: Path, phases: list[Phase]) -> Setup:
    """Prepare, pre-train, probes and contamination; cells run ``finetune`` on shared tasks."""
    from pretune.data.labeled import load_task
    from pretune.finetune.run import finetune

    checkpoints, pretrain_info, prep_dir = run_pretraining(cfg, out, phases)
    starts = {s: _start_model(cfg, s, checkpoints) for s in cfg.starts}  # bad starts fail here
    tasks = {task_label(t): t for t in cfg.tasks}
    loaded = {name: load_task(t) for name, t in tasks.items()}
    contamination = contamination_for_tasks(cfg, prep_dir, loaded) if prep_dir else None
    probes = run_probes(cfg, out, checkpoints, loaded, phases) if cfg.probes else None
    features_cache: dict = {}

    def run_cell(cell: Cell) -> tuple[Any, list[str]]:
        model, tok = starts[cell.start]
        ft_cfg = _cell_config(cfg, cell, tasks[cell.task], model, tok, out)
        result = finetune(ft_cfg, overwrite=True, task=loaded[cell.task],
                          features_cache=features_cache)
        return result, loaded[cell.task].labels

    return Setup(run_cell, pretrain_info, probes, contamination)


def run_study(cfg: StudyConfig | ImageStudyConfig, overwrite: bool = False) -> Path:
    """Run (or resume) the whole study; returns the report directory ``runs/<name>``."""
    from pretune.study.report import write_report

    out = Path(cfg.output_dir) / cfg.name
    cells_dir = out / "cells"
    saved_cfg = out / "study.yaml"
    if out.exists() and overwrite:
        import shutil

        shutil.rmtree(out)
    if saved_cfg.exists() and saved_cfg.read_text() != dump_yaml(cfg):
        # Same name, different setup: finished cells may not be comparable. Keep them, but say so.
        print(f"note: {saved_cfg} differs from this config; finished cells with matching keys are reused "
              "(use --overwrite to start over)")
    cells_dir.mkdir(parents=True, exist_ok=True)
    saved_cfg.write_text(dump_yaml(cfg))
    t_study = time.perf_counter()
    phases: list[Phase] = []
    notes: list[str] = []
    if isinstance(cfg, ImageStudyConfig):
        from pretune.study.vision import image_setup

        setup = image_setup(cfg, out, phases)
    else:
        setup = _text_setup(cfg, out, phases)

    cells = plan_cells(cfg)
    rows: list[dict[str, Any]] = []
    metric = _metric_name(cfg)
    try:
        _run_cells(cfg, cells, cells_dir, setup, rows, metric)
    except KeyboardInterrupt:
        print(f"study {cfg.name} interrupted; finished cells are kept, run the same command "
              "again to resume", flush=True)
        raise
    # every cell's own time, so a rerun that reuses finished cells still reports their cost
    spent = sum(float(r.get("seconds") or 0.0) for r in rows)
    phases.append(Phase("fine-tuning matrix", tokens=None, seconds=spent, flops=None))

    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        notes.append(f"{len(failed)} of {len(rows)} cells failed; they are listed in the report and results.csv")
    notes.append(f"study wall time: {time.perf_counter() - t_study:.0f} s (this invocation)")
    paths = write_report(
        out, name=cfg.name, results=rows, metric=metric, pretrain=setup.pretrain,
        probes=setup.probes, contamination=setup.contamination,
        compute=[p.as_dict() for p in phases], config_yaml=dump_yaml(cfg), notes=notes,
    )
    print(f"report: {paths['html']}")
    return out


def _run_cells(cfg: MatrixConfig, cells: list[Cell], cells_dir: Path, setup: Setup,
               rows: list[dict[str, Any]], metric: str) -> None:
    """Run (or reuse) every cell, appending its row; each finished cell is written atomically."""
    for i, cell in enumerate(cells, 1):
        path = cells_dir / f"{cell.key}.json"
        if path.exists():
            row = json.loads(path.read_text())
            if row.get("budget_label") == ZERO_SHOT:
                row["budget"] = 0  # cells written by an older pretune carried the train size
            if row.get("status") == "ok":
                rows.append(row)
                continue
        row = None
        for attempt in range(cfg.retries + 1):
            t0 = time.perf_counter()
            try:
                result, labels = setup.run_cell(cell)
                if getattr(result, "stopped_reason", "") == "interrupted":
                    raise KeyboardInterrupt  # Ctrl-C cut training short: not a finished cell
                row = _flatten(cell, result, labels)
                break
            except PretuneError as e:  # a user-facing problem: retrying won't help
                row = _failed(cell, str(e), t0)
                break
            except Exception as e:  # noqa: BLE001 - a crashed cell is reported, never dropped
                row = _failed(cell, f"{type(e).__name__}: {e}", t0)
                (cells_dir / f"{cell.key}.traceback.txt").write_text(traceback.format_exc())
                print(f"  cell {cell.key} crashed (attempt {attempt + 1}): {row['error']}")
        assert row is not None
        _atomic_write_json(path, row)
        rows.append(row)
        score = row.get(metric, float("nan"))
        print(f"[{i}/{len(cells)}] {cell.task} | {cell.start} | {cell.strategy} | {cell.budget_label} | "
              f"seed {cell.seed}: {row['status']} {metric}={score:.3f} ({row['seconds']:.0f}s)",
              flush=True)


def _row_budget(cell: Cell, train_examples: int) -> int:
    """Labels a run used: 0 for zero-shot, the train size for "all", else the budget."""
    if cell.budget_label == ZERO_SHOT:
        return 0
    return train_examples if cell.budget is None else cell.budget


def _failed(cell: Cell, error: str, t0: float) -> dict[str, Any]:
    return {
        "task": cell.task, "start": cell.start, "strategy": cell.strategy,
        "budget": _row_budget(cell, 0) if cell.budget is not None or cell.budget_label == ZERO_SHOT
        else -1, "budget_label": cell.budget_label,
        "seed": cell.seed, "status": "failed", "error": error.splitlines()[0][:300],
        "seconds": round(time.perf_counter() - t0, 2), "train_examples": 0, "trainable_params": 0,
    }


def _metric_name(cfg: StudyConfig | ImageStudyConfig) -> str:
    return "macro_f1" if cfg.finetune.metric == "auto" else cfg.finetune.metric


__all__ = ["Cell", "Setup", "plan_cells", "run_study", "start_finetune", "task_label"]
