"""Per-example evidence for a report's headline comparisons: where pre-training changed the
answer (the test examples one start gets right and the baseline wrong, and the reverse, with
their text) and the per-class F1 deltas.

Both read what the cells saved: ``cells/<cell>/predictions.jsonl`` (``pretune.evaluate.
examples``) and each row's ``per_class``. Examples are matched by id across the paired seeds
of the comparison. With 0/1 scores (classification, exact entity sets) an example is "right"
for a start when it is right on more than half of the seeds; with graded scores (ROUGE-L,
regression) the examples whose mean score moved most are listed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from pretune.evaluate.examples import PREDICTIONS, read_predictions
from pretune.study.stats import metric_scale
from pretune.study.units import budget
from pretune.study.verdicts import p_phrase

SHOW = 8  # examples listed per direction


def _runs(rows: list[dict], c: dict, start: str) -> dict[int, dict]:
    return {r.get("seed", 0): r for r in rows
            if r["task"] == c["task"] and r["start"] == start and r["strategy"] == c["strategy"]
            and r["budget"] == c["budget"] and r.get("status") == "ok"}


def _predictions(cells: Path | None, runs: dict[int, dict], seeds: list[int]
                 ) -> list[dict[int, dict]] | None:
    """Per seed: id -> record, or None when a cell kept no predictions."""
    if cells is None:
        return None
    out = []
    for s in seeds:
        cell = runs[s].get("cell")
        recs = read_predictions(cells / str(cell) / PREDICTIONS) if cell else None
        if recs is None:
            return None
        out.append({int(r["id"]): r for r in recs})
    return out


def _answers(values: list[Any]) -> str:
    """What a start answered over its seeds: "fresh", or "rotten ×2 · fresh ×1"."""
    counts = Counter(str(v) for v in values).most_common()
    return counts[0][0] if len(counts) == 1 else " · ".join(f"{v} ×{n}" for v, n in counts)


def _spread(order: np.ndarray, labels: list[str]) -> list[int]:
    """``order`` (most decisive first) re-ordered round-robin over the true labels, so the
    examples shown are not all of the first class."""
    by: dict[str, list[int]] = {}
    for j in order:
        by.setdefault(labels[int(j)], []).append(int(j))
    out: list[int] = []
    while any(by.values()):
        for v in by.values():
            if v:
                out.append(v.pop(0))
    return out


def changed_answers(rows: list[dict], c: dict, cells: Path | None) -> list[tuple]:
    """Blocks: where ``c['start']`` and ``c['baseline']`` differ per example, with texts."""
    start, base = c["start"], c["baseline"]
    mine, theirs = _runs(rows, c, start), _runs(rows, c, base)
    seeds = sorted(set(mine) & set(theirs))
    what = (f"{c['task']}: {start} vs {base} ({c['strategy']}, {budget(c)} labels, "
            f"{len(seeds)} paired seed{'s' if len(seeds) != 1 else ''})")
    a_pred = _predictions(cells, mine, seeds) if seeds else None
    b_pred = _predictions(cells, theirs, seeds) if seeds else None
    if not a_pred or not b_pred:
        return [("h3", what), ("p", "No per-example predictions saved for these cells (cells "
                 "from an older pretune keep only their metrics; rerun them to see the "
                 "examples).", "meta")]
    ids = sorted(set.intersection(*(set(p) for p in a_pred + b_pred)))
    if not ids:
        return [("h3", what), ("p", "The two starts' saved predictions share no test example "
                 "id (different test splits?): nothing to compare per example.", "meta")]
    sa = np.array([[p[i]["score"] for p in a_pred] for i in ids], dtype=float)  # [n, seeds]
    sb = np.array([[p[i]["score"] for p in b_pred] for i in ids], dtype=float)
    binary = bool(np.isin(sa, (0.0, 1.0)).all() and np.isin(sb, (0.0, 1.0)).all())
    n_seeds = len(seeds)

    def celltxt(preds: list[dict[int, dict]], i: int, scores: np.ndarray) -> str:
        vals = [p[i]["pred"] for p in preds]
        if binary:
            return f"{_answers(vals)} (right on {int(scores.sum())}/{n_seeds})"
        return f"{_answers(vals)} (score {scores.mean():.2f})"

    if binary:
        ra, rb = sa.mean(axis=1) > 0.5, sb.mean(axis=1) > 0.5
        gap = sa.mean(axis=1) - sb.mean(axis=1)
        true = [str(a_pred[0][i]["true"]) for i in ids]
        # most decisive first (right on every seed vs on none), spread over the true classes
        fixed = np.array(_spread(np.flatnonzero(ra & ~rb)[np.argsort(
            -gap[ra & ~rb], kind="stable")], true), dtype=int)
        broke = np.array(_spread(np.flatnonzero(~ra & rb)[np.argsort(
            gap[~ra & rb], kind="stable")], true), dtype=int)
        k, m = len(fixed), len(broke)
        test = sps.binomtest(k, k + m, 0.5).pvalue if k + m else None
        summary = (f"{start} is right where {base} is wrong on {k:,} of {len(ids):,} test "
                   f"examples, and wrong where {base} is right on {m:,} (right = on most of "
                   f"the {n_seeds} seeds); exact McNemar test on these {k + m:,}: "
                   f"{p_phrase(test)}.")
    else:
        diff = sa.mean(axis=1) - sb.mean(axis=1)
        order = np.argsort(-diff, kind="stable")
        fixed = np.array([j for j in order if diff[j] > 0][:SHOW], dtype=int)
        broke = np.array([j for j in order[::-1] if diff[j] < 0][:SHOW], dtype=int)
        summary = (f"{start} scores higher than {base} on {int((diff > 0).sum()):,} of "
                   f"{len(ids):,} test examples and lower on {int((diff < 0).sum()):,} (mean "
                   f"per-example score over {n_seeds} seeds); the largest changes:")
    headers = ["id", "example", "reference", f"{start}", f"{base}"]
    blocks: list[tuple] = [("h3", what), ("p", summary, "")]
    for title, picked in ((f"{start} right, {base} wrong", fixed),
                          (f"{start} wrong, {base} right", broke)):
        if not len(picked):
            continue
        body = []
        for j in picked[:SHOW]:
            i = ids[int(j)]
            rec = a_pred[0][i]
            body.append([str(i), str(rec["text"]), str(rec["true"]),
                         celltxt(a_pred, i, sa[j]), celltxt(b_pred, i, sb[j])])
        more = f" (first {SHOW} of {len(picked):,})" if len(picked) > SHOW else ""
        blocks += [("p", title + more, "meta"), ("table", headers, body, [])]
    return blocks


def class_deltas(rows: list[dict], c: dict) -> list[tuple]:
    """Blocks: the per-class (per entity type) test F1 of both starts and the difference,
    averaged over the paired seeds."""
    mine, theirs = _runs(rows, c, c["start"]), _runs(rows, c, c["baseline"])
    seeds = [s for s in sorted(set(mine) & set(theirs))
             if isinstance(mine[s].get("per_class"), dict)
             and isinstance(theirs[s].get("per_class"), dict)]
    if not seeds:
        return []
    classes = list(dict.fromkeys(k for s in seeds for k in mine[s]["per_class"]))
    scale = metric_scale("f1")
    body, cls = [], []
    for k in classes:
        a = [mine[s]["per_class"].get(k) for s in seeds]
        b = [theirs[s]["per_class"].get(k) for s in seeds]
        if None in a or None in b:
            continue
        d = float(np.mean(a) - np.mean(b)) * scale
        body.append([str(k), f"{np.mean(b) * scale:.1f}", f"{np.mean(a) * scale:.1f}",
                     f"{d:+.1f}"])
        cls.append("good" if d >= 1.0 else "bad" if d <= -1.0 else "")
    return [("p", f"Per-class F1 (×{scale:g}), mean over {len(seeds)} paired seeds:", "meta"),
            ("table", ["class", c["baseline"], c["start"], "Δ"], body, cls)]
