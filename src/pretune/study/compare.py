"""``pretune compare runs/a runs/b ...``: studies side by side in one report.

Each study directory holds the ``report.json`` its report wrote (rows, corrected comparisons,
trivial baselines) and its ``study.yaml``. The comparison page shows: the studies (runs,
tasks, budgets, seeds), every config setting that differs between them, and per shared task
one data-efficiency plot with every study's curves and a table of the headline comparisons
(each start vs its study's baseline at each strategy and budget: Δ, corrected p, d_z), one
column per study. Nothing is re-run or re-tested: each study's numbers are its own report's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pretune.config import load_yaml
from pretune.errors import PretuneError
from pretune.study import plots
from pretune.study.render import Block, render_html, render_md, slug, write_plots
from pretune.study.stats import metric_name
from pretune.study.units import budget, first_order, signed
from pretune.study.verdicts import format_p


def _load(path: Path) -> dict[str, Any]:
    f = path / "report.json"
    if not f.is_file():
        raise PretuneError(f"{f} not found: {path} is not a study directory with a report "
                           "from this pretune (run `pretune study` for it, or rerun it to "
                           "rewrite its report)")
    try:
        rep = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PretuneError(f"{f} is not valid JSON ({e.msg}, line {e.lineno}); rerun the study "
                           "to rewrite it") from None
    cfg = path / "study.yaml"
    rep["config"] = load_yaml(cfg) if cfg.is_file() else {}
    rep["dir"] = path
    return rep


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": [{"c": 1}]}} -> {"a.b[0].c": 1}: one row per setting that can differ."""
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(d, list) and d and all(isinstance(v, dict) for v in d):
        out = {}
        for i, v in enumerate(d):
            out.update(_flat(v, f"{prefix}[{i}]"))
        return out
    return {prefix: d}


def _names(reps: list[dict]) -> list[str]:
    names = [r["dir"].name for r in reps]
    if len(set(names)) < len(names):  # runs/a/quick vs runs/b/quick
        names = [f"{r['dir'].parent.name}/{r['dir'].name}" for r in reps]
    if len(set(names)) < len(names):
        names = [f"{n} ({i + 1})" for i, n in enumerate(names)]
    return names


def _config_diff(reps: list[dict], names: list[str]) -> list[Block]:
    flats = [_flat(r["config"]) for r in reps]
    missing = object()

    def shown(v: Any) -> str:
        return "–" if v is missing else v if isinstance(v, str) else json.dumps(
            v, ensure_ascii=False, default=str)

    body = []
    for k in sorted(set().union(*flats) - {"name", "output_dir"}):
        values = [shown(f.get(k, missing)) for f in flats]
        if len(set(values)) > 1:
            body.append([k, *values])
    if not body:
        return [("p", "The configurations are identical (apart from name and output_dir).", "")]
    return [("table", ["setting", *names], body, [])]


def _overview(reps: list[dict], names: list[str]) -> list[Block]:
    body = []
    for name, r in zip(names, reps, strict=True):
        rows = r["results"]
        ok = sum(x.get("status") == "ok" for x in rows)
        body.append([name, str(r["dir"]), f"{ok}/{len(rows)}",
                     ", ".join(first_order(x["task"] for x in rows)),
                     ", ".join(first_order(x["start"] for x in rows)),
                     ", ".join(dict.fromkeys(budget(x) for x in sorted(
                         rows, key=lambda x: x["budget"]) if x["budget"] > 0)),
                     str(len({x.get("seed") for x in rows})), r.get("correction", "holm")])
    return [("table", ["study", "directory", "runs ok", "tasks", "starts", "labels", "seeds",
                       "correction"], body, [])]


def _task_blocks(task: str, reps: list[dict], names: list[str]) -> list[Block]:
    metric = reps[0]["metrics"][task]
    blocks: list[Block] = []
    other = [n for n, r in zip(names, reps, strict=True) if r["metrics"].get(task) != metric]
    if other:
        blocks.append(("p", f"{', '.join(other)} score {task} on another metric; only "
                            f"studies on {metric_name(metric)} are drawn.", "meta"))
    summary = []
    for name, r in zip(names, reps, strict=True):
        if r["metrics"].get(task) == metric:
            summary += [s | {"start": f"{name}: {s['start']}"} for s in r["summary"]
                        if s["task"] == task]
    budgets = [sorted({s["budget"] for s in r["summary"] if s["task"] == task}) for r in reps]
    if len({tuple(b) for b in budgets}) > 1:
        blocks.append(("p", "The studies ran different label budgets: "
                       + "; ".join(f"{n}: {', '.join(f'{b:,}' for b in bs)}"
                                   for n, bs in zip(names, budgets, strict=True)) + ".", "meta"))
    trivial = next((r["baselines"][task] for r in reps if task in r.get("baselines", {})), None)
    line = {"name": trivial["name"], "value": trivial["metrics"].get(metric)} if trivial else None
    plot = plots.efficiency_curves(summary, metric, task, line)
    plot.name = f"compare_{slug(task)}"
    blocks.append(("fig", plot))
    keys = list(dict.fromkeys((s["start"], s["strategy"], s["budget"], s["budget_label"])
                              for r in reps for s in r["summary"]
                              if s["task"] == task and s.get("delta") is not None))
    body = []
    for start, strategy, b, label in keys:
        row = [start, strategy, budget({"budget": b, "budget_label": label})]
        for r in reps:
            if r["metrics"].get(task) != metric:
                row.append("other metric")
                continue
            s = next((s for s in r["summary"] if (s["task"], s["start"], s["strategy"],
                                                   s["budget"]) == (task, start, strategy, b)
                      and s.get("delta") is not None), None)
            if s is None:
                row.append("–")
                continue
            p = s.get("p_adj") if s.get("p_adj") is not None else s.get("p")
            star = " *" if s.get("significant") else ""
            dz = f", d_z {s['d_z']:.2f}" if s.get("d_z") is not None else ""
            n = s.get("n_paired") or s["n"]
            row.append(f"{signed(s['delta'], metric)}{star} (p {format_p(p)}{dz}, n {n})")
        body.append(row)
    if body:
        blocks += [("p", f"Δ {metric_name(metric)} vs each study's own baseline (corrected p "
                         "within its report; * significant there):", "meta"),
                   ("table", ["start", "strategy", "labels", *names], body, [])]
    return blocks


def compare(dirs: list[str | Path], output: str | Path | None = None) -> Path:
    """Write ``report.html`` / ``report.md`` (+ plots) comparing the studies; returns the
    directory (default: beside the first study, ``compare-<a>-vs-<b>``)."""
    if len(dirs) < 2:
        raise PretuneError("compare needs at least two study directories, e.g. "
                           "`pretune compare runs/quick runs/long`")
    reps = [_load(Path(d)) for d in dirs]
    names = _names(reps)
    out = Path(output) if output else \
        Path(dirs[0]).parent / ("compare-" + "-vs-".join(slug(n) for n in names))
    shared = [t for t in first_order(x["task"] for x in reps[0]["results"])
              if all(t in r["metrics"] for r in reps[1:])]
    sections: list[tuple[str, list[Block]]] = [
        ("Studies", _overview(reps, names)),
        ("What differs in their configs", _config_diff(reps, names))]
    if not shared:
        sections.append(("Tasks", [("p", "The studies share no task: nothing to lay side by "
                                         "side.", "verdict bad")]))
    for task in shared:
        sections.append((f"Task: {task}", _task_blocks(task, reps, names)))
    title = "pretune compare: " + " vs ".join(names)
    out.mkdir(parents=True, exist_ok=True)
    write_plots(out / "plots", sections)
    (out / "report.md").write_text(render_md(title, sections), encoding="utf-8")
    (out / "report.html").write_text(render_html(title, sections), encoding="utf-8")
    print(f"report: {out / 'report.html'}")
    return out
