"""``pretune study``: the phases before the matrix -> the fine-tuning matrix -> one report.

The runner only calls public entry points: a modality's setup (``phases.text_setup`` or
``vision.image_setup``), the matrix (``cells.run_cells``, every cell the one fine-tuning
path), and the report; the training loop knows nothing about studies.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from pretune.config import ImageStudyConfig, StudyConfig, dump_yaml
from pretune.study.cells import run_cells
from pretune.study.environment import environment
from pretune.study.matrix import (
    Phase,
    Setup,
    plan_cells,
    start_finetune,
    task_label,
    task_labels,
)
from pretune.study.phases import text_setup
from pretune.study.report import write_report
from pretune.study.vision import image_setup
from pretune.tasks import get_kind
from pretune.tasks.base import scalars
from pretune.train.rundir import mark_run, remove_run, run_lock

AUTO_METRIC = {"token-classification": "f1", "generation": "rougeL"}


def study_metrics(cfg: StudyConfig | ImageStudyConfig) -> dict[str, str]:
    """task -> the metric its verdicts use: ``finetune.metric``, or (auto) macro-F1 for
    classification, entity F1 for token tagging and ROUGE-L for generation."""
    if cfg.finetune.metric != "auto":
        return dict.fromkeys(task_labels(cfg), cfg.finetune.metric)
    return {name: AUTO_METRIC.get(t.kind, "macro_f1") for name, t in task_labels(cfg).items()}


def trivial_baselines(cfg: StudyConfig | ImageStudyConfig, setup: Setup) -> dict[str, dict]:
    """task -> {name, metrics}: the test scores of the baseline that learns nothing (majority
    class, all-O, copying the input), the line under every curve of the report."""
    out = {}
    for name, task_cfg in setup.tasks.items():
        kind = get_kind(task_cfg.kind)
        task = setup.loaded[name]
        trivial = kind.trivial(task)
        if trivial is None or not len(task.test):
            continue
        with warnings.catch_warnings():  # constant predictions: undefined AUC and the like
            warnings.simplefilter("ignore")
            out[name] = {"name": trivial[0],
                         "metrics": scalars(kind.metrics(task, task.test, trivial[1]))}
    return out


def run_study(cfg: StudyConfig | ImageStudyConfig, overwrite: bool = False,
              workers: int = 1, backend: str = "processes") -> Path:
    """Run (or resume) the whole study; returns the report directory ``runs/<name>``.
    ``workers`` > 1: the fine-tuning cells run in that many processes at once (each with
    its share of the CPU threads, or one GPU); the phases before the matrix run first.
    ``backend="ray"``: the cells are Ray tasks (the cluster at ``RAY_ADDRESS``, else local)."""
    out = Path(cfg.output_dir) / cfg.name
    if backend == "ray":  # Ray tasks on other nodes resolve paths in their own directories
        out = out.resolve()
    with run_lock(out):  # two identical studies at once would share one pre-training
        return _run_study(cfg, out, overwrite, workers, backend)


def _run_study(cfg: StudyConfig | ImageStudyConfig, out: Path, overwrite: bool,
               workers: int = 1, backend: str = "processes") -> Path:
    saved_cfg = out / "study.yaml"
    if overwrite:
        remove_run(out)
    mark_run(out)
    if saved_cfg.exists() and saved_cfg.read_text() != dump_yaml(cfg):
        # Each phase and cell checks its own inputs: only what the change affects runs again.
        print(f"note: {saved_cfg} differs from this config; phases and cells whose inputs "
              "changed run again, the others are reused (--overwrite starts over)")
    (out / "cells").mkdir(parents=True, exist_ok=True)
    saved_cfg.write_text(dump_yaml(cfg))
    t_study = time.perf_counter()
    phases: list[Phase] = []
    plan_cells(cfg)  # a bad matrix (two tasks with one name) fails before any phase runs
    setup = image_setup(cfg, out, phases) if isinstance(cfg, ImageStudyConfig) \
        else text_setup(cfg, out, phases)
    metric = study_metrics(cfg)
    try:
        rows = run_cells(cfg, setup, out, metric, workers, backend)
    except KeyboardInterrupt:
        print(f"study {cfg.name} interrupted; finished cells are kept, run the same command "
              "again to resume", flush=True)
        raise
    # every cell's own time, so a rerun that reuses finished cells still reports their cost
    spent = sum(float(r.get("seconds") or 0.0) for r in rows)
    tokens = sum(int(r.get("tokens") or 0) for r in rows)
    flops = sum(float(r.get("flops") or 0.0) for r in rows)
    phases.append(Phase("fine-tuning matrix", tokens=tokens or None, seconds=spent,
                        flops=flops or None))
    notes: list[str] = []
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        notes.append(f"{len(failed)} of {len(rows)} cells failed; they are listed in the report "
                     "and results.csv")
    collapsed = [r for r in rows if r.get("collapsed")]
    if collapsed:
        cells = "; ".join(f"{r['task']} | {r['start']} | {r['strategy']} | {r['budget_label']} "
                          f"| seed {r['seed']}" for r in collapsed[:8])
        more = f" (+{len(collapsed) - 8} more)" if len(collapsed) > 8 else ""
        notes.append(f"{len(collapsed)} of {len(rows)} cells collapsed (one class for every "
                     f"validation example, or no better than the majority class; "
                     f"`collapsed` in results.csv): {cells}{more}. Try a higher optim.lr, "
                     "class_weights=true or more steps for them")
    notes.append(f"study wall time: {time.perf_counter() - t_study:.0f} s (this invocation)")
    env = environment()
    (out / "environment.json").write_text(json.dumps(env, indent=1) + "\n")
    paths = write_report(
        out, name=cfg.name, results=rows, metric=metric, pretrain=setup.pretrain,
        probes=setup.probes, contamination=setup.contamination,
        compute=[p.as_dict() for p in phases], config_yaml=dump_yaml(cfg), notes=notes,
        environment=env, baselines=trivial_baselines(cfg, setup), correction=cfg.correction,
        cells=out / "cells",
    )
    print(f"report: {paths['html']}")
    return out


__all__ = ["plan_cells", "run_study", "start_finetune", "task_label"]
