"""Statistics of a study: per-cell summaries, paired comparisons, labels saved, verdicts.

Rows are the study's per-run result dicts (``task``, ``start``, ``strategy``, ``budget``,
``budget_label``, ``seed``, ``status``, metric keys...). The design is paired: for one
task/strategy/budget/seed every start sees the same training subsample and the same test
split, so starts are compared through per-seed differences, not two independent samples.
Only numpy and scipy: everything here is small (a handful of seeds per cell).
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy import stats as sps

N_BOOT = 10_000
BOOT_SEED = 0
EXACT_MAX_N = 16  # exact sign-flip test enumerates 2^n flips up to here (65,536 x 16)
N_MONTE_CARLO = 100_000
ALPHA = 0.05

LOWER_IS_BETTER = {"mse", "mae", "rmse", "loss", "log_loss", "perplexity"}
# Metrics bounded in [-1, 1] or [0, 1]: reported in points (x100).
POINT_METRICS = {
    "accuracy", "macro_f1", "micro_f1", "weighted_f1", "f1", "roc_auc", "mcc", "r2", "chrf",
    "precision", "recall", "macro_precision", "macro_recall", "balanced_accuracy", "bleu",
    "token_accuracy", "rouge1", "rouge2", "rougeL", "exact_match"}
METRIC_NAMES = {
    "accuracy": "accuracy", "macro_f1": "macro-F1", "micro_f1": "micro-F1", "mse": "MSE",
    "weighted_f1": "weighted-F1", "roc_auc": "ROC-AUC", "mcc": "MCC", "r2": "R²", "mae": "MAE",
    "rmse": "RMSE", "balanced_accuracy": "balanced accuracy", "f1": "entity F1", "chrf": "chrF",
    "token_accuracy": "token accuracy", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L", "bleu": "BLEU", "exact_match": "exact match"}
STRATEGY_NAMES = {
    "full": "full fine-tuning", "linear-probe": "a linear probe", "partial": "partial fine-tuning",
    "gradual": "gradual unfreezing", "llrd": "layer-wise LR decay", "lora": "LoRA",
    "prompt": "prompting",
}


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def metric_scale(metric: str) -> float:
    """Multiplier for display: bounded scores are shown in points (x100)."""
    return 100.0 if metric in POINT_METRICS else 1.0


def _value(row: dict, metric: str) -> float | None:
    v = row.get(metric)
    if v is None or row.get("status", "ok") != "ok":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def normalize_budgets(rows: Iterable[dict]) -> list[dict]:
    """Copies of ``rows`` where every "all" run of a task carries the same budget.

    "all" runs carry their actual train size; should two starts disagree by a few examples
    (e.g. a tokenizer dropping empty rows) they must still land in one paired cell.
    """
    rows = [dict(r) for r in rows]
    all_size: dict[str, int] = {}
    for r in rows:
        if r.get("budget_label") == "all" and r.get("budget") is not None:
            all_size[r["task"]] = max(all_size.get(r["task"], 0), int(r["budget"]))
    for r in rows:
        if r.get("budget_label") == "all" and r["task"] in all_size:
            r["budget"] = all_size[r["task"]]
        r["budget"] = int(r["budget"]) if r.get("budget") is not None else 0
        r.setdefault("budget_label", str(r["budget"]))
        if r["budget_label"] is None:
            r["budget_label"] = str(r["budget"])
    return rows


def bootstrap_ci(x: np.ndarray, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> tuple[float, float]:
    """95% percentile bootstrap CI of the mean of ``x`` (shape [n]); seeded, vectorised."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))  # [n_boot, n]
    means = x[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    # A mean of resampled values lies in [min, max]; clip float round-off (0.8000000000000002).
    return float(np.clip(lo, x.min(), x.max())), float(np.clip(hi, x.min(), x.max()))


def sign_flip_pvalue(d: np.ndarray) -> tuple[float, str]:
    """Two-sided sign-flip permutation p of mean(d) = 0: exact for n <= 16, else Monte Carlo.

    Under H0 each paired difference is equally likely to have either sign, so the null
    distribution of the mean is that of mean(s * d) over sign vectors s in {-1, 1}^n.
    """
    n = len(d)
    obs = abs(d.mean())
    tol = 1e-12 * max(1.0, obs)
    if n <= EXACT_MAX_N:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1  # [2^n, n]
        signs = 1 - 2 * bits
        null = np.abs((signs * d).mean(axis=1))
        return float(np.mean(null >= obs - tol)), "exact"
    rng = np.random.default_rng(BOOT_SEED)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(N_MONTE_CARLO, n))
    null = np.abs((signs * d).mean(axis=1))
    hits = int(np.sum(null >= obs - tol))
    return (hits + 1) / (N_MONTE_CARLO + 1), "monte-carlo"


def smallest_p(n: int) -> float:
    """Smallest two-sided sign-flip p possible with n pairs (all flips but +/- observed)."""
    return min(1.0, 2.0 / 2**n) if n >= 1 else 1.0


def _group(rows: list[dict], metric: str) -> dict[tuple, dict[int, float]]:
    """(task, start, strategy, budget) -> {seed: value} over rows that have the metric."""
    cells: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in rows:
        v = _value(r, metric)
        if v is not None:
            cells[(r["task"], r["start"], r["strategy"], r["budget"])][r.get("seed", 0)] = v
    return cells


def _labels(rows: list[dict]) -> dict[tuple, str]:
    return {(r["task"], r["budget"]): str(r["budget_label"]) for r in rows}


def summarize(rows: Iterable[dict], metric: str) -> list[dict]:
    """Per (task, start, strategy, budget): n, mean, std (ddof=1), 95% bootstrap CI, min, max.

    Failed runs and runs without ``metric`` are left out here (the report lists them)."""
    rows = normalize_budgets(rows)
    labels = _labels(rows)
    out = []
    for (task, start, strategy, budget), by_seed in sorted(_group(rows, metric).items()):
        x = np.array([by_seed[s] for s in sorted(by_seed)], dtype=float)
        n = len(x)
        ci = bootstrap_ci(x) if n >= 2 else (None, None)
        out.append({
            "task": task, "start": start, "strategy": strategy, "budget": budget,
            "budget_label": labels[(task, budget)], "metric": metric, "n": n,
            "mean": float(x.mean()), "std": float(x.std(ddof=1)) if n >= 2 else None,
            "ci_low": ci[0], "ci_high": ci[1], "min": float(x.min()), "max": float(x.max()),
            "seeds": sorted(by_seed),
        })
    return out


def paired_comparison(rows: Iterable[dict], metric: str, baseline: str = "scratch") -> list[dict]:
    """For each start != baseline and (task, strategy, budget): the paired difference.

    ``mean_diff`` = mean over matched seeds of (start - baseline); bootstrap CI of that mean;
    ``p_perm`` (exact sign-flip permutation, the headline) and ``p_ttest`` (scipy ttest_rel).
    With fewer than 2 matched seeds the p-values are None and ``reason`` says why.
    """
    rows = normalize_budgets(rows)
    labels = _labels(rows)
    cells = _group(rows, metric)
    out = []
    for (task, start, strategy, budget), mine in sorted(cells.items()):
        if start == baseline:
            continue
        base = cells.get((task, baseline, strategy, budget))
        if base is None:  # the baseline never ran this strategy/budget (e.g. zero-shot)
            continue
        seeds = sorted(set(mine) & set(base))
        res: dict[str, Any] = {
            "task": task, "start": start, "baseline": baseline, "strategy": strategy,
            "budget": budget, "budget_label": labels[(task, budget)], "metric": metric,
            "n": len(seeds), "seeds": seeds, "mean_diff": None, "std_diff": None,
            "ci_low": None, "ci_high": None, "p_perm": None, "p_perm_method": None,
            "p_ttest": None, "t_stat": None, "min_p": smallest_p(len(seeds)), "reason": None,
            "start_mean": None, "baseline_mean": None, "p": None, "p_method": None,
            "d_z": None, "p_adj": None, "p_adj_method": None, "family": None,
        }
        out.append(res)
        if not seeds:
            res["reason"] = f"no seed has both {start} and {baseline} results"
            continue
        a = np.array([mine[s] for s in seeds])
        b = np.array([base[s] for s in seeds])  # type: ignore[index]
        d = a - b  # [n] paired differences
        res.update(mean_diff=float(d.mean()), start_mean=float(a.mean()),
                   baseline_mean=float(b.mean()))
        if len(seeds) < 2:
            res["reason"] = "only 1 matched seed: no spread, no test"
            continue
        lo, hi = bootstrap_ci(d)
        p_perm, method = sign_flip_pvalue(d)
        res.update(std_diff=float(d.std(ddof=1)), ci_low=lo, ci_high=hi, p_perm=p_perm,
                   p_perm_method=method, d_z=effect_size(d))
        if np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())):  # equal up to round-off
            res["reason"] = "identical differences on every seed: t-test undefined"
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                t = sps.ttest_rel(a, b)
            res.update(t_stat=float(t.statistic), p_ttest=float(t.pvalue))
        # Headline p: the exact sign-flip test when it can reach ALPHA with this many seeds,
        # else the paired t-test (with 3 seeds the sign-flip p is never below 0.25).
        if res["min_p"] < ALPHA or res["p_ttest"] is None:
            res.update(p=res["p_perm"], p_method="sign-flip")
        else:
            res.update(p=res["p_ttest"], p_method="paired t-test")
    return out


# --------------------------------------------------------------------------- labels saved


def _interp_log(curve: list[tuple[int, float]], b: float) -> float | None:
    """Value of a (budget, score) curve at budget b, linear in log(budget); None outside."""
    for (b0, m0), (b1, m1) in zip(curve, curve[1:], strict=False):
        if b0 <= b <= b1:
            t = (math.log(b) - math.log(b0)) / (math.log(b1) - math.log(b0))
            return m0 + t * (m1 - m0)
    for bi, mi in curve:
        if bi == b:
            return mi
    return None


def _crossing(curve: list[tuple[int, float]], b: int, b_score: float, target: float) -> float | None:
    """First budget > b where the curve (starting at (b, b_score)) reaches ``target``."""
    prev_b, prev_m = b, b_score
    for bi, mi in curve:
        if bi <= b:
            continue
        if mi >= target:
            t = (target - prev_m) / (mi - prev_m)
            return math.exp(math.log(prev_b) + t * (math.log(bi) - math.log(prev_b)))
        prev_b, prev_m = bi, mi
    return None


def labels_saved(rows: Iterable[dict], metric: str, start: str, baseline: str = "scratch", *,
                 task: str, strategy: str) -> dict:
    """How many labels is ``start`` worth, read off the mean data-efficiency curves.

    For each budget b of ``start`` with mean score s, find b' where the baseline's curve
    (linear in log budget) first reaches s: labels saved = b' - b, ratio = b'/b. Not reached
    within the measured range -> "more than <max budget>"; start not better at b -> 0 / none.
    """
    rows = [r for r in rows if r.get("task") == task and r.get("strategy") == strategy]
    summ = summarize(rows, metric)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0  # compare as "higher is better"
    # zero-shot runs (budget 0) are not points of a curve in log(budget)
    base = [(s["budget"], sign * s["mean"]) for s in summ if s["start"] == baseline and s["budget"] > 0]
    mine = [s for s in summ if s["start"] == start and s["budget"] > 0]
    points = []
    for s in mine:
        b, score, label = s["budget"], sign * s["mean"], s["budget_label"]
        p: dict[str, Any] = {
            "budget": b, "budget_label": label, "start_score": s["mean"], "baseline_score": None,
            "status": "unknown", "equivalent_budget": None, "labels_saved": None, "ratio": None,
        }
        at_b = _interp_log(base, b)
        if at_b is None:
            p["text"] = f"at {budget_words(b, label)}: {baseline} was not measured around it"
        elif score <= at_b:
            p.update(baseline_score=sign * at_b, status="none", labels_saved=0, ratio=1.0)
            p["text"] = f"at {budget_words(b, label)}: none ({start} is not better)"
        else:
            p["baseline_score"] = sign * at_b
            b2 = _crossing(base, b, at_b, score)
            if b2 is None:
                top = max(bi for bi, _ in base)
                p.update(status="not_reached", more_than=top - b, equivalent_more_than=top)
                if top > b:
                    p["text"] = (f"at {budget_words(b, label)}: worth more than {top - b:,} "
                                 f"labels ({baseline} needs more than {top:,}, not reached)")
                else:  # b is the largest budget measured: nothing to extrapolate to
                    p["text"] = (f"at {budget_words(b, label)}: {baseline} does not reach it "
                                 "within the measured budgets (not reached)")
            else:
                p.update(status="saved", equivalent_budget=round(b2), labels_saved=round(b2 - b),
                         ratio=b2 / b)
                p["text"] = (f"at {budget_words(b, label)}: worth ≈ {round(b2 - b):,} labels "
                             f"({baseline} needs ≈ {round(b2):,}, {b2 / b:.1f}×)")
        points.append(p)
    who = f"{start} vs {baseline} ({strategy_words(strategy)}, {metric_name(metric)}, {task})"
    sentence = f"{who}: " + ("; ".join(p["text"] for p in points) if points else "no data") + "."
    return {"task": task, "start": start, "baseline": baseline, "strategy": strategy,
            "metric": metric, "points": points, "sentence": sentence}


# --------------------------------------------------------------------------- verdicts


def strategy_words(strategy: str) -> str:
    return STRATEGY_NAMES.get(strategy, strategy)


def budget_words(budget: int, label: str | None) -> str:
    if label == "all":
        return f"all {budget:,} labels"
    return "zero-shot (no labels)" if budget <= 0 else f"{budget:,} labels"


def effect_size(d: np.ndarray) -> float | None:
    """Paired Cohen's d_z: mean / std (ddof=1) of the paired differences; None when they do
    not vary (no spread to standardise by)."""
    sd = float(d.std(ddof=1)) if len(d) >= 2 else 0.0
    return float(d.mean() / sd) if sd > 1e-12 * max(1.0, float(np.abs(d).max())) else None


def adjust_pvalues(ps: list[float], method: str) -> list[float]:
    """p-values corrected over their family: ``holm`` (Holm-Bonferroni step-down: controls
    the chance of any false claim) or ``bh`` (Benjamini-Hochberg, scipy: the expected share
    of false claims); ``none`` leaves them."""
    if method == "none" or not ps:
        return list(ps)
    if method == "bh":
        return [float(v) for v in sps.false_discovery_control(np.asarray(ps), method="bh")]
    m = len(ps)
    order = np.argsort(ps, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):  # (m - rank) * p_(rank), made monotone, capped at 1
        running = max(running, min(1.0, (m - rank) * ps[i]))
        adj[i] = running
    return [float(v) for v in adj]


def correct(comparisons: list[dict], method: str = "holm") -> list[dict]:
    """Set ``p_adj`` (and ``p_adj_method``, ``family``: how many were tested) on every
    comparison with a p-value, correcting over all of them (one report = one family)."""
    tested = [c for c in comparisons if c.get("p") is not None]
    for c, q in zip(tested, adjust_pvalues([c["p"] for c in tested], method), strict=True):
        c.update(p_adj=q if method != "none" else None,
                 p_adj_method=method if method != "none" else None, family=len(tested))
    return comparisons


def is_significant(c: dict) -> bool:
    """Headline p < 0.05 (after correction, when the report corrected) AND the bootstrap CI
    of the paired difference excludes 0."""
    p = c.get("p_adj") if c.get("p_adj") is not None else c.get("p")
    if p is None or c.get("ci_low") is None:
        return False
    return p < ALPHA and (c["ci_low"] > 0 or c["ci_high"] < 0)


def summary_table(rows: Iterable[dict], metric: str, baseline: str = "scratch",
                  comparisons: list[dict] | None = None) -> list[dict]:
    """``summarize`` joined with the paired comparison vs ``baseline`` (``comparisons``: the
    report's, corrected for multiplicity; else computed here) and labels saved.

    One dict per (task, start, strategy, budget); the rows of summary.csv and the report table.
    """
    rows = normalize_budgets(rows)
    if comparisons is None:
        comparisons = paired_comparison(rows, metric, baseline)
    comp = {(c["task"], c["start"], c["strategy"], c["budget"]): c for c in comparisons}
    saved: dict[tuple, dict] = {}
    for task, start, strategy in sorted({(c[0], c[1], c[2]) for c in comp}):
        res = labels_saved(rows, metric, start, baseline, task=task, strategy=strategy)
        for p in res["points"]:
            saved[(task, start, strategy, p["budget"])] = p
    failed: dict[tuple, int] = defaultdict(int)
    for r in rows:
        if _value(r, metric) is None:
            failed[(r["task"], r["start"], r["strategy"], r["budget"])] += 1
    out = []
    for s in summarize(rows, metric):
        k = (s["task"], s["start"], s["strategy"], s["budget"])
        c, p = comp.get(k), saved.get(k)
        row = {key: v for key, v in s.items() if key != "seeds"}
        row["failed"] = failed.get(k, 0)
        row.update({
            "baseline": baseline if c else None,
            "delta": c["mean_diff"] if c else None, "delta_std": c["std_diff"] if c else None,
            "delta_ci_low": c["ci_low"] if c else None, "delta_ci_high": c["ci_high"] if c else None,
            "p": c["p"] if c else None, "p_method": c["p_method"] if c else None,
            "p_perm": c["p_perm"] if c else None, "p_ttest": c["p_ttest"] if c else None,
            "p_adj": c["p_adj"] if c else None, "p_adj_method": c["p_adj_method"] if c else None,
            "d_z": c["d_z"] if c else None,
            "n_paired": c["n"] if c else None, "significant": is_significant(c) if c else None,
            "labels_saved": p["labels_saved"] if p else None,
            "labels_saved_ratio": p["ratio"] if p else None,
            "labels_saved_status": p["status"] if p else None,
        })
        out.append(row)
    return out
