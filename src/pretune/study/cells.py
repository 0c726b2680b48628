"""Running the study matrix: which cells are finished (reused when the fingerprint of their
inputs is unchanged), which run, one after another or concurrently (``--workers``), and the
one progress line per finished cell. Every finished cell is a JSON file under
``runs/<study>/cells/``, written atomically; nothing is dropped silently.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

from pretune.config import FinetuneConfig
from pretune.errors import PretuneError
from pretune.finetune.run import finetune
from pretune.study.identity import (
    config_identity,
    digest,
    source_identity,
    stamp_matches,
    task_identity,
    write_stamp,
)
from pretune.study.matrix import (
    ZERO_SHOT,
    Cell,
    Row,
    Setup,
    cell_config,
    cell_run_info,
    failed_row,
    plan_cells,
    result_row,
)
from pretune.train.checkpoint import latest_checkpoint
from pretune.train.logger import duration


def _atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


class Fingerprints:
    """The fingerprint of each cell's inputs; task and start identities hashed once."""

    def __init__(self, setup: Setup) -> None:
        self.tasks = {name: task_identity(t) for name, t in setup.tasks.items()}
        self.starts = {name: [source_identity(s.name), source_identity(s.tokenizer)]
                       for name, s in setup.starts.items()}

    def __call__(self, cell: Cell, ft: FinetuneConfig) -> str:
        return digest(config_identity(ft), self.tasks[cell.task], self.starts[cell.start])


def _reusable(path: Path, fingerprint: str) -> tuple[dict[str, Any] | None, bool]:
    """(the finished row to reuse, whether a finished row exists but ran with other inputs)."""
    if not path.exists():
        return None, False
    row = json.loads(path.read_text())
    if row.get("status") != "ok":
        return None, False
    if row.pop("fingerprint", None) != fingerprint:
        return None, True
    if row.get("budget_label") == ZERO_SHOT:
        row["budget"] = 0  # cells written by an older pretune carried the train size
    return row, False


def _resumable(cell_dir: Path, ft: FinetuneConfig, fingerprint: str) -> bool:
    """A cell that checkpoints (``finetune.train.save_every``) and was cut short resumes from
    its last checkpoint, if that checkpoint came from the same inputs."""
    if not ft.train.save_every:
        return False
    if stamp_matches(cell_dir, fingerprint) and \
            latest_checkpoint(cell_dir / "train" / "checkpoints") is not None:
        print(f"  resuming cell {cell_dir.name} from its last checkpoint", flush=True)
        return True
    write_stamp(cell_dir, fingerprint)
    return False


def run_cell(cfg: Any, cell: Cell, ft: FinetuneConfig, fp: str, task: Any, out: Path,
             features_cache: dict) -> dict[str, Any]:
    """Run one cell (retrying a crash ``cfg.retries`` times), write its JSON atomically and
    return its row. ``task``: the cell's task, loaded once for the whole matrix."""
    cells_dir = out / "cells"
    done: Row | None = None
    for attempt in range(cfg.retries + 1):
        t0 = time.perf_counter()
        try:
            resume = _resumable(cells_dir / cell.key, ft, fp)
            result = finetune(ft, overwrite=not resume, resume=resume, task=task,
                              features_cache=features_cache,
                              run_info=cell_run_info(cfg, cell, ft, out), quiet=True)
            done = result_row(cell, result, task.labels)
            break
        except PretuneError as e:  # a user-facing problem: retrying won't help
            done = failed_row(cell, str(e), t0)
            break
        except Exception as e:  # noqa: BLE001 - a crashed cell is reported, never dropped
            done = failed_row(cell, f"{type(e).__name__}: {e}", t0)
            (cells_dir / f"{cell.key}.traceback.txt").write_text(traceback.format_exc())
            print(f"  cell {cell.key} crashed (attempt {attempt + 1}): {done.error}")
    assert done is not None
    row = done.as_dict()
    _atomic_write_json(cells_dir / f"{cell.key}.json", row | {"fingerprint": fp})
    return row


Todo = tuple[int, Cell, FinetuneConfig, str]  # (1-based place in the plan, cell, config, fp)


def plan_todo(cfg: Any, setup: Setup, out: Path) -> tuple[list[Cell], list[dict], list[Todo]]:
    """(the plan, the finished rows to reuse, the cells to run)."""
    cells = plan_cells(cfg)
    rows: list[dict[str, Any]] = []
    fingerprint_of = Fingerprints(setup)
    todo: list[Todo] = []
    stale = 0
    for i, cell in enumerate(cells, 1):
        ft = cell_config(cfg, cell, setup, out)
        fp = fingerprint_of(cell, ft)
        row, changed = _reusable(out / "cells" / f"{cell.key}.json", fp)
        stale += changed
        if row is not None:
            rows.append(row)
        else:
            todo.append((i, cell, ft, fp))
    if stale:
        print(f"note: {stale} finished cells ran with other inputs (settings, task data or start "
              "weights changed since); they run again", flush=True)
    return cells, rows, todo


class Progress:
    """The one line per finished cell: score, time, cells done, ETA from this run's cells."""

    def __init__(self, n_cells: int, n_todo: int, n_done: int, metrics: dict[str, str]) -> None:
        self.n_cells, self.n_todo, self.done, self.metrics = n_cells, n_todo, n_done, metrics
        self.t0, self.ran = time.perf_counter(), 0

    def __call__(self, i: int, cell: Cell, row: dict[str, Any]) -> None:
        self.ran += 1
        self.done += 1
        metric = self.metrics[cell.task]
        score = row.get(metric, float("nan"))
        left = self.n_todo - self.ran
        per = (time.perf_counter() - self.t0) / self.ran  # wall time per cell, all workers
        eta = f", ETA {duration(left * per)}" if left else ""
        print(f"[{i}/{self.n_cells}] {cell.task} | {cell.start} | {cell.strategy} | "
              f"{cell.budget_label} | seed {cell.seed}: {row['status']} {metric}={score:.3f} "
              f"({row['seconds']:.0f}s) | {self.done}/{self.n_cells} cells done{eta}", flush=True)


def run_cells(cfg: Any, setup: Setup, out: Path, metrics: dict[str, str], workers: int = 1,
              backend: str = "processes") -> list[dict[str, Any]]:
    """Run (or reuse) every cell; each finished cell is written atomically. Returns the rows
    in the plan's order. ``workers`` > 1 (or ``backend="ray"``): cells run concurrently, in
    worker processes or as Ray tasks (``study.workers``)."""
    cells, rows, todo = plan_todo(cfg, setup, out)
    progress = Progress(len(cells), len(todo), len(rows), metrics)
    if backend == "ray" and todo:
        from pretune.study.workers import run_ray

        ran = run_ray(cfg, setup, out, todo, workers, progress, run_cell)
    elif workers > 1 and len(todo) > 1:
        from pretune.study.workers import run_parallel

        ran = run_parallel(cfg, setup, out, todo, workers, progress, run_cell)
    else:
        features_cache: dict = {}  # scikit-learn probe features, shared by a start's cells
        ran = {}
        for i, cell, ft, fp in todo:
            ran[i] = run_cell(cfg, cell, ft, fp, setup.loaded[cell.task], out, features_cache)
            progress(i, cell, ran[i])
    for i in sorted(ran):
        rows.insert(i - 1, ran[i])  # rows keep the plan's order
    return rows


__all__ = ["Progress", "Todo", "plan_todo", "run_cell", "run_cells"]
