"""Study statistics against hand-computed values (small arrays, closed forms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as sps

from pretune.study.stats import (
    bootstrap_ci,
    labels_saved,
    paired_comparison,
    sign_flip_pvalue,
    summarize,
    summary_table,
)
from pretune.study.verdicts import rank_comparisons, verdict


def row(start, seed, value, *, budget=128, strategy="full", task="rt", metric="macro_f1",
        status="ok", label=None):
    r = {"task": task, "start": start, "strategy": strategy, "budget": budget,
         "budget_label": label or str(budget), "seed": seed, "status": status, "error": None}
    if status == "ok":
        r[metric] = value
    return r


def paired_rows(a, b, **kw):
    """start 'pretrained' gets values a, 'scratch' gets b, seed i pairs a[i] with b[i]."""
    return ([row("pretrained", i, v, **kw) for i, v in enumerate(a)]
            + [row("scratch", i, v, **kw) for i, v in enumerate(b)])


# --------------------------------------------------------------------------- summarize


def test_summarize_mean_std_ci_min_max():
    rows = [row("scratch", i, v) for i, v in enumerate([0.6, 0.7, 0.8])]
    rows.append(row("scratch", 3, None, status="failed"))  # failed runs are left out
    (s,) = summarize(rows, "macro_f1")
    assert (s["task"], s["start"], s["strategy"], s["budget"], s["n"]) == ("rt", "scratch", "full", 128, 3)
    assert s["mean"] == pytest.approx(0.7)
    assert s["std"] == pytest.approx(0.1)  # sqrt(((-.1)^2 + 0 + .1^2) / 2)
    assert (s["min"], s["max"]) == (pytest.approx(0.6), pytest.approx(0.8))
    # Percentile bootstrap, 10,000 resamples, seeded: recompute the procedure independently.
    x = np.array([0.6, 0.7, 0.8])
    means = x[np.random.default_rng(0).integers(0, 3, size=(10_000, 3))].mean(axis=1)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert 0.6 <= s["ci_low"] < 0.7 < s["ci_high"] <= 0.8
    assert summarize(rows, "macro_f1")[0]["ci_low"] == s["ci_low"]  # deterministic


def test_summarize_single_seed_has_no_ci():
    (s,) = summarize([row("scratch", 0, 0.5)], "macro_f1")
    assert s["n"] == 1 and s["std"] is None and s["ci_low"] is None and s["ci_high"] is None


def test_all_budget_runs_pair_even_if_sizes_differ():
    rows = [row("scratch", 0, 0.5, budget=1000, label="all"),
            row("pretrained", 0, 0.6, budget=998, label="all")]
    assert {s["budget"] for s in summarize(rows, "macro_f1")} == {1000}
    (c,) = paired_comparison(rows, "macro_f1")
    assert c["n"] == 1 and c["budget_label"] == "all"


def test_bootstrap_ci_constant_sample():
    assert bootstrap_ci(np.array([0.3, 0.3, 0.3])) == pytest.approx((0.3, 0.3))


# --------------------------------------------------------------------------- paired comparison


def test_paired_comparison_hand_computed():
    rows = paired_rows([0.70, 0.75, 0.80], [0.60, 0.70, 0.65])  # d = .10, .05, .15
    (c,) = paired_comparison(rows, "macro_f1")
    assert (c["start"], c["baseline"], c["n"], c["seeds"]) == ("pretrained", "scratch", 3, [0, 1, 2])
    assert c["mean_diff"] == pytest.approx(0.10)
    assert c["std_diff"] == pytest.approx(0.05)
    # t = 0.1 / (0.05 / sqrt 3) = 2 sqrt 3; df = 2 has a closed-form tail:
    # P(T > t) = (1 - t / sqrt(t^2 + 2)) / 2, two-sided p = 1 - t / sqrt(t^2 + 2) = 1 - sqrt(12/14).
    assert c["t_stat"] == pytest.approx(2 * math.sqrt(3))
    assert c["p_ttest"] == pytest.approx(1 - math.sqrt(12 / 14))
    # All 3 differences positive: only the all-+ and all-- flips are as extreme -> 2/8.
    assert c["p_perm"] == pytest.approx(0.25) and c["p_perm_method"] == "exact"
    assert c["min_p"] == pytest.approx(0.25)
    assert 0.05 - 1e-12 <= c["ci_low"] < 0.10 < c["ci_high"] <= 0.15 + 1e-12


def test_sign_flip_exact_mixed_signs():
    # d = 1, -2, 3, 4: sum 6; flipping subset S gives 10 - 2 sum(S) (as |.|). |.| >= 6 iff
    # sum(S) <= 2 or >= 8: {}, {1}, {2}, {1,3,4}, {2,3,4}, {1,2,3,4} -> 6 of 16.
    p, method = sign_flip_pvalue(np.array([1.0, -2.0, 3.0, 4.0]))
    assert p == pytest.approx(6 / 16) and method == "exact"
    p6, _ = sign_flip_pvalue(np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06]))
    assert p6 == pytest.approx(2 / 64)
    big, method = sign_flip_pvalue(np.full(20, 0.1))
    assert method == "monte-carlo" and big < 0.001


def test_paired_comparison_matches_seeds_and_reports_reasons():
    rows = [row("pretrained", 0, 0.7), row("pretrained", 1, 0.8), row("scratch", 1, 0.6),
            row("scratch", 2, 0.5), row("continued", 5, 0.9)]
    by_start = {c["start"]: c for c in paired_comparison(rows, "macro_f1")}
    one = by_start["pretrained"]
    assert one["seeds"] == [1] and one["mean_diff"] == pytest.approx(0.2)
    assert one["p_perm"] is None and "1 matched seed" in one["reason"]
    none = by_start["continued"]
    assert none["n"] == 0 and none["mean_diff"] is None and "no seed" in none["reason"]


def test_identical_differences_have_no_ttest_but_a_permutation_p():
    (c,) = paired_comparison(paired_rows([0.7, 0.8, 0.9], [0.6, 0.7, 0.8]), "macro_f1")
    assert c["p_ttest"] is None and "t-test undefined" in c["reason"]
    assert c["p_perm"] == pytest.approx(0.25)


# --------------------------------------------------------------------------- labels saved


def curve_rows(metric="macro_f1", base=(0.5, 0.6, 0.7), mine=(0.65, 0.75, 0.69)):
    rows = []
    for b, vb, vm in zip((32, 128, 512), base, mine, strict=True):
        rows += [row("scratch", 0, vb, budget=b, metric=metric),
                 row("pretrained", 0, vm, budget=b, metric=metric)]
    return rows


def test_labels_saved_log_interpolation():
    res = labels_saved(curve_rows(), "macro_f1", "pretrained", task="rt", strategy="full")
    p32, p128, p512 = res["points"]
    # 0.65 lies halfway between scratch's 0.6 @128 and 0.7 @512: log2 b' = (7 + 9) / 2 -> 256.
    assert p32["status"] == "saved" and p32["equivalent_budget"] == 256
    assert p32["labels_saved"] == 224 and p32["ratio"] == pytest.approx(8.0)
    # 0.75 is above anything scratch reached (0.7 @512).
    assert p128["status"] == "not_reached" and p128["more_than"] == 512 - 128
    assert "more than" in p128["text"] and "not reached" in p128["text"]
    # 0.69 < 0.7: not better, nothing saved.
    assert p512["status"] == "none" and p512["labels_saved"] == 0
    assert "worth ≈ 224 labels" in res["sentence"]


def test_labels_saved_lower_is_better_metric():
    rows = curve_rows("mse", base=(0.5, 0.4, 0.3), mine=(0.35, 0.2, 0.31))
    res = labels_saved(rows, "mse", "pretrained", task="rt", strategy="full")
    assert res["points"][0]["equivalent_budget"] == 256
    assert res["points"][1]["status"] == "not_reached"
    assert res["points"][2]["status"] == "none"


# --------------------------------------------------------------------------- verdicts


def comp(a, b, **kw):
    (c,) = paired_comparison(paired_rows(a, b, **kw), kw.get("metric", "macro_f1"))
    return c


def test_verdict_significant_improvement_with_labels_worth():
    a = [0.70, 0.72, 0.71, 0.73, 0.69, 0.74]
    b = [0.65, 0.66, 0.67, 0.66, 0.65, 0.68]  # every seed better: p = 2/64
    c = comp(a, b)
    saved = {"points": [{"budget": 128, "status": "saved", "labels_saved": 300}]}
    text = verdict(c, corpus="news", labels=saved)
    d = np.subtract(a, b) * 100
    assert text.startswith("Pre-training on news improved macro-F1 on rt by "
                           f"+{d.mean():.1f} ± {d.std(ddof=1):.1f} points (95% CI [")
    dz = d.mean() / d.std(ddof=1)  # paired Cohen's d
    assert "at 128 labels" in text and f"(p = 0.031, d_z = {dz:.2f}, n = 6 seeds)" in text
    assert text.endswith("; worth ≈ 300 labels.")


def test_verdict_no_significant_difference():
    c = comp([0.70, 0.60, 0.72, 0.61, 0.70, 0.62], [0.65, 0.66, 0.67, 0.66, 0.65, 0.68])
    text = verdict(c, corpus="news")
    assert f"no significant difference (p = {c['p_perm']:.2f}" in text
    assert "improved" not in text and "hurt" not in text


def test_verdict_negative_and_significant_says_hurt():
    c = comp([0.60, 0.61, 0.62, 0.60, 0.59, 0.61], [0.70, 0.72, 0.71, 0.73, 0.69, 0.74],
             strategy="lora", budget=512)
    text = verdict(c, corpus="wiki")
    d = (np.subtract([0.60, 0.61, 0.62, 0.60, 0.59, 0.61], [0.70, 0.72, 0.71, 0.73, 0.69, 0.74])
         * 100)
    assert text.startswith(f"Pre-training on wiki hurt macro-F1 on rt by {-d.mean():.1f} ± ")
    assert "with LoRA" in text and "worth" not in text


def test_verdict_three_seeds_is_too_few():
    text = verdict(comp([0.8, 0.9, 0.85], [0.6, 0.7, 0.65]), corpus="news")
    assert "too few seeds for significance: the smallest possible p with 3 seeds is 0.25" in text
    assert "improved" not in text


def test_three_varied_seeds_use_the_paired_t_test():
    a, b = [0.80, 0.92, 0.85], [0.60, 0.70, 0.66]
    c = comp(a, b)
    assert c["p_method"] == "paired t-test" and c["p_perm"] == pytest.approx(0.25)
    assert c["p"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    text = verdict(c, corpus="news")
    assert text.startswith("Pre-training on news improved") and "paired t-test p = " in text


def test_verdict_other_starts_and_all_budget():
    rows = [row("builtin:minilm", 0, 0.9, budget=900, label="all"),
            row("scratch", 0, 0.7, budget=900, label="all")]
    (c,) = paired_comparison(rows, "macro_f1")
    text = verdict(c)
    assert text.startswith("Starting from builtin:minilm") and "all 900 labels" in text
    assert "n = 1" in text


def test_rank_and_summary_table():
    rows = (paired_rows([0.70, 0.72, 0.71, 0.73, 0.69, 0.74], [0.65, 0.66, 0.67, 0.66, 0.65, 0.68])
            + paired_rows([0.6, 0.7, 0.6, 0.7, 0.6, 0.7], [0.65] * 6, budget=32))
    ranked = rank_comparisons(paired_comparison(rows, "macro_f1"))
    assert ranked[0]["budget"] == 128  # the significant one first
    table = summary_table(rows, "macro_f1")
    pre128 = next(t for t in table if t["start"] == "pretrained" and t["budget"] == 128)
    assert pre128["delta"] == pytest.approx(np.mean(np.subtract(
        [0.70, 0.72, 0.71, 0.73, 0.69, 0.74], [0.65, 0.66, 0.67, 0.66, 0.65, 0.68])))
    assert pre128["significant"] is True and pre128["p_perm"] == pytest.approx(2 / 64)
    assert pre128["labels_saved_status"] == "not_reached"
    scratch = next(t for t in table if t["start"] == "scratch" and t["budget"] == 32)
    assert scratch["delta"] is None and scratch["failed"] == 0


def test_verdict_lower_is_better_metric():
    a = [0.20, 0.21, 0.19, 0.22, 0.20, 0.18]  # pretrained MSE, lower on every seed
    b = [0.30, 0.32, 0.29, 0.31, 0.33, 0.30]
    text = verdict(comp(a, b, metric="mse"), corpus="news")
    assert text.startswith("Pre-training on news improved MSE on rt by -0.1")
    assert "points" not in text


def test_holm_and_bh_adjustments_by_hand():
    from pretune.study.stats import adjust_pvalues, correct

    ps = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone
    assert adjust_pvalues(ps, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: p * m / rank = 0.02, 0.02, 0.04, 0.04 (already monotone from the top)
    assert adjust_pvalues(ps, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert adjust_pvalues(ps, "none") == ps
    assert adjust_pvalues([0.9, 0.8], "holm") == [1.0, 1.0]  # capped at 1
    comps = [{"p": 0.01}, {"p": None}, {"p": 0.02}]
    correct(comps, "holm")
    assert comps[0]["p_adj"] == pytest.approx(0.02) and comps[2]["p_adj"] == pytest.approx(0.02)
    assert comps[0]["family"] == 2 and "p_adj" not in comps[1]  # untested: not in the family


def test_effect_size_is_paired_cohens_d():
    from pretune.study.stats import effect_size

    d = np.array([0.02, 0.04, 0.03])
    assert effect_size(d) == pytest.approx(d.mean() / d.std(ddof=1))
    assert effect_size(np.array([0.01, 0.01, 0.01])) is None  # no spread to standardise by
    c = comp([0.7, 0.72, 0.75], [0.6, 0.61, 0.66])
    assert c["d_z"] == pytest.approx(effect_size(np.array([0.1, 0.11, 0.09])))
