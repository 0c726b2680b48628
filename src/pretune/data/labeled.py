"""Labeled tasks: read files or builtins, infer the task type, map labels, make splits.

The test split of a task depends only on the task config (files + ``split_seed``), never on
the label budget or the run seed, so every cell of a study is scored on the same examples.
The label budget is a stratified subsample of the training split drawn with the run seed.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pretune.config import TaskConfig, config_hash
from pretune.data.builtin import is_builtin
from pretune.data.builtin_tasks import builtin_info, builtin_rows
from pretune.data.class_files import class_files, classes_name, names_classes, read_class_rows
from pretune.data.rows import check_budget, name_of, read_rows
from pretune.data.split_ids import saved_split
from pretune.errors import PretuneError

TaskType = Literal["single_label", "multi_label", "regression"]
_REGRESSION_MIN_DISTINCT = 20  # fewer distinct numeric values than this: treat as classes


@dataclass
class Split:
    """One split: parallel lists. ``labels`` holds int ids (single-label), multi-hot float
    lists (multi-label) or floats (regression)."""

    texts: list[str]
    labels: list[Any]
    pairs: list[str] | None = None
    ids: list[int] | None = None  # each example's row number in its source (0 = first row)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: list[int] | np.ndarray) -> Split:
        pairs = [self.pairs[i] for i in idx] if self.pairs is not None else None
        ids = [self.ids[i] for i in idx] if self.ids is not None else None
        return Split([self.texts[i] for i in idx], [self.labels[i] for i in idx], pairs, ids)


@dataclass
class LabeledTask:
    name: str
    type: TaskType
    labels: list[str]  # label names in id order; [] for regression
    train: Split
    val: Split
    test: Split
    majority_baseline: float  # accuracy (subset accuracy for multi-label) of the majority guess
    fingerprint: str = ""
    budget: int | None = None  # the label budget already applied to ``train`` (None = all)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return 1 if self.type == "regression" else len(self.labels)


# --------------------------------------------------------------------------- readers


# --------------------------------------------------------------------------- raw -> arrays


@dataclass
class _Raw:
    texts: list[str]
    pairs: list[str] | None
    labels: list[Any]  # raw label values (str / number / list)
    source: str
    ids: list[int] = field(default_factory=list)  # row numbers of the kept rows


def _extract(rows: list[dict], cols: list[str], source: str, text_field: str,
             pair_field: str | None, label_field: str | None) -> _Raw:
    for fld, key in ((text_field, "text_field"), (pair_field, "text_pair_field"),
                     (label_field, "label_field")):
        if fld is not None and fld not in cols:
            raise PretuneError(
                f"{source} has no column '{fld}' (columns: {', '.join(map(str, cols))}); "
                f"set task.{key}"
            )
    texts, pairs, labels, empty, ids = [], [] if pair_field else None, [], 0, []
    for i, row in enumerate(rows):
        text = row.get(text_field)
        text = "" if text is None else str(text)
        if not text.strip():
            empty += 1
            continue
        texts.append(text)
        ids.append(i)
        if pairs is not None:
            pairs.append("" if row.get(pair_field) is None else str(row[pair_field]))
        labels.append(row.get(label_field) if label_field else None)
    if not texts:
        raise PretuneError(f"{source}: every row has an empty '{text_field}'; check task.text_field")
    if empty:
        warnings.warn(f"{source}: dropped {empty} rows with an empty '{text_field}'", stacklevel=3)
    return _Raw(texts, pairs, labels, source, ids)


def _as_label_list(value: Any, sep: str) -> list[str]:
    """A multi-label cell: a list, a JSON list string, or names joined by ``sep``."""
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    s = "" if value is None else str(value).strip()
    if s.startswith("["):
        try:
            parsed = json.loads(s)
            if isinstance(parsed, list):
                return [str(v) for v in parsed]
        except json.JSONDecodeError:
            pass
    return [part.strip() for part in s.split(sep) if part.strip()]


def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int | float):
        return True
    try:
        float(str(v))
        return True
    except ValueError:
        return False


def infer_type(values: list[Any], sep: str) -> TaskType:
    """numeric with many distinct values -> regression; lists or ``sep`` -> multi-label."""
    present = [v for v in values if v is not None and str(v) != ""]
    numeric = bool(present) and all(_is_number(v) for v in present)
    if numeric and len({float(v) for v in present}) >= _REGRESSION_MIN_DISTINCT:
        return "regression"
    if any(isinstance(v, list | tuple) for v in present):
        return "multi_label"
    if any(sep in str(v) or str(v).strip().startswith("[") for v in present):
        return "multi_label"
    return "single_label"


def _label_name(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))  # 1.0 from parquet and "1" from csv are the same class
    return str(v).strip()


def _encode(raw: _Raw, kind: TaskType, names: list[str] | None, sep: str) -> list[Any]:
    if kind == "regression":
        out = []
        for i, v in enumerate(raw.labels):
            if not _is_number(v):
                raise PretuneError(
                    f"{raw.source} row {i + 1}: regression target {v!r} is not a number; "
                    "fix the value or set task.type"
                )
            out.append(float(v))
        return out
    index = {n: i for i, n in enumerate(names or [])}
    if kind == "multi_label":
        out = []
        for v in raw.labels:
            hot = [0.0] * len(index)
            for lab in _as_label_list(v, sep):
                hot[index[lab]] = 1.0
            out.append(hot)
        return out
    for i, v in enumerate(raw.labels):
        if v is None or str(v).strip() == "":
            raise PretuneError(f"{raw.source} row {i + 1}: empty label; fill it or drop the row")
    return [index[_label_name(v)] for v in raw.labels]


def _names_in(raw: _Raw, kind: TaskType, sep: str) -> set[str]:
    if kind == "multi_label":
        return {lab for v in raw.labels for lab in _as_label_list(v, sep)}
    return {_label_name(v) for v in raw.labels if v is not None and str(v).strip() != ""}


# --------------------------------------------------------------------------- splits & budget


def _strata(labels: list[Any], kind: TaskType) -> list[Any] | None:
    """Stratification key per example (None when it would not be valid)."""
    if kind == "single_label":
        keys = list(labels)
    elif kind == "multi_label":
        keys = ["".join("1" if x else "0" for x in hot) for hot in labels]
    else:  # regression: quartile bins of the target
        arr = np.asarray(labels, dtype=float)
        keys = list(np.digitize(arr, np.quantile(arr, [0.25, 0.5, 0.75])))
    counts = Counter(keys)
    return keys if min(counts.values()) >= 2 and len(counts) > 1 else None


def held_count(size: int | float, n: int) -> int:
    """Rows a held-out ``size`` takes from ``n`` (scikit-learn's rule: a fraction rounds up)."""
    return size if isinstance(size, int) else int(np.ceil(size * n))


def _split(split: Split, size: int | float, seed: int, kind: TaskType, what: str = "test"
           ) -> tuple[Split, Split]:
    """(kept, held out ``size``), stratified by label. A single-label class with one example
    stays in training (it cannot be in both), so every class is learnable."""
    from sklearn.model_selection import train_test_split

    n, n_held = len(split), held_count(size, len(split))
    if not 0 < n_held < n:
        fix = "task.test_size / task.test_fraction, or give a task.test file" if what == "test" \
            else "task.val_fraction, or give a task.validation file"
        raise PretuneError(f"{n} labeled rows are too few to hold out a {what} split (it would "
                           f"take {n_held}); add rows, or change {fix}")
    idx = np.arange(n)
    rare: list[int] = []
    if kind == "single_label" and what != "budget":
        counts = Counter(split.labels)
        rare = [i for i in idx if counts[split.labels[i]] < 2]
        if rare:
            idx = np.setdiff1d(idx, rare)
            if len(idx) <= n_held:
                raise PretuneError(f"{n} labeled rows are too few to hold out {n_held} for {what}"
                                   f" with {len(rare)} classes of one example each; add rows")
            size = n_held  # of the whole split, taken from the classes that can give some
    strata = _strata([split.labels[i] for i in idx], kind)
    try:
        keep, held = train_test_split(idx, test_size=size, random_state=seed, stratify=strata)
    except ValueError:  # too few examples per class for the held-out size: plain random split
        keep, held = train_test_split(idx, test_size=size, random_state=seed)
    return split.subset(sorted([*keep, *rare])), split.subset(sorted(held))


def check_classes_in_train(task: LabeledTask) -> None:
    """Every class must have a training example (a head for a class never seen is noise)."""
    if task.type != "single_label":
        return
    counts = Counter(task.train.labels)
    missing = [name for i, name in enumerate(task.labels) if not counts.get(i)]
    if missing:
        raise PretuneError(
            f"{task.name}: after holding out test ({len(task.test)}) and validation "
            f"({len(task.val)}) rows, training has {len(task.train)} rows and no example of "
            f"{', '.join(missing[:5])}; add rows or lower task.test_size / task.val_fraction")
    rare = [task.labels[i] for i, c in counts.items() if c == 1]
    if rare:
        print(f"note: {task.name}: {len(rare)} class(es) with a single example "
              f"({', '.join(rare[:5])}): kept in training, absent from validation and test",
              file=sys.stderr)


def apply_budget(task: LabeledTask, budget: int | None, seed: int) -> LabeledTask:
    """Stratified subsample of ``budget`` training examples, at least one per class."""
    if budget is None:
        return task
    n = len(task.train)
    check_budget(budget, n, "examples", task.name)
    if budget == n:
        return replace(task, budget=budget)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    if task.type != "regression":
        hot = _multi_hot(task)
        if budget < hot.shape[1]:
            raise PretuneError(
                f"task.budget={budget} is smaller than the {hot.shape[1]} classes of {task.name}; "
                "use at least one example per class"
            )
        # One random example per class first so no class is missing from a small budget.
        for c in rng.permutation(hot.shape[1]):
            if chosen and hot[chosen, c].sum() > 0:
                continue  # already covered (multi-label rows cover several classes)
            candidates = np.setdiff1d(np.flatnonzero(hot[:, c]), chosen)
            if len(candidates):
                chosen.append(int(rng.choice(candidates)))
    remaining = budget - len(chosen)
    if remaining > 0:
        rest_idx = np.setdiff1d(np.arange(n), chosen)
        if remaining >= len(rest_idx):
            picked = rest_idx
        else:
            # Stratified draw of the rest; the split's "held" part is the sample we keep.
            rest = Split([str(i) for i in rest_idx], [task.train.labels[i] for i in rest_idx])
            _, held = _split(rest, remaining, seed, task.type, "budget")
            picked = np.asarray([int(t) for t in held.texts])
        chosen.extend(int(i) for i in picked)
    return replace(task, train=task.train.subset(sorted(chosen)), budget=budget)


def _multi_hot(task: LabeledTask) -> np.ndarray:
    if task.type == "multi_label":
        return np.asarray(task.train.labels, dtype=float).reshape(len(task.train), -1)
    hot = np.zeros((len(task.train), len(task.labels)))
    hot[np.arange(len(task.train)), task.train.labels] = 1
    return hot


def majority_baseline(task_type: TaskType, train: Split, test: Split) -> float:
    """Accuracy on ``test`` of always predicting the most frequent training label (set)."""
    if task_type == "regression" or not len(test):
        return float("nan")
    key = (lambda y: tuple(y)) if task_type == "multi_label" else (lambda y: y)
    majority = Counter(key(y) for y in train.labels).most_common(1)[0][0]
    return float(np.mean([key(y) == majority for y in test.labels]))


# --------------------------------------------------------------------------- entry points


def is_builtin_path(path: str | list[str]) -> bool:
    return isinstance(path, str) and is_builtin(path)


def task_name(cfg: TaskConfig) -> str:
    return classes_name(cfg.path) if names_classes(cfg.path) else name_of(cfg.path)


def task_fingerprint(cfg: TaskConfig) -> str:
    """Hash of everything that decides the splits (not the budget): files' size/mtime too."""
    stats = []
    train = class_files(cfg.path) if names_classes(cfg.path) else [cfg.path]
    for p in (*train, cfg.validation, cfg.test):
        if p and not is_builtin(str(p)) and Path(p).is_file():
            st = Path(p).stat()
            stats.append(f"{p}:{st.st_size}:{int(st.st_mtime)}")
    base = config_hash(cfg, exclude={"budget", "max_length"})
    return config_hash(TaskConfig(path="|".join([base, *stats])))


def _read(cfg: TaskConfig, path: str | list[str]) -> _Raw:
    if names_classes(path):  # one file per class, or a folder of class folders
        rows, source = read_class_rows(path, cfg.encoding)
        return _extract(rows, ["text", "label"], source, "text", None, "label")
    if is_builtin(path):
        name = path.removeprefix("builtin:")
        rows, text_f, label_f = builtin_rows(name)
        return _extract(rows, [text_f, label_f], path, text_f, None, label_f)
    rows, cols = read_rows(path, cfg.format, cfg.encoding)
    return _extract(rows, cols, path, cfg.text_field, cfg.text_pair_field, cfg.label_field)


def load_task(cfg: TaskConfig, seed: int = 0) -> LabeledTask:
    """Read, type, split and (if ``cfg.budget``) subsample a labeled task."""
    raw_train = _read(cfg, cfg.path)
    raw_val = _read(cfg, cfg.validation) if cfg.validation else None
    raw_test = _read(cfg, cfg.test) if cfg.test else None
    kind: TaskType = "single_label" if is_builtin_path(cfg.path) else (
        infer_type(raw_train.labels, cfg.label_sep) if cfg.type == "auto" else cfg.type
    )
    names: list[str] = []
    if kind != "regression":
        names = sorted(_names_in(raw_train, kind, cfg.label_sep))
        for other in (raw_val, raw_test):
            if other is not None:
                unseen = sorted(_names_in(other, kind, cfg.label_sep) - set(names))
                if unseen:
                    raise PretuneError(
                        f"{other.source} has labels never seen in training ({cfg.path}): "
                        f"{', '.join(unseen[:10])}; add training examples or drop those rows"
                    )
        if kind == "single_label" and len(names) < 2:
            raise PretuneError(
                f"{cfg.path}: the training labels have a single class ({', '.join(names) or 'none'}); "
                "a classifier needs at least two (check task.label_field)"
            )
    full = Split(raw_train.texts, _encode(raw_train, kind, names, cfg.label_sep), raw_train.pairs,
                 raw_train.ids)

    def to_split(raw: _Raw) -> Split:
        return Split(raw.texts, _encode(raw, kind, names, cfg.label_sep), raw.pairs, raw.ids)

    if cfg.split_from:  # the rows of a saved split (another run's), by row number
        train, val, test = saved_split(cfg, full, to_split(raw_val) if raw_val else None,
                                       to_split(raw_test) if raw_test else None)
    elif raw_test is not None:
        train, test = full, to_split(raw_test)
    else:
        size: int | float = cfg.test_size or cfg.test_fraction
        if isinstance(size, int) and size >= len(full):
            raise PretuneError(f"task.test_size={size} leaves no training data ({len(full)} rows)")
        train, test = _split(full, size, cfg.split_seed, kind)
    if cfg.split_from:
        pass
    elif raw_val is not None:
        val = to_split(raw_val)
    elif cfg.val_fraction > 0:
        train, val = _split(train, cfg.val_fraction, cfg.split_seed + 1, kind, "validation")
    else:
        val = Split([], [], [] if train.pairs is not None else None)
    task = LabeledTask(
        name=task_name(cfg), type=kind, labels=names, train=train, val=val, test=test,
        majority_baseline=majority_baseline(kind, train, test), fingerprint=task_fingerprint(cfg),
        info=builtin_info(cfg.path) if is_builtin_path(cfg.path) else {},
    )
    check_classes_in_train(task)
    return apply_budget(task, cfg.budget, seed)


def read_split(path: str, cfg: TaskConfig, task_type: TaskType, labels: list[str]) -> Split:
    """All rows of one labeled file (or a builtin task's test split), encoded with a FIXED
    label list (a trained model's): labels outside it are an error naming them."""
    if is_builtin(path):
        task = load_task(cfg.model_copy(update={"path": path, "budget": None}))
        if task.type != task_type or task.labels != labels:
            raise PretuneError(
                f"{path} has labels {task.labels} but the model predicts {labels}; "
                "evaluate it on the task it was trained for"
            )
        return task.test
    raw = _read(cfg, path)
    if task_type != "regression":
        unseen = sorted(_names_in(raw, task_type, cfg.label_sep) - set(labels))
        if unseen:
            raise PretuneError(
                f"{path} has labels the model was not trained on: {', '.join(unseen[:10])} "
                f"(model labels: {', '.join(labels[:20])})"
            )
    return Split(raw.texts, _encode(raw, task_type, labels, cfg.label_sep), raw.pairs, raw.ids)
