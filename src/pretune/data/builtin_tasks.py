"""The builtin labeled tasks: rows read from the embedded packages, with the column that holds
the text and the one that holds the label. ``pretune.data.labeled`` splits them like files."""

from __future__ import annotations

import functools
import json
from typing import Any

from pretune.data.builtin import builtin_path
from pretune.data.rows import read_rows
from pretune.errors import PretuneError

BUILTIN_TASKS = ("rotten-tomatoes", "wiki-topics")


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
    raise PretuneError(
        f"builtin:{name} is not a labeled task; choose one of: "
        + ", ".join(f"builtin:{t}" for t in BUILTIN_TASKS)
    )
