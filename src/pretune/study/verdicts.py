"""The words of a study: one honest sentence per paired comparison, p-values as text.

Numbers come from ``pretune.study.stats``; the sentences quote the raw p, the p corrected for
multiplicity over every comparison of the report (``stats.correct``: Holm by default), and the
paired effect size d_z, and call a difference significant only on the corrected p.
"""

from __future__ import annotations

from pretune.study.stats import (
    ALPHA,
    LOWER_IS_BETTER,
    budget_words,
    is_significant,
    metric_name,
    metric_scale,
    strategy_words,
)

CORRECTION_NAMES = {"holm": "Holm-adjusted", "bh": "BH-adjusted (FDR)"}


def format_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.2f}" if p >= 0.1 else f"{p:.2g}"


def p_phrase(p: float | None) -> str:
    """"p = 0.03" or "p < 0.001"."""
    txt = format_p(p)
    return f"p {txt}" if txt.startswith("<") else f"p = {txt}"




def _subject(start: str, corpus: str | None) -> str:
    on = f" on {corpus}" if corpus else ""
    variant = start.startswith("pretrained-") and f" ({start.removeprefix('pretrained-')})"
    if start == "pretrained" or variant:
        return f"Pre-training{variant or ''}{on}"
    return f"Continued pre-training{on}" if start == "continued" else f"Starting from {start}"


def _amount(x: float, metric: str, signed: bool = True) -> str:
    if metric_scale(metric) != 1.0:
        v = x * metric_scale(metric)
        return f"{v:+.1f}" if signed else f"{v:.1f}"
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def _unit(metric: str) -> str:
    return " points" if metric_scale(metric) != 1.0 else ""


def verdict(comparison: dict, *, corpus: str | None = None, labels: dict | None = None) -> str:
    """One honest sentence for a ``paired_comparison`` row.

    Significant (corrected p < 0.05 and CI excluding 0): "improved"/"hurt ... by +X.X ± Y.Y
    points (95% CI [a, b]) ... (p = ..., Holm-adjusted p = ... over K comparisons, d_z = ...,
    n = ... seeds)"; ± is the std of the paired
    differences across seeds. Otherwise "no significant difference", or, when even a perfect
    result could not reach p < 0.05 with this many seeds, "too few seeds for significance".
    ``labels`` (a ``labels_saved`` result) adds "worth ≈ N labels" for this budget.
    """
    c, metric = comparison, comparison["metric"]
    subj = _subject(c["start"], corpus)
    what = f"{metric_name(metric)} on {c['task']}"
    vs = "training from scratch" if c["baseline"] == "scratch" else c["baseline"]
    where = (f"at {budget_words(c['budget'], c['budget_label'])} "
             f"with {strategy_words(c['strategy'])}")
    n = c["n"]
    if c["mean_diff"] is None:
        return f"{subj}: no comparison with {vs} for {what} {where} ({c['reason']})."
    unit = _unit(metric)
    diff = _amount(c["mean_diff"], metric)
    if n < 2:
        return (f"{subj}: {what} {where} differs from {vs} by {diff}{unit} on a single seed; "
                f"too few seeds to test (n = 1).")
    spread = f"{diff} ± {_amount(c['std_diff'], metric, signed=False)}{unit}"
    ci = (f"95% CI [{_amount(c['ci_low'], metric, False)}, "
          f"{_amount(c['ci_high'], metric, False)}]")
    test = "" if c["p_method"] == "sign-flip" else f"{c['p_method']} "
    ptxt = f"{test}{p_phrase(c['p'])}{_adjusted(c)}"
    stats_txt = f"{ptxt}{_effect(c)}, n = {n} seeds"
    if is_significant(c):
        better = (c["mean_diff"] < 0) if metric in LOWER_IS_BETTER else (c["mean_diff"] > 0)
        verb = "improved" if better else "hurt"
        if not better:  # "hurt ... by 3.1 points", not "by -3.1"
            spread = spread.lstrip("+-")
        text = f"{subj} {verb} {what} by {spread} ({ci}) vs {vs} {where} ({stats_txt})"
        worth = _worth(labels, c["budget"]) if better else None
        return text + (f"; {worth}." if worth else ".")
    if c["min_p"] >= ALPHA and c["p_method"] == "sign-flip":
        return (f"{subj} changed {what} by {spread} ({ci}) vs {vs} {where} ({stats_txt}): "
                f"too few seeds for significance: the smallest possible p with {n} seeds is "
                f"{format_p(c['min_p'])}.")
    raw_only = c["p"] is not None and c["p"] < ALPHA and c.get("p_adj") is not None and (
        c["ci_low"] > 0 or c["ci_high"] < 0)
    if raw_only:  # a raw p under 0.05 that the correction does not keep
        return (f"{subj} changed {what} by {spread} ({ci}) vs {vs} {where} ({stats_txt}): "
                f"not significant after correcting for {c['family']} comparisons.")
    why = "" if c["ci_low"] > 0 or c["ci_high"] < 0 else "; the CI spans 0"
    return (f"{subj}: no significant difference ({ptxt}{why}) in {what} "
            f"vs {vs} {where}: Δ = {spread} ({ci}{_effect(c)}, n = {n} seeds).")


def _adjusted(c: dict) -> str:
    if c.get("p_adj") is None or c.get("p_adj_method") not in CORRECTION_NAMES:
        return ""
    return (f", {CORRECTION_NAMES[c['p_adj_method']]} {p_phrase(c['p_adj'])} over "
            f"{c['family']} comparisons")


def _effect(c: dict) -> str:
    return f", d_z = {c['d_z']:.2f}" if c.get("d_z") is not None else ""


def _worth(labels: dict | None, budget: int) -> str | None:
    if not labels:
        return None
    for p in labels.get("points", []):
        if p["budget"] != budget:
            continue
        if p["status"] == "saved":
            return f"worth ≈ {p['labels_saved']:,} labels"
        if p["status"] == "not_reached" and p["more_than"] > 0:
            return f"worth more than {p['more_than']:,} labels (not reached)"
    return None


def rank_comparisons(comparisons: list[dict]) -> list[dict]:
    """Most informative first: significant ones, then smallest p, then largest |Δ|."""
    def key(c: dict) -> tuple:
        p = c["p"] if c["p"] is not None else 2.0
        p = c["p_adj"] if c.get("p_adj") is not None else p
        return (not is_significant(c), p, -abs(c["mean_diff"] or 0.0))
    return sorted(comparisons, key=key)


def start_rank(start: str) -> int:
    """The study's own pre-training first, then its variants and continued, then the rest."""
    if start == "pretrained":
        return 0
    return 1 if start == "continued" or start.startswith("pretrained-") else 2


def headlines(comparisons: list[dict]) -> list[dict]:
    """Of one task's comparisons, the most informative of EACH start, the study's own
    pre-training first: a strong public checkpoint does not hide the answer for ours."""
    ranked = rank_comparisons(comparisons)
    firsts: dict[str, dict] = {}
    for c in ranked:
        firsts.setdefault(c["start"], c)
    return sorted(firsts.values(), key=lambda c: (start_rank(c["start"]), ranked.index(c)))
