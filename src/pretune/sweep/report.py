"""Sweep outputs: trials.csv, best.yaml, summary.json, report.md (+ plots/) and report.html.

Plots use the study report's matplotlib style and its renderers, so both reports look alike:
the HTML inlines the PNGs as base64 (opens offline), the Markdown links ``plots/*.png``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from pretune.config import SweepConfig, dump_yaml
from pretune.config.sweep import apply_params
from pretune.study import plots
from pretune.study.render import render_html, render_md, write_plots

MAX_ROWS = 30  # trials shown in the report table (trials.csv has all)


def _value(t: Any) -> float | None:
    """A trial's score: its value, or (pruned) its last intermediate value."""
    if t.value is not None:
        return float(t.value)
    if t.intermediate_values:
        return float(t.intermediate_values[max(t.intermediate_values)])
    return None


def _duration(t: Any) -> float | None:
    return t.duration.total_seconds() if t.duration is not None else None


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def write_trials_csv(path: Path, trials: list[Any], keys: list[str]) -> None:
    """number, state, value (the optimised metric), std (k-fold), duration_s, params, error."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["number", "state", "value", "std", "duration_s", *keys, "retry_of", "error"])
        for t in trials:
            error = t.user_attrs.get("error", "")
            if not error and t.state.name == "FAIL":
                error = "interrupted (process stopped during the trial)"
            w.writerow([t.number, t.state.name, _value(t), t.user_attrs.get("std"),
                        _duration(t), *[t.params.get(k) for k in keys],
                        t.user_attrs.get("retry_of"), error])


def param_importances(study: Any, cfg: SweepConfig) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances, or None and the reason they were skipped."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(cfg.space) < 2:
        return None, "Parameter importances need at least 2 searched parameters; skipped."
    if len(complete) < 2:
        return None, "Parameter importances need at least 2 completed trials; skipped."
    if len({t.value for t in complete}) < 2:
        return None, "Every completed trial has the same score: no parameter mattered here."
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=cfg.seed)
        imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        return None, f"Parameter importances could not be computed ({e}); skipped."
    if not imp or any(not math.isfinite(v) for v in imp.values()):
        return None, "Parameter importances are undefined for these trials; skipped."
    return dict(imp), ("fANOVA importance (share of the score's variance explained by each "
                       f"parameter) over {len(complete)} completed trials.")


# --------------------------------------------------------------------------- plots


def history_plot(trials: list[Any], metric: str, direction: str) -> plots.Plot:
    """Score of every trial in order, with the best-so-far line (error bars: k-fold std)."""
    fig, ax = plots._fig()
    done = [t for t in trials if t.state.name == "COMPLETE"]
    pruned = [t for t in trials if t.state.name == "PRUNED" and _value(t) is not None]
    if done:
        x = [t.number for t in done]
        y = [float(t.value) for t in done]
        std = [t.user_attrs.get("std") or 0.0 for t in done]
        ax.errorbar(x, y, yerr=std if any(std) else None, fmt="o", color="C0", markersize=4,
                    capsize=2, label="completed")
        pick = max if direction == "maximize" else min
        best = [pick(y[: i + 1]) for i in range(len(y))]
        ax.step(x, best, where="post", color="C3", label="best so far")
    if pruned:
        ax.plot([t.number for t in pruned], [_value(t) for t in pruned], "x", color="0.5",
                label="pruned (last value)")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("Optimisation history")
    if done or pruned:
        ax.legend(fontsize=8)
    return plots.render(fig, "history", "optimisation history")


def importance_plot(importances: dict[str, float]) -> plots.Plot:
    names = list(importances)[::-1]  # most important on top
    fig, ax = plots._fig(6.0, 0.9 + 0.4 * len(names))
    ax.barh(range(len(names)), [importances[n] for n in names], color="C0")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("importance (fANOVA)")
    ax.set_title("Parameter importances")
    return plots.render(fig, "importances", "parameter importances")


def param_plot(key: str, spec: Any, trials: list[Any], metric: str) -> plots.Plot:
    """Score vs one parameter (categorical values on evenly spaced ticks)."""
    fig, ax = plots._fig(4.6, 3.2)
    pts = [(t.params[key], float(t.value)) for t in trials
           if t.state.name == "COMPLETE" and key in t.params]
    if spec.choices is not None:
        labels = [str(c) for c in spec.choices]
        pos = {str(c): i for i, c in enumerate(spec.choices)}
        ax.plot([pos[str(v)] for v, _ in pts], [y for _, y in pts], "o", alpha=0.7)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=8, rotation=30 if len(labels) > 4 else 0)
        ax.set_xlim(-0.5, len(labels) - 0.5)
    else:
        ax.plot([float(v) for v, _ in pts], [y for _, y in pts], "o", alpha=0.7)
        if spec.log:
            ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"Score vs {key}")
    return plots.render(fig, f"param_{_slug(key)}", f"score vs {key}")


def _slug(key: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in key)


# --------------------------------------------------------------------------- report


def _score(t: Any, kfold: int | None) -> str:
    v = _value(t)
    if v is None:
        return ""
    std = t.user_attrs.get("std")
    return f"{v:.4f} ± {std:.4f}" if kfold and std is not None else f"{v:.4f}"


def _build(cfg: SweepConfig, root: Path, trials: list[Any], best: Any, metric: str,
           direction: str, importances: dict[str, float] | None, imp_note: str) -> list:
    keys = list(cfg.space)
    counts = {s: sum(t.state.name == s for t in trials) for s in
              ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    how = (f"{cfg.kfold}-fold cross-validation mean over train+val" if cfg.kfold
           else "the validation split")
    result: list = [("p", f"Objective: {direction} {metric} on {how} (the test split is never "
                     f"used for selection). Sampler {cfg.sampler}, pruner {cfg.pruner}, seed "
                     f"{cfg.seed}.", "meta"),
                    ("p", "Trials: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()
                                                 if n), "meta")]
    if best is None:
        result.append(("p", "No trial completed; see the errors in trials.csv.", "verdict bad"))
    else:
        result.append(("p", f"Best trial #{best.number}: {metric} = {_score(best, cfg.kfold)}",
                       "verdict good"))
        result.append(("table", ["parameter", "value"],
                       [[k, _fmt(best.params.get(k))] for k in keys], []))
        result.append(("p", "Retrain the best configuration (it is the base config with these "
                       "parameters applied):", "meta"))
        result.append(("pre", f"pretune finetune {root / 'best.yaml'}\n"))
        if cfg.kfold:
            result.append(("p", "best.yaml trains once on the fixed train/validation split, so "
                           "its validation score differs from the cross-validation mean.", "meta"))
    reverse = direction == "maximize"
    ranked = sorted(trials, key=lambda t: (_value(t) is None,
                                           -(_value(t) or 0) if reverse else (_value(t) or 0)))
    rows = [[str(t.number), t.state.name.lower(), _score(t, cfg.kfold),
             _fmt(_duration(t)), *[_fmt(t.params.get(k)) for k in keys]]
            for t in ranked[:MAX_ROWS]]
    classes = ["good" if best is not None and t.number == best.number else "" for t in ranked]
    table = [("table", ["trial", "state", metric, "seconds", *keys], rows, classes)]
    if len(trials) > MAX_ROWS:
        table.append(("p", f"Top {MAX_ROWS} of {len(trials)} trials; trials.csv has all.", "meta"))
    figs: list = [("fig", history_plot(trials, metric, direction))]
    if importances is not None:
        figs.append(("fig", importance_plot(importances)))
    figs.append(("p", imp_note, "meta"))
    figs.append(("figs", [param_plot(k, s, trials, metric) for k, s in cfg.space.items()]))
    return [("Result", result), ("Trials", table), ("Plots", figs),
            ("Configuration", [("pre", dump_yaml(cfg))])]


def write_outputs(root: Path, cfg: SweepConfig, study: Any, metric: str,
                  direction: str) -> dict[str, Any]:
    """Write every sweep output from the study; return the summary (also summary.json)."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    keys = list(cfg.space)
    write_trials_csv(root / "trials.csv", trials, keys)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = None
    if complete:
        best = study.best_trial
        best_cfg = apply_params(cfg.base, best.params).model_copy(
            update={"name": f"{cfg.name}-best"})
        header = (f"# best trial {best.number} of sweep {cfg.name}: validation {metric} = "
                  f"{best.value:.6g}\n# retrain: pretune finetune {root / 'best.yaml'}\n")
        (root / "best.yaml").write_text(header + dump_yaml(best_cfg), encoding="utf-8")
    importances, note = param_importances(study, cfg)
    sections = _build(cfg, root, trials, best, metric, direction, importances, note)
    title = f"Sweep {cfg.name}"
    write_plots(root / "plots", sections)
    (root / "report.md").write_text(render_md(title, sections), encoding="utf-8")
    (root / "report.html").write_text(render_html(title, sections), encoding="utf-8")
    errors = [t.user_attrs["error"] for t in trials if t.user_attrs.get("error")]
    summary = {
        "metric": metric, "direction": direction, "kfold": cfg.kfold,
        "states": {s.name: sum(t.state == s for t in trials) for s in optuna.trial.TrialState},
        "best": None if best is None else {
            "number": best.number, "value": float(best.value), "std": best.user_attrs.get("std"),
            "params": dict(best.params), "val_metrics": best.user_attrs.get("val_metrics")},
        "importances": importances, "errors": errors,
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable))
    return summary


def _jsonable(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else str(v)
