"""The study report: results.csv, summary.csv, summary.tex, report.json, report.md and a
self-contained report.html.

The report is built once as a small document model (sections of blocks: paragraphs, tables,
plots, lists, preformatted text) and rendered twice, to HTML and to Markdown, so both say
exactly the same thing. The HTML inlines its CSS and its plots (SVG): it opens offline and
loads nothing from anywhere. Every user-supplied string is escaped. Every p-value is shown
beside its correction over all comparisons of the report (``correction``: Holm by default),
and the verdicts are decided on the corrected value.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from pretune.errors import PretuneError
from pretune.study import plots, units
from pretune.study.evidence import changed_answers, class_deltas
from pretune.study.latex import summary_tex
from pretune.study.render import Block, render_html, render_md, write_plots
from pretune.study.sections import confusion_blocks, contamination_section, examples_blocks
from pretune.study.stats import (
    LOWER_IS_BETTER,
    correct,
    is_significant,
    labels_saved,
    metric_name,
    metric_scale,
    normalize_budgets,
    paired_comparison,
    summary_table,
)
from pretune.study.units import budget, first_order, mean_cell, signed
from pretune.study.verdicts import CORRECTION_NAMES, format_p, headlines, rank_comparisons, verdict

# results.csv: these first, in this order; any other keys follow sorted; lists last.
RESULT_COLUMNS = [
    "task", "start", "strategy", "budget", "budget_label", "seed", "status", "error", "seconds",
    "train_examples", "trainable_params",
]
LIST_COLUMNS = ["labels", "confusion", "per_class", "examples"]

# --------------------------------------------------------------------------- CSV files


def write_results_csv(path: Path, results: list[dict]) -> None:
    """One row per run; stable columns: RESULT_COLUMNS, other keys sorted, list columns last."""
    keys = {k for r in results for k in r}
    extra = sorted(keys - set(RESULT_COLUMNS) - set(LIST_COLUMNS))
    # labels / confusion always (stable for classification studies), examples when present
    cols = RESULT_COLUMNS + extra + [c for c in LIST_COLUMNS
                                     if c in ("labels", "confusion") or c in keys]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in results:
            w.writerow([json.dumps(r[c]) if isinstance(r.get(c), list | dict) else
                        ("" if r.get(c) is None else r[c]) for c in cols])


def write_summary_csv(path: Path, table: list[dict]) -> None:
    cols = list(table[0]) if table else ["task", "start", "strategy", "budget", "metric", "n"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for row in table:
            # 6 significant digits: exact enough, and 0.7 instead of 0.6999999999999998.
            w.writerow({k: "" if v is None else f"{v:.6g}" if isinstance(v, float) else v
                        for k, v in row.items()})


# --------------------------------------------------------------------------- comparisons


def comparisons(rows: list[dict], metrics: dict[str, str], baseline: str,
                correction: str) -> list[dict]:
    """Every paired comparison with the baseline over all tasks (each on its own metric),
    corrected for multiplicity as one family."""
    tasks = list(first_order(r["task"] for r in rows))
    comps = [c for t in tasks for c in
             paired_comparison([r for r in rows if r["task"] == t], metrics[t], baseline)]
    return correct(comps, correction)


def _verdict_blocks(task: str, comps: list[dict], rows: list[dict], metric: str,
                    corpus: str | None, baseline: str) -> list[Block]:
    mine = rank_comparisons([c for c in comps if c["task"] == task])
    blocks: list[Block] = [("h3", task)]
    if not mine:
        return blocks + [("p", f"No paired comparison with {baseline} on {task} (only one "
                               "start, or no successful runs).", "verdict")]

    def sentence(c: dict) -> tuple[str, str]:
        saved = labels_saved(rows, metric, c["start"], baseline, task=task,
                             strategy=c["strategy"])
        cls = "verdict"
        if is_significant(c):
            better = (c["mean_diff"] < 0) == (metric in LOWER_IS_BETTER)
            cls += " good" if better else " bad"
        return verdict(c, corpus=corpus, labels=saved), cls

    said = [sentence(c) for c in mine]  # labels_saved bootstraps: once per comparison
    top = headlines(mine)
    for c in top:
        blocks.append(("p", *said[mine.index(c)]))
    if len(mine) > len(top):
        blocks.append(("details", f"All {len(mine)} comparisons on {task}, most informative "
                       "first", [text for text, _ in said]))
    return blocks


def _trivial_text(trivial: dict | None, metric: str) -> str | None:
    v = (trivial or {}).get("metrics", {}).get(metric)
    if v is None or not math.isfinite(v):  # e.g. the correlation of a constant
        return None
    what = {"majority class": "always the most frequent training class",
            "all-O": "no entity anywhere", "copy input": "the input copied as the output",
            "training mean": "the training mean for every example"}.get(trivial["name"], "")
    return (f"Trivial baseline, {trivial['name']}{f' ({what})' if what else ''}: "
            f"{metric_name(metric)} {units.score(v, metric)}. A curve at this line learned "
            "nothing.")


def _task_section(task: str, rows: list[dict], full_table: list[dict], metric: str,
                  baseline: str, order: dict[str, dict[str, int]], trivial: dict | None,
                  correction: str) -> list[Block]:
    table = [t for t in full_table if t["task"] == task]
    top = max((t["budget"] for t in table), default=0)
    table = [t | {"budget_max": top} for t in table]
    table.sort(key=lambda t: (order["start"].get(t["start"], 99),
                              order["strategy"].get(t["strategy"], 99), t["budget"]))
    line = None
    if trivial and trivial.get("metrics", {}).get(metric) is not None:
        line = {"name": trivial["name"], "value": trivial["metrics"][metric]}
    recipes = {(r["start"], r["strategy"], r["budget"]): r.get("recipe", "")
               for r in rows if r["task"] == task and r.get("recipe")}
    adj = CORRECTION_NAMES.get(correction)
    headers = ["start", "strategy", "labels", "n", f"{metric_name(metric)}: mean ± std "
               "[95% CI]", f"Δ vs {baseline} [95% CI]", "p",
               *([f"p ({correction.upper() if correction == 'bh' else 'Holm'})"] if adj else []),
               "d_z", "labels saved", "failed"]
    body, classes = [], []
    for t in table:
        delta = "–"
        if t["delta"] is not None:
            delta = signed(t["delta"], metric)
            if t["delta_ci_low"] is not None:
                delta += (f" [{signed(t['delta_ci_low'], metric)}, "
                          f"{signed(t['delta_ci_high'], metric)}]")
        saved = {"saved": f"≈ {t['labels_saved']:,}" if t["labels_saved"] is not None else "",
                 "none": "none", "unknown": "?", None: "–",
                 "not_reached": f"> {t['budget_max'] - t['budget']:,} (not reached)"
                 if t["budget_max"] > t["budget"] else "not reached"}[t["labels_saved_status"]]
        has = t["delta"] is not None
        body.append([t["start"], t["strategy"], budget(t), str(t["n"]), mean_cell(t, metric),
                     delta, format_p(t["p"]) if has else "–",
                     *([format_p(t["p_adj"]) if has else "–"] if adj else []),
                     f"{t['d_z']:.2f}" if t.get("d_z") is not None else "–", saved,
                     str(t["failed"]) if t["failed"] else ""])
        good = t["significant"] and ((t["delta"] < 0) == (metric in LOWER_IS_BETTER))
        classes.append("good" if good else "bad" if t["significant"] else "")
    blocks: list[Block] = [("fig", plots.efficiency_curves(table, metric, task, line, recipes))]
    note = _trivial_text(trivial, metric)
    if note:
        blocks.append(("p", note, "meta"))
    blocks.append(("table", headers, body, classes))
    sentences = []
    for start, strategy in sorted({(t["start"], t["strategy"]) for t in table
                                   if t["start"] != baseline and t["delta"] is not None},
                                  key=lambda k: (order["start"].get(k[0], 99),
                                                 order["strategy"].get(k[1], 99))):
        sentences.append(labels_saved(rows, metric, start, baseline, task=task,
                                      strategy=strategy)["sentence"])
    if sentences:
        blocks += [("h3", "Labels saved"), ("ul", sentences)]
    return blocks


def _evidence_section(tasks: list[str], comps: list[dict], rows: list[dict],
                      cells: Path | None) -> list[Block]:
    blocks: list[Block] = []
    for task in tasks:
        mine = [c for c in comps if c["task"] == task and c["n"] >= 1]
        if mine:
            top = headlines(mine)[0]
            blocks += changed_answers(rows, top, cells) + class_deltas(rows, top)
    return blocks


def _pretrain_section(pretrain: dict | None, probes: list[dict] | None, metric: str,
                      unit: str) -> list[Block]:
    blocks: list[Block] = []
    if pretrain:
        hist = pretrain.get("history") or []

        def final(key: str) -> Any:
            return next((h[key] for h in reversed(hist) if h.get(key) is not None), None)

        blocks.append(("table", ["corpus", unit, "wall time", "FLOPs", "final train loss",
                                 "final val loss"],
                       [[str(pretrain.get("corpus") or "–"), units.count(pretrain.get("tokens")),
                         units.seconds(pretrain.get("seconds")), units.flops(pretrain.get("flops")),
                         _loss(final("train_loss")), _loss(final("val_loss"))]], [""]))
    figs = []
    if pretrain and pretrain.get("history"):
        figs.append(plots.loss_curves(pretrain["history"], unit=unit))
    if probes:
        pm = probes[0].get("metric", metric)
        figs.append(plots.probe_curves(probes, pm, unit))
    blocks.append(("figs", figs))
    if probes:
        pm = probes[0].get("metric", metric)
        blocks.append(("table", ["task", "checkpoint", unit, f"probe {metric_name(pm)}"],
                       [[str(p["task"]), Path(str(p.get("checkpoint", ""))).name,
                         units.count(p.get("tokens")), units.score(p.get("score"), pm)]
                        for p in probes], []))
    return blocks


def _build(name: str, rows: list[dict], table: list[dict], comps: list[dict],
           metrics: dict[str, str], baseline: str, ctx: dict[str, Any]
           ) -> tuple[str, list[tuple[str, list[Block]]]]:
    pretrain, probes = ctx.get("pretrain"), ctx.get("probes")
    order = {"start": first_order(r["start"] for r in rows),
             "strategy": first_order(r["strategy"] for r in rows)}
    tasks = list(first_order(r["task"] for r in rows))
    corpus = (pretrain or {}).get("corpus")
    unit = (pretrain or {}).get("unit", "tokens")  # what the pre-training counts: tokens | images
    ok = sum(1 for r in rows if r.get("status") == "ok" and r.get(metrics[r["task"]]) is not None)
    used = sorted(set(metrics.values()))
    named = f"{metric_name(used[0])} ({used[0]})" if len(used) == 1 else "; ".join(
        f"{t}: {metric_name(m)} ({m})" for t, m in metrics.items())
    correction = ctx.get("correction", "holm")
    tested = sum(c["p"] is not None for c in comps)
    how = {"holm": f"Holm-Bonferroni over all {tested} comparisons of this report (controls the "
                   "chance of any false claim)",
           "bh": f"Benjamini-Hochberg over all {tested} comparisons of this report (controls "
                 "the expected share of false claims)",
           "none": "none (each p stands alone)"}[correction]
    scale = ("Every score in this report, tables and plots, is ×100 (points)"
             if any(metric_scale(m) != 1 for m in used) else "Scores are in the metric's units")
    meta = (f"Metric: {named}; baseline: {baseline}; {len(rows)} runs, {ok} ok, "
            f"{len(rows) - ok} failed or without the metric."
            + (f" Pre-training corpus: {corpus}." if corpus else "")
            + f" {scale}. Multiple comparisons: {how}; significant = corrected p < 0.05 and a "
            "95% CI excluding 0. d_z: paired Cohen's d (mean / std of the per-seed differences).")
    verdicts = [b for t in tasks for b in _verdict_blocks(t, comps, rows, metrics[t], corpus,
                                                          baseline)]
    sections: list[tuple[str, list[Block]]] = [("Verdict", [("p", meta, "meta"), *verdicts])]
    trivial = ctx.get("baselines") or {}
    for task in tasks:
        sections.append((f"Task: {task}", _task_section(task, rows, table, metrics[task],
                                                        baseline, order, trivial.get(task),
                                                        correction)))
    evidence = _evidence_section(tasks, comps, rows, ctx.get("cells"))
    if evidence:
        sections.append(("Where pre-training changed the answer", evidence))
    if pretrain or probes:
        sections.append(("Pre-training and probes",
                         _pretrain_section(pretrain, probes, used[0], unit)))
    examples = [b for t in tasks for b in examples_blocks(rows, metrics[t], t)]
    if examples:
        sections.append(("Example generations", examples))
    conf = [b for t in tasks for b in confusion_blocks(rows, metrics[t], [t])]
    if conf:
        sections.append(("Confusion matrices (best run per start, largest budget)", conf))
    if ctx.get("contamination"):
        sections.append(contamination_section(ctx["contamination"]))
    compute = ctx.get("compute") or []
    if compute:
        body = [[str(c["phase"]), units.count(c.get("tokens")), units.seconds(c.get("seconds")),
                 units.flops(c.get("flops"))] for c in compute]
        sections.append(("Compute", [("table", ["phase", unit, "wall time", "FLOPs (≈)"], body,
                                      []), ("fig", plots.compute_bars(compute, unit))]))
    failed = [r for r in rows if r.get("status") != "ok" or r.get(metrics[r["task"]]) is None]
    sections.append(("Failed runs", [
        ("table", ["task", "start", "strategy", "labels", "seed", "status", "error"],
         [[str(r["task"]), str(r["start"]), str(r["strategy"]), budget(r), str(r.get("seed")),
           str(r.get("status")),
           str(r.get("error") or f"no '{metrics[r['task']]}' in the results")]
          for r in failed], ["bad"] * len(failed))
        if failed else ("p", "None: every run finished.", "")]))
    if ctx.get("notes"):
        sections.append(("Notes", [("ul", list(ctx["notes"]))]))
    if ctx.get("environment"):  # a CPU rerun is bitwise equal with these versions and threads
        sections.append(("Environment", [("table", ["", "value"], [
            [k, str(v)] for k, v in ctx["environment"].items()], [])]))
    sections.append(("Configuration", [("pre", ctx.get("config_yaml") or "(not given)")]))
    return f"pretune study: {name}", sections


def _loss(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{float(v):.{digits}f}"


def write_report(out_dir: Path, *, name: str, results: list[dict], metric: str | dict[str, str],
                 pretrain: dict | None = None, probes: list[dict] | None = None,
                 contamination: list[dict] | None = None, compute: list[dict] | None = None,
                 config_yaml: str = "", notes: list[str] | None = None,
                 baseline: str = "scratch", environment: dict[str, Any] | None = None,
                 baselines: dict[str, dict] | None = None, correction: str = "holm",
                 cells: Path | None = None) -> dict[str, Path]:
    """Write results.csv, summary.csv, summary.tex, report.json, report.md (+ plots/*.png,
    .svg, .pdf) and report.html to out_dir.

    ``results``: one dict per run (see stats). ``metric``: one for every task, or task -> metric
    (a classification task beside a tagging one). ``pretrain``: {history: [{tokens, step,
    train_loss, val_loss}], tokens, seconds, flops, corpus}. ``probes``: [{task, checkpoint,
    tokens, score}]. ``contamination``: ngram_overlap() dicts with a ``task`` key. ``compute``:
    [{phase, tokens, seconds, flops}]. ``baselines``: task -> {name, metrics} of its trivial
    baseline. ``correction``: holm | bh | none. ``cells``: the directory of the cells' run dirs
    (their predictions.jsonl feed "where pre-training changed the answer"). Failed runs are
    listed, never dropped. Returns the paths under keys results, summary, tex, json, md, html
    (files) and plots (the plot directory).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = list(notes or [])
    rows = normalize_budgets(results)
    tasks = list(first_order(r["task"] for r in rows))
    metrics = dict(metric) if isinstance(metric, dict) else dict.fromkeys(tasks, metric)
    for task in tasks:
        ok = [r for r in rows if r.get("status") == "ok" and r["task"] == task]
        if ok and not any(r.get(metrics[task]) is not None for r in ok):
            have = sorted({k for r in ok for k, v in r.items() if isinstance(v, int | float)})
            raise PretuneError(f"study metric '{metrics[task]}' is in no result row of {task}; "
                               f"set `metric` to one of: {', '.join(have)}")
    starts = list(first_order(r["start"] for r in rows))
    if starts and baseline not in starts:
        notes.insert(0, f"Baseline '{baseline}' was not run; comparisons use '{starts[0]}'.")
        baseline = starts[0]
    paths = {"results": out_dir / "results.csv", "summary": out_dir / "summary.csv",
             "tex": out_dir / "summary.tex", "json": out_dir / "report.json",
             "md": out_dir / "report.md", "html": out_dir / "report.html",
             "plots": out_dir / "plots"}
    write_results_csv(paths["results"], list(results))
    comps = comparisons(rows, metrics, baseline, correction)
    table = [t for task in tasks for t in summary_table(
        [r for r in rows if r["task"] == task], metrics[task], baseline,
        [c for c in comps if c["task"] == task])]
    write_summary_csv(paths["summary"], table)
    paths["tex"].write_text(summary_tex(table, metrics, baseline, correction, name),
                            encoding="utf-8")
    paths["json"].write_text(json.dumps({
        "name": name, "metrics": metrics, "baseline": baseline, "correction": correction,
        "baselines": baselines or {}, "results": rows, "summary": table,
        "pretrain": {k: v for k, v in (pretrain or {}).items() if k != "history"} or None,
    }, indent=1, default=str) + "\n", encoding="utf-8")
    ctx = {"pretrain": pretrain, "probes": probes, "contamination": contamination,
           "compute": list(compute or []), "config_yaml": config_yaml, "notes": notes,
           "environment": environment, "baselines": baselines, "correction": correction,
           "cells": cells}
    title, sections = _build(name, rows, table, comps, metrics, baseline, ctx)
    write_plots(paths["plots"], sections)
    paths["md"].write_text(render_md(title, sections), encoding="utf-8")
    paths["html"].write_text(render_html(title, sections), encoding="utf-8")
    return paths
