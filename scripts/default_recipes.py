"""Do pretune's default recipes learn? Every strategy from the builtin MiniLM on both builtin
tasks at two label budgets with NO recipe setting (optim.lr, class_weights, threshold and
train.min_steps all at their defaults), against the majority class; then an imbalanced task
(rotten-tomatoes with the rotten class subsampled to 13%) with defaults vs hand-tuned settings.

    .venv/bin/python scripts/default_recipes.py            # ~35 min on 2 CPU cores

Prints markdown tables and writes them to runs/default-recipes/table.md. Only the split (500
test examples, 5% validation) and max length 64 are set, to fit a CPU.
"""

from __future__ import annotations

import argparse
import csv
import functools
import time
from pathlib import Path
from typing import Any

import numpy as np

from pretune.config import FinetuneConfig
from pretune.data.builtin_tasks import builtin_rows
from pretune.finetune.run import finetune

STRATEGIES = {
    "linear-probe (sklearn)": {"name": "linear-probe", "sklearn": True},
    "linear-probe": {"name": "linear-probe"},
    "full": {"name": "full"},
    "partial": {"name": "partial"},
    "gradual": {"name": "gradual"},
    "llrd": {"name": "llrd"},
    "lora": {"name": "lora"},
    "prompt (zero-shot)": {"name": "prompt"},
}
TASKS = ["builtin:rotten-tomatoes", "builtin:wiki-topics"]
SPLIT = {"test_size": 500, "val_fraction": 0.05, "max_length": 64}


def run(out: str, name: str, task: dict[str, Any], strategy: dict[str, Any],
        **extra: Any) -> tuple[dict[str, Any], float]:
    cfg = FinetuneConfig.model_validate({
        "name": name, "output_dir": out, "model": {"name": "builtin:minilm"},
        "task": {**SPLIT, **task}, "strategy": strategy, "save_model": False,
        "train": {"progress": False, "report_to": []}, **extra})
    t0 = time.perf_counter()
    res = finetune(cfg, overwrite=True, quiet=True)
    return res.metrics, time.perf_counter() - t0


@functools.cache
def majority_f1(task: str) -> float:
    """Macro-F1 of always predicting the majority class (one class scores, the rest 0)."""
    rows, _, label = builtin_rows(task.removeprefix("builtin:"))
    share = max(np.unique([r[label] for r in rows], return_counts=True)[1]) / len(rows)
    n_classes = len({r[label] for r in rows})
    return 2 * share / (1 + share) / n_classes


def strategy_table(out: str, budgets: list[int]) -> str:
    head = "| strategy | " + " | ".join(f"{t.removeprefix('builtin:')} @ {b}" for t in TASKS
                                        for b in budgets) + " |"
    lines = [head, "|---|" + "---|" * (len(TASKS) * len(budgets)),
             "| (majority class) | " + " | ".join(f"{100 * majority_f1(t):.1f}" for t in TASKS
                                                 for _ in budgets) + " |"]
    worst = np.inf
    for label, strat in STRATEGIES.items():
        cells = []
        for t in TASKS:
            for b in budgets:
                m, secs = run(out, "cell", {"path": t, "budget": b}, strat)
                margin = 100 * (m["macro_f1"] - majority_f1(t))
                worst = min(worst, margin)
                cells.append(f"{100 * m['macro_f1']:.1f} (+{margin:.1f})")
                print(f"{label} | {t} @ {b}: macro-F1 {m['macro_f1']:.3f} ({secs:.0f} s)",
                      flush=True)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nsmallest margin over the majority class: {worst:+.1f} points\n"


def imbalanced_csv(out: Path) -> Path:
    rows, text_f, label_f = builtin_rows("rotten-tomatoes")
    fresh = [r for r in rows if r[label_f] == "fresh"]
    rotten = [r for r in rows if r[label_f] == "rotten"]
    n_rot = round(0.13 / 0.87 * len(fresh))
    rng = np.random.default_rng(0)
    keep = fresh + [rotten[i] for i in rng.choice(len(rotten), n_rot, replace=False)]
    keep = [keep[i] for i in rng.permutation(len(keep))]
    path = out / "rt-13pct-rotten.csv"
    out.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows([r[text_f], r[label_f]] for r in keep)
    return path


def imbalance_table(out: str, budget: int) -> str:
    data = str(imbalanced_csv(Path(out)))
    task = {"path": data, "budget": budget}
    runs = [
        ("full, defaults", {"name": "full"}, {}),
        ("lora, defaults", {"name": "lora"}, {}),
        ("linear-probe (sklearn), defaults", {"name": "linear-probe", "sklearn": True}, {}),
        ("full, hand-tuned: lr 1e-4, class weights", {"name": "full"},
         {"optim": {"lr": 1e-4}, "class_weights": True, "threshold": "off"}),
        ("lora, hand-tuned: lr 1e-3, class weights", {"name": "lora"},
         {"optim": {"lr": 1e-3}, "class_weights": True, "threshold": "off"}),
        ("full, the old defaults: lr 5e-5, 4 epochs, no weights", {"name": "full"},
         {"optim": {"lr": 5e-5}, "class_weights": False, "threshold": "off",
          "train": {"progress": False, "report_to": [], "min_steps": None}}),
    ]
    lines = ["| run | rotten F1 at 0.5 | rotten F1, tuned threshold | macro-F1 | ROC-AUC |",
             "|---|---|---|---|---|"]
    for label, strat, extra in runs:
        m, secs = run(out, "imbalanced", task, strat, **extra)
        tuned = m.get("tuned_f1_positive")
        lines.append(f"| {label} | {m['f1_positive'] if 'f1_positive' in m else _pos(m):.3f} | "
                     f"{'–' if tuned is None else f'{tuned:.3f}'} | {m['macro_f1']:.3f} | "
                     f"{m.get('roc_auc', float('nan')):.3f} |")
        print(lines[-1], f"({secs:.0f} s)", flush=True)
    return "\n".join(lines) + "\n"


def _pos(m: dict[str, Any]) -> float:
    return m["per_class"]["rotten"]["f1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/default-recipes")
    ap.add_argument("--budgets", type=int, nargs="+", default=[128, 1024])
    ap.add_argument("--imbalanced-budget", type=int, default=256)
    ap.add_argument("--skip-strategies", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    parts = []
    if not args.skip_strategies:
        parts.append("Macro-F1 x100 (margin over the majority class) of each strategy's "
                     "default recipe from builtin:minilm:\n\n" +
                     strategy_table(args.out, args.budgets))
    parts.append(f"Imbalanced task (rotten-tomatoes, rotten subsampled to 13%), "
                 f"{args.imbalanced_budget} labels:\n\n" +
                 imbalance_table(args.out, args.imbalanced_budget))
    text = "\n".join(parts) + f"\nwall time {time.perf_counter() - t0:.0f} s\n"
    print(text)
    (Path(args.out) / "table.md").write_text(text)


if __name__ == "__main__":
    main()
