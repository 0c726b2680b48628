"""Splits you can trust: which rows of its source a run trained, validated and tested on.

Every text- and token-classification run writes ``split.json`` beside its metrics: the source files, and
for each split the row numbers (0 = the first data row of the file; tagged files: the
sentence's place) and a short hash of each row's text. ``task.split_from=<run dir>`` rebuilds exactly those splits from the same files
(refusing files whose rows changed), so runs and studies compare on the same test rows;
``pretune evaluate`` on the run's own source file scores its test rows only, and warns, with
counts, when the rows it scores overlap the ones it trained on.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from pretune.data.builtin import is_builtin
from pretune.errors import PretuneError

SPLIT_FILE = "split.json"


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def _norm(path: str | list[str] | None) -> Any:
    """A source as compared across runs: absolute paths (builtins as they are)."""
    if path is None:
        return None
    if isinstance(path, list):
        return sorted(_norm(p) for p in path)
    return path if path.startswith("builtin:") else str(Path(path).expanduser().resolve())


def split_record(task_cfg: Any, task: Any) -> dict[str, Any] | None:
    """What ``split.json`` holds for a loaded labeled task (None when rows carry no ids)."""
    if any(getattr(s, "ids", None) is None for s in (task.train, task.val, task.test)):
        return None
    rec: dict[str, Any] = {"path": _norm(task_cfg.path), "validation": _norm(task_cfg.validation),
                           "test": _norm(task_cfg.test), "budget": task.budget}
    for name, split in (("train", task.train), ("val", task.val), ("test", task.test)):
        rec[f"{name}_ids"] = list(split.ids)
        rec[f"{name}_hashes"] = [text_hash(t) for t in split.texts]
    return rec


def write_split(run_dir: Path, task_cfg: Any, task: Any) -> Path | None:
    rec = split_record(task_cfg, task)
    if rec is None:
        return None
    path = run_dir / SPLIT_FILE
    path.write_text(json.dumps(rec, separators=(",", ":")))
    return path


def read_record(run_dir: str | Path, what: str = "task.split_from") -> dict[str, Any]:
    d = Path(run_dir).expanduser()
    for path in (d / SPLIT_FILE, d.parent / SPLIT_FILE):  # a run dir, or its model/ dir
        if path.is_file():
            return json.loads(path.read_text())
    raise PretuneError(f"{what}={run_dir}: no {SPLIT_FILE} there; give the directory of a "
                       "text- or token-classification run (runs/<name>)")


def run_record(model_dir: str | Path) -> dict[str, Any] | None:
    """The split record of the run a model dir belongs to, if it has one."""
    try:
        return read_record(model_dir)
    except PretuneError:
        return None


def same_source(rec: dict[str, Any], path: str | list[str]) -> bool:
    return rec.get("path") == _norm(path)


def saved_split(cfg: Any, full: Any, val_file: Any | None, test_file: Any | None
                ) -> tuple[Any, Any, Any]:
    """(train, validation, test) of ``cfg.split_from``'s run, rebuilt from ``full`` (the rows
    of ``cfg.path``) or from the validation / test files it named."""
    rec = read_record(cfg.split_from)
    for key in ("path", "validation", "test"):
        if rec.get(key) != _norm(getattr(cfg, key)):
            raise PretuneError(f"task.split_from={cfg.split_from} was made with task.{key}="
                               f"{rec.get(key)}, not {getattr(cfg, key)}; use the same files")
    where = {row: i for i, row in enumerate(full.ids)}

    def rows(name: str, source: Any) -> Any:
        ids, hashes = rec[f"{name}_ids"], rec[f"{name}_hashes"]
        if source is not full:  # a split that is a whole file of its own
            return source
        missing = [r for r in ids if r not in where]
        if missing:
            raise PretuneError(f"task.split_from={cfg.split_from}: {cfg.path} no longer has "
                               f"row {missing[0]} (of {len(missing)} missing); the file changed")
        part = full.subset([where[r] for r in ids])
        changed = sum(text_hash(t) != h for t, h in zip(part.texts, hashes, strict=True))
        if changed:
            raise PretuneError(f"task.split_from={cfg.split_from}: {changed} of {len(ids)} "
                               f"{name} rows of {cfg.path} changed since that run; re-split")
        return part

    return rows("train", full), rows("val", val_file if cfg.validation else full), \
        rows("test", test_file if cfg.test else full)


def scored_rows(model_dir: Path, data: str, split: Any, every: bool) -> Any:
    """``split`` (labeled rows or tagged sentences read from ``data``) cut to the run's test
    rows when ``data`` is the run's training source; else a warning when it overlaps them."""
    rec = run_record(model_dir)
    if rec is None or is_builtin(data):  # builtins: read_split already gives the test split
        return split
    if same_source(rec, data) and not every and split.ids is not None:
        test = set(rec["test_ids"])
        keep = [i for i, row in enumerate(split.ids) if row in test]
        print(f"note: {data} is this run's training file: scoring its {len(keep)} test rows "
              f"(of {len(split)}; the others trained or validated the model); rows=all scores "
              "every row", file=sys.stderr)
        return split.subset(keep)
    seen = set(rec["train_hashes"]) | set(rec["val_hashes"])
    overlap = sum(text_hash(t) in seen for t in split.texts)
    if overlap:
        print(f"warning: {overlap} of {len(split)} scored rows of {data} are rows this model "
              "trained or validated on: the score is optimistic", file=sys.stderr)
    return split


__all__ = ["SPLIT_FILE", "read_record", "run_record", "same_source", "saved_split",
           "scored_rows", "split_record", "text_hash", "write_split"]
