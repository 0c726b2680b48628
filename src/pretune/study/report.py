"""The study report: results.csv, summary.csv, report.md and a self-contained report.html.

The report is built once as a small document model (sections of blocks: paragraphs, tables,
images, lists, preformatted text) and rendered twice, to HTML and to Markdown, so both say
exactly the same thing. The HTML inlines its CSS and its plots (base64 PNG): it opens offline,
loads nothing from anywhere, and runs no script. Every user-supplied string is escaped.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pretune.errors import PretuneError
from pretune.study import plots
from pretune.study.render import Block, render_html, render_md, slug, write_pngs
from pretune.study.stats import (
    LOWER_IS_BETTER,
    format_p,
    is_significant,
    labels_saved,
    metric_name,
    metric_scale,
    normalize_budgets,
    paired_comparison,
    rank_comparisons,
    summary_table,
    verdict,
)

# results.csv: these first, in this order; any other keys follow sorted; lists last.
RESULT_COLUMNS = [
    "task", "start", "strategy", "budget", "budget_label", "seed", "status", "error", "seconds",
    "train_examples", "trainable_params",
]
LIST_COLUMNS = ["labels", "confusion", "examples"]

# --------------------------------------------------------------------------- formatting


def _num(v: Any, metric: str) -> str:
    if v is None:
        return "–"
    scale = metric_scale(metric)
    return f"{v * scale:.1f}" if scale != 1 else f"{v:.4g}"


def _signed(v: Any, metric: str) -> str:
    if v is None:
        return "–"
    scale = metric_scale(metric)
    return f"{v * scale:+.1f}" if scale != 1 else f"{v:+.4g}"


def _cell(s: dict, metric: str) -> str:
    txt = _num(s["mean"], metric)
    if s.get("std") is not None:
        txt += f" ± {_num(s['std'], metric)}"
    if s.get("ci_low") is not None:
        txt += f" [{_num(s['ci_low'], metric)}, {_num(s['ci_high'], metric)}]"
    return txt


def _seconds(s: Any) -> str:
    if s is None or s == "":
        return "–"
    s = float(s)
    if s < 120:
        return f"{s:.1f} s"
    return f"{int(s // 3600)}:{int(s % 3600 // 60):02d}:{int(s % 60):02d}"


def _big(v: Any) -> str:
    if v is None or v == "":
        return "–"
    v = float(v)
    return f"{v:,.0f}" if v < 1e6 else f"{v:.3g}"


def _budget(row: dict) -> str:
    if row.get("budget_label") == "all":
        return f"all ({row['budget']:,})" if row["budget"] > 0 else "all"
    return f"{row['budget']:,}"


def _maybe_json(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def _order(values: Sequence[str]) -> dict[str, int]:
    """First-appearance order (the config's order), used to sort table rows."""
    out: dict[str, int] = {}
    for v in values:
        out.setdefault(v, len(out))
    return out


# --------------------------------------------------------------------------- CSV files


def write_results_csv(path: Path, results: list[dict]) -> None:
    """One row per run; stable columns: RESULT_COLUMNS, other keys sorted, list columns last."""
    keys = {k for r in results for k in r}
    extra = sorted(keys - set(RESULT_COLUMNS) - set(LIST_COLUMNS))
    # labels / confusion always (stable for classification studies), examples when present
    cols = RESULT_COLUMNS + extra + [c for c in LIST_COLUMNS if c != "examples" or c in keys]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in results:
            w.writerow([json.dumps(r[c]) if isinstance(r.get(c), list | dict) else
                        ("" if r.get(c) is None else r[c]) for c in cols])


def _start_rank(start: str) -> int:
    """The study's own pre-training first, then its variants and continued, then the rest."""
    if start == "pretrained":
        return 0
    return 1 if start == "continued" or start.startswith("pretrained-") else 2


def write_summary_csv(path: Path, table: list[dict]) -> None:
    cols = list(table[0]) if table else ["task", "start", "strategy", "budget", "metric", "n"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for row in table:
            # 6 significant digits: exact enough, and 0.7 instead of 0.6999999999999998.
            w.writerow({k: "" if v is None else f"{v:.6g}" if isinstance(v, float) else v
                        for k, v in row.items()})


# --------------------------------------------------------------------------- sections


def _verdict_section(rows: list[dict], metric: str, baseline: str, corpus: str | None,
                     tasks: list[str]) -> list[Block]:
    comps = paired_comparison(rows, metric, baseline)
    blocks: list[Block] = []
    for task in tasks:
        mine = rank_comparisons([c for c in comps if c["task"] == task])
        blocks.append(("h3", task))
        if not mine:
            blocks.append(("p", f"No paired comparison with {baseline} on {task} "
                                "(only one start, or no successful runs).", "verdict"))
            continue
        texts = []
        for c in mine:
            saved = labels_saved(rows, metric, c["start"], baseline, task=task,
                                 strategy=c["strategy"])
            cls = "verdict"
            if is_significant(c):
                better = (c["mean_diff"] < 0) == (metric in LOWER_IS_BETTER)
                cls += " good" if better else " bad"
            texts.append((verdict(c, corpus=corpus, labels=saved), cls))
        # Headline: the most informative comparison of EACH start (the study's own
        # pre-training first), so a strong public checkpoint does not hide the answer for ours.
        firsts: dict[str, int] = {}
        for i, c in enumerate(mine):
            firsts.setdefault(c["start"], i)
        rank = {s: _start_rank(s) for s in firsts}
        for i in sorted(firsts.values(), key=lambda i: (rank[mine[i]["start"]], i)):
            blocks.append(("p", texts[i][0], texts[i][1]))
        if len(texts) > len(firsts):
            blocks.append(("details", f"All {len(texts)} comparisons on {task}, most "
                           "informative first", [t for t, _ in texts]))
    return blocks


def _task_section(task: str, rows: list[dict], full_table: list[dict], metric: str,
                  baseline: str, order: dict[str, dict[str, int]]) -> list[Block]:
    table = [t for t in full_table if t["task"] == task]
    top = max((t["budget"] for t in table), default=0)
    table = [t | {"budget_max": top} for t in table]
    table.sort(key=lambda t: (order["start"].get(t["start"], 99),
                              order["strategy"].get(t["strategy"], 99), t["budget"]))
    png = plots.efficiency_curves(table, metric, task)
    unit = " ×100" if metric_scale(metric) != 1 else ""
    headers = ["start", "strategy", "labels", "n", f"{metric_name(metric)}{unit}: mean ± std "
               "[95% CI]", f"Δ vs {baseline} [95% CI]", "p", "p (t-test)",
               "labels saved", "failed"]
    body, classes = [], []
    for t in table:
        delta = "–"
        if t["delta"] is not None:
            delta = _signed(t["delta"], metric)
            if t["delta_ci_low"] is not None:
                delta += f" [{_signed(t['delta_ci_low'], metric)}, {_signed(t['delta_ci_high'], metric)}]"
        saved = {"saved": f"≈ {t['labels_saved']:,}" if t["labels_saved"] is not None else "",
                 "none": "none", "unknown": "?", None: "–",
                 "not_reached": f"> {t['budget_max'] - t['budget']:,} (not reached)"
                 if t["budget_max"] > t["budget"] else "not reached"}[t["labels_saved_status"]]
        body.append([t["start"], t["strategy"], _budget(t), str(t["n"]), _cell(t, metric), delta,
                     format_p(t["p"]) if t["delta"] is not None else "–",
                     format_p(t["p_ttest"]) if t["delta"] is not None else "–", saved,
                     str(t["failed"]) if t["failed"] else ""])
        good = t["significant"] and ((t["delta"] < 0) == (metric in LOWER_IS_BETTER))
        classes.append("good" if good else "bad" if t["significant"] else "")
    blocks: list[Block] = [("img", f"efficiency_{slug(task)}.png", png,
                            f"{task}: {metric_name(metric)} vs label budget")]
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


def _confusion_blocks(rows: list[dict], metric: str, tasks: list[str]) -> list[Block]:
    """Best run per start at the task's largest budget that has a confusion matrix."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    blocks: list[Block] = []
    for task in tasks:
        have = [r for r in rows if r["task"] == task and r.get("status") == "ok"
                and _maybe_json(r.get("confusion")) and r.get(metric) is not None]
        if not have:
            continue
        top = max(r["budget"] for r in have)
        imgs = []
        for start in _order([r["start"] for r in have]):
            cands = [r for r in have if r["start"] == start and r["budget"] == top]
            if not cands:
                continue
            best = max(cands, key=lambda r: sign * float(r[metric]))
            title = (f"{task} · {start} ({best['strategy']}, seed {best.get('seed')}): "
                     f"{metric_name(metric)} {_num(float(best[metric]), metric)}")
            png = plots.confusion_heatmap(_maybe_json(best["confusion"]),
                                          _maybe_json(best.get("labels")) or [], title)
            imgs.append((f"confusion_{slug(task)}_{slug(start)}.png", png, title))
        label = next(r["budget_label"] for r in have if r["budget"] == top)
        blocks += [("h3", f"{task} at {_budget({'budget': top, 'budget_label': label})} labels"),
                   ("imgs", imgs)]
    return blocks


def _examples_blocks(rows: list[dict], metric: str, task: str) -> list[Block]:
    """Generation: the same test inputs, the reference and each start x strategy's output (its
    best run at its largest budget), side by side."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    have = [r for r in rows if r["task"] == task and r.get("status") == "ok"
            and _maybe_json(r.get("examples")) and r.get(metric) is not None]
    if not have:
        return []
    runs = []
    for key in _order([f"{r['start']} · {r['strategy']}" for r in have]):
        cands = [r for r in have if f"{r['start']} · {r['strategy']}" == key]
        top = max(r["budget"] for r in cands)
        best = max((r for r in cands if r["budget"] == top), key=lambda r: sign * float(r[metric]))
        labels = best["budget_label"] if best["budget_label"] == "zero-shot" else _budget(best)
        runs.append((f"{key} ({labels})", _maybe_json(best["examples"])))
    first = runs[0][1]
    body = [[str(ex["input"]), str(ex["target"]),
             *(str(r[i]["generated"]) if i < len(r) else "–" for _, r in runs)]
            for i, ex in enumerate(first)]
    return [("h3", f"{task}: example generations (best run per start and strategy, largest "
                   "budget; the first test inputs)"),
            ("table", ["input", "reference", *(name for name, _ in runs)], body, [])]


def _build(name: str, rows: list[dict], table: list[dict], metrics: dict[str, str],
           baseline: str, pretrain: dict | None,
           probes: list[dict] | None, contamination: list[dict] | None, compute: list[dict],
           config_yaml: str, notes: list[str], env: dict[str, Any] | None = None
           ) -> tuple[str, list[tuple[str, list[Block]]]]:
    order = {"start": _order([r["start"] for r in rows]),
             "strategy": _order([r["strategy"] for r in rows])}
    tasks = list(_order([r["task"] for r in rows]))
    corpus = (pretrain or {}).get("corpus")
    unit = (pretrain or {}).get("unit", "tokens")  # what the pre-training counts: tokens | images
    ok = sum(1 for r in rows if r.get("status") == "ok" and r.get(metrics[r["task"]]) is not None)
    used = sorted(set(metrics.values()))
    named = f"{metric_name(used[0])} ({used[0]})" if len(used) == 1 else "; ".join(
        f"{t}: {metric_name(m)} ({m})" for t, m in metrics.items())
    meta = (f"Metric: {named}; baseline: {baseline}; {len(rows)} runs, "
            f"{ok} ok, {len(rows) - ok} failed or without the metric."
            + (f" Pre-training corpus: {corpus}." if corpus else ""))
    verdicts = [b for t in tasks for b in _verdict_section(rows, metrics[t], baseline, corpus, [t])]
    sections: list[tuple[str, list[Block]]] = [("Verdict", [("p", meta, "meta"), *verdicts])]
    for task in tasks:
        sections.append((f"Task: {task}", _task_section(task, rows, table, metrics[task],
                                                        baseline, order)))
    if pretrain or probes:
        blocks: list[Block] = []
        if pretrain:
            hist = pretrain.get("history") or []

            def final(key: str) -> Any:
                return next((h[key] for h in reversed(hist) if h.get(key) is not None), None)

            blocks.append(("table", ["corpus", unit, "wall time", "FLOPs", "final train loss",
                                     "final val loss"],
                           [[str(corpus or "–"), _big(pretrain.get("tokens")),
                             _seconds(pretrain.get("seconds")), _big(pretrain.get("flops")),
                             _loss(final("train_loss")), _loss(final("val_loss"))]], [""]))
        imgs = []
        if pretrain and pretrain.get("history"):
            imgs.append(("pretrain_loss.png", plots.loss_curves(pretrain["history"], unit=unit),
                         f"pre-training loss vs {unit}"))
        if probes:
            imgs.append(("probes.png", plots.probe_curves(probes, probes[0].get("metric",
                                                                                used[0])),
                         "probe score vs tokens"))
        blocks.append(("imgs", imgs))
        if probes:
            blocks.append(("table", ["task", "checkpoint", "tokens", "probe score"],
                           [[str(p["task"]), Path(str(p.get("checkpoint", ""))).name,
                             _big(p.get("tokens")), _loss(p.get("score"), 4)] for p in probes], []))
        sections.append(("Pre-training and probes", blocks))
    examples = [b for t in tasks for b in _examples_blocks(rows, metrics[t], t)]
    if examples:
        sections.append(("Example generations", examples))
    conf = [b for t in tasks for b in _confusion_blocks(rows, metrics[t], [t])]
    if conf:
        sections.append(("Confusion matrices (best run per start, largest budget)", conf))
    if contamination:
        sections.append(_contamination_section(contamination))
    if compute:
        body = [[str(c["phase"]), _big(c.get("tokens")), _seconds(c.get("seconds")),
                 _big(c.get("flops"))] for c in compute]
        sections.append(("Compute", [("table", ["phase", unit, "wall time", "FLOPs"], body, []),
                                     ("img", "compute.png", plots.compute_bars(compute, unit),
                                      "compute per phase")]))
    failed = [r for r in rows if r.get("status") != "ok" or r.get(metrics[r["task"]]) is None]
    sections.append(("Failed runs", [
        ("table", ["task", "start", "strategy", "labels", "seed", "status", "error"],
         [[str(r["task"]), str(r["start"]), str(r["strategy"]), _budget(r), str(r.get("seed")),
           str(r.get("status")),
           str(r.get("error") or f"no '{metrics[r['task']]}' in the results")]
          for r in failed], ["bad"] * len(failed))
        if failed else ("p", "None: every run finished.", "")]))
    if notes:
        sections.append(("Notes", [("ul", list(notes))]))
    if env:  # a CPU rerun is bitwise equal with these versions and thread count
        sections.append(("Environment", [("table", ["", "value"],
                                          [[k, str(v)] for k, v in env.items()], [])]))
    sections.append(("Configuration", [("pre", config_yaml or "(not given)")]))
    return f"pretune study: {name}", sections


def _contamination_section(contamination: list[dict]) -> tuple[str, list[Block]]:
    body, cls = [], []
    if all(c.get("kind") == "image" for c in contamination):
        for c in contamination:
            ex = "; ".join(f"test #{e['id']} = pre-training #{e['match']}"
                           for e in c.get("examples", [])[:3])
            body.append([str(c.get("task", "")), str(c["test_examples"]), str(c["affected"]),
                         f"{100 * c['fraction']:.2f}%", "FLAGGED" if c["flag"] else "ok", ex])
            cls.append("flag" if c["flag"] else "")
        return ("Contamination (test images also in the pre-training data)", [
            ("table", ["task", "test images", "also in pre-training", "fraction", "flag",
                       "examples"], body, cls),
            ("p", "A test image counts when it is pixel-identical to a pre-training image once "
                  "both are resized to the task's format; flagged above 1%.", "")])
    held = any(c.get("held_out_docs") is not None for c in contamination)
    for c in contamination:
        ex = "; ".join(f"#{e['id']}: “{e['ngram']}”" for e in c.get("examples", [])[:2])
        row = [str(c.get("task", "")), str(c["n"]), str(c["test_examples"]),
               str(c["checked"]), str(c["short"]), str(c["affected"]),
               f"{100 * c['fraction']:.2f}%", "FLAGGED" if c["flag"] else "ok", ex]
        if held:
            docs = c.get("held_out_docs")
            row.insert(1, "–" if docs is None else f"{docs:,}")
        body.append(row)
        cls.append("flag" if c["flag"] else "")
    headers = ["task", "n", "test examples", "checked", "too short", "affected",
               "affected / checked", "flag", "examples"]
    if held:
        headers.insert(1, "corpus docs held out")
    note = ("Flagged when more than 1% of checkable test examples share an n-gram with the "
            "pre-training corpus; examples shorter than n words cannot be checked (a Chinese "
            "character counts as a word).")
    if held:
        note += (" A task made from the corpus's own source has its test and validation texts "
                 "held out: the corpus documents holding one were dropped before pre-training.")
    return ("Contamination (n-gram overlap of the corpus with test splits)", [
        ("table", headers, body, cls), ("p", note, "")])


def _loss(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{float(v):.{digits}f}"


def write_report(out_dir: Path, *, name: str, results: list[dict], metric: str | dict[str, str],
                 pretrain: dict | None = None, probes: list[dict] | None = None,
                 contamination: list[dict] | None = None, compute: list[dict] | None = None,
                 config_yaml: str = "", notes: list[str] | None = None,
                 baseline: str = "scratch", environment: dict[str, Any] | None = None
                 ) -> dict[str, Path]:
    """Write results.csv, summary.csv, report.md (+ plots/*.png) and report.html to out_dir.

    ``results``: one dict per run (see stats). ``metric``: one for every task, or task -> metric
    (a classification task beside a tagging one). ``pretrain``: {history: [{tokens, step,
    train_loss, val_loss}], tokens, seconds, flops, corpus}. ``probes``: [{task, checkpoint,
    tokens, score}]. ``contamination``: ngram_overlap() dicts with a ``task`` key. ``compute``:
    [{phase, tokens, seconds, flops}]. Failed runs are listed, never dropped. Returns the paths
    under keys results, summary, md, html (files) and plots (the PNG directory).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = list(notes or [])
    rows = normalize_budgets(results)
    tasks = list(_order([r["task"] for r in rows]))
    metrics = dict(metric) if isinstance(metric, dict) else dict.fromkeys(tasks, metric)
    for task in tasks:
        ok = [r for r in rows if r.get("status") == "ok" and r["task"] == task]
        if ok and not any(r.get(metrics[task]) is not None for r in ok):
            have = sorted({k for r in ok for k, v in r.items() if isinstance(v, int | float)})
            raise PretuneError(f"study metric '{metrics[task]}' is in no result row of {task}; "
                               f"set `metric` to one of: {', '.join(have)}")
    starts = list(_order([r["start"] for r in rows]))
    if starts and baseline not in starts:
        notes.insert(0, f"Baseline '{baseline}' was not run; comparisons use '{starts[0]}'.")
        baseline = starts[0]
    paths = {"results": out_dir / "results.csv", "summary": out_dir / "summary.csv",
             "md": out_dir / "report.md", "html": out_dir / "report.html",
             "plots": out_dir / "plots"}
    write_results_csv(paths["results"], list(results))
    table = [t for task in tasks for t in
             summary_table([r for r in rows if r["task"] == task], metrics[task], baseline)]
    write_summary_csv(paths["summary"], table)
    title, sections = _build(name, rows, table, metrics, baseline, pretrain, probes,
                             contamination, list(compute or []), config_yaml, notes,
                             environment)
    write_pngs(paths["plots"], sections)
    paths["md"].write_text(render_md(title, sections), encoding="utf-8")
    paths["html"].write_text(render_html(title, sections), encoding="utf-8")
    return paths
