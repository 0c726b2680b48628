"""Strategy x task score table: every fine-tuning strategy on both builtin tasks, from the
builtin MiniLM and from a pretune checkpoint, against the majority-class baseline.

    .venv/bin/python scripts/strategy_table.py --checkpoint runs/quickstart/pretrain/final

CPU-sized by default (a label budget, short max length, 2 epochs); prints a markdown table and
writes it to runs/strategy-table.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pretune.config import (
    FinetuneConfig,
    LoopConfig,
    ModelConfig,
    OptimConfig,
    StrategyConfig,
    TaskConfig,
)
from pretune.data.labeled import load_task
from pretune.finetune.run import finetune

STRATEGIES = [
    StrategyConfig(name="linear-probe", sklearn=True),
    StrategyConfig(name="linear-probe"),
    StrategyConfig(name="full"),
    StrategyConfig(name="partial", top_k=2),
    StrategyConfig(name="gradual"),
    StrategyConfig(name="llrd", llrd_decay=0.8),
    StrategyConfig(name="lora"),
    StrategyConfig(name="prompt"),
]
# Frozen-backbone / adapter strategies want a larger learning rate than full fine-tuning.
LR = {"linear-probe": 2e-3, "lora": 5e-4}


def label(s: StrategyConfig) -> str:
    return "linear-probe (sklearn)" if s.name == "linear-probe" and s.sklearn else s.name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="runs/quickstart/pretrain/final")
    ap.add_argument("--budget", type=int, default=512)
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--test-size", type=int, default=500)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--out", default="runs/strategy-table")
    args = ap.parse_args()

    starts = {"builtin:minilm": 5e-5, args.checkpoint: 2e-4}
    tasks = ["builtin:rotten-tomatoes", "builtin:wiki-topics"]
    lines = ["| start | strategy | " + " | ".join(t.removeprefix("builtin:") for t in tasks) + " |",
             "|---|---|" + "---|" * len(tasks)]
    majority = {}
    loaded = {}
    for t in tasks:
        tcfg = TaskConfig(path=t, test_size=args.test_size, val_fraction=0.05,
                          max_length=args.max_length, budget=args.budget)
        loaded[t] = (tcfg, load_task(tcfg.model_copy(update={"budget": None})))
        majority[t] = loaded[t][1].majority_baseline
    lines.append("| (majority class) | accuracy | " + " | ".join(f"{majority[t]:.3f}" for t in tasks) + " |")
    for start, base_lr in starts.items():
        for strat in STRATEGIES:
            cells = []
            for t in tasks:
                tcfg, task = loaded[t]
                cfg = FinetuneConfig(
                    name="cell", output_dir=args.out, model=ModelConfig(name=start),
                    task=tcfg, strategy=strat,
                    optim=OptimConfig(lr=LR.get(strat.name, base_lr), betas=(0.9, 0.999)),
                    train=LoopConfig(epochs=args.epochs, batch_size=16, progress=False,
                                     tensorboard=False), save_model=False,
                )
                t0 = time.perf_counter()
                try:
                    res = finetune(cfg, overwrite=True, task=task)
                    acc, f1 = res.metrics["accuracy"], res.metrics["macro_f1"]
                    cells.append(f"{acc:.3f} / {f1:.3f}")
                    print(f"{start} | {label(strat)} | {t}: acc {acc:.3f} macro-F1 {f1:.3f} "
                          f"({time.perf_counter() - t0:.0f}s)", flush=True)
                except Exception as e:  # noqa: BLE001 - a table cell, not a crash
                    cells.append(f"error: {type(e).__name__}")
                    print(f"{start} | {label(strat)} | {t}: {type(e).__name__}: {e}", flush=True)
            name = "MiniLM" if start == "builtin:minilm" else "pretune bert-mini"
            lines.append(f"| {name} | {label(strat)} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    note = (f"\naccuracy / macro-F1 on a {args.test_size}-example test split; {args.budget} "
            f"training labels, {args.epochs:g} epochs, max length {args.max_length}; prompt is "
            "zero-shot (no labels).\n")
    print(table + note)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.md").write_text(table + note)


if __name__ == "__main__":
    main()
