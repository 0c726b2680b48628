"""Human units for every number a report shows: 278.7k tokens, 4.2 min, 1.3 PFLOP."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pretune.study.stats import metric_scale

_SI = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_COUNT = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))


def _blank(v: Any) -> bool:
    return v is None or v == ""


def count(v: Any, unit: str = "") -> str:
    """278668 -> "278.7k" (+ " tokens"); under 1,000 as is."""
    if _blank(v):
        return "–"
    v = float(v)
    for div, suffix in _COUNT:
        if abs(v) >= div:
            txt = f"{v / div:.1f}".removesuffix(".0") + suffix
            break
    else:
        txt = f"{v:,.0f}"
    return f"{txt} {unit}".rstrip()


def flops(v: Any) -> str:
    """1.3e15 -> "1.3 PFLOP"."""
    if _blank(v):
        return "–"
    v = float(v)
    for div, prefix in _SI:
        if abs(v) >= div:
            return f"{v / div:.1f} {prefix}FLOP"
    return f"{v:.0f} FLOP"


def seconds(v: Any) -> str:
    """12.34 -> "12.3 s", 252 -> "4.2 min", 7200 -> "2.0 h"."""
    if _blank(v):
        return "–"
    v = float(v)
    if v < 120:
        return f"{v:.1f} s"
    return f"{v / 60:.1f} min" if v < 7200 else f"{v / 3600:.1f} h"


def time_axis(max_seconds: float) -> tuple[float, str]:
    """(divisor, unit) for an axis of durations up to ``max_seconds``."""
    if max_seconds < 120:
        return 1.0, "s"
    return (60.0, "min") if max_seconds < 7200 else (3600.0, "h")


# --------------------------------------------------------------------------- scores


def score(v: Any, metric: str) -> str:
    """A score on the report's one scale: ×100 (points) for bounded metrics, else as is."""
    if _blank(v):
        return "–"
    k = metric_scale(metric)
    return f"{float(v) * k:.1f}" if k != 1 else f"{float(v):.4g}"


def signed(v: Any, metric: str) -> str:
    if _blank(v):
        return "–"
    k = metric_scale(metric)
    return f"{float(v) * k:+.1f}" if k != 1 else f"{float(v):+.4g}"


def mean_cell(s: dict, metric: str) -> str:
    """"71.3 ± 1.2 [69.9, 72.6]": mean ± std [95% CI] of a summary row."""
    txt = score(s["mean"], metric)
    if s.get("std") is not None:
        txt += f" ± {score(s['std'], metric)}"
    if s.get("ci_low") is not None:
        txt += f" [{score(s['ci_low'], metric)}, {score(s['ci_high'], metric)}]"
    return txt


def budget(row: dict) -> str:
    if row.get("budget_label") == "all":
        return f"all ({row['budget']:,})" if row["budget"] > 0 else "all"
    return f"{row['budget']:,}"


def maybe_json(v: Any) -> Any:
    """A list/dict column read back from results.csv (JSON text) as the value it was."""
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def first_order(values: Any) -> dict[str, int]:
    """First-appearance order (the config's order), used to sort table rows."""
    out: dict[str, int] = {}
    for v in values:
        out.setdefault(v, len(out))
    return out


def slug(s: str) -> str:
    """A file/id-safe name. Spaces and punctuation become "_"; a name with other characters
    (情感, 新闻) also gets a short hash of itself, so two such tasks never share a plot file."""
    out = re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_") or "x"
    if re.search(r"[^A-Za-z0-9_.\- :/()]", s):
        out += "-" + hashlib.sha1(s.encode("utf-8")).hexdigest()[:6]
    return out
