"""Strategy x task score table: every fine-tuning strategy on both builtin tasks, from the
builtin MiniLM and from a pretune checkpoint, against the majority-class baseline.

    .venv/bin/python scripts/strategy_table.py --checkpoint runs/quickstart/pretrain/final

CPU-sized by default (a label budget, short max length, 4 epochs); prints a markdown table and
writes it to runs/strategy-table/table.md.
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
    StrategyConfig(name="prompt", few_shot=True),  # PET: needs a trained MLM head
]
# Learning rates by start: MiniLM is a converged encoder (full fine-tuning wants ~1e-4); the
# small pretune checkpoint is under-trained and learns faster at 5e-4. Frozen-backbone and
# adapter strategies train few parameters and want larger steps than full fine-tuning.
LR = {
    "minilm": {"default": 1e-4, "linear-probe": 3e-3, "lora": 1e-3},
    "checkpoint": {"default": 5e-4, "linear-probe": 3e-3, "lora": 2e-3},
}


def label(s: StrategyConfig) -> str:
    if s.name == "linear-probe" and s.sklearn:
        return "linear-probe (sklearn)"
    if s.name == "prompt":
        return "prompt (few-shot PET)" if s.few_shot else "prompt (zero-shot)"
    return s.name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="runs/quickstart/pretrain/final")
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--epochs", type=float, default=4)
    ap.add_argument("--test-size", type=int, default=500)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--out", default="runs/strategy-table")
    ap.add_argument("--strategies", default=None,
                    help="comma-separated row labels to run (default: all), e.g. 'full,lora'")
    ap.add_argument("--starts", default="minilm,checkpoint", help="minilm, checkpoint or both")
    args = ap.parse_args()
    chosen = [s for s in STRATEGIES
              if args.strategies is None or label(s) in args.strategies.split(",")]

    starts = {"builtin:minilm": LR["minilm"], args.checkpoint: LR["checkpoint"]}
    if "minilm" not in args.starts.split(","):
        starts.pop("builtin:minilm")
    if "checkpoint" not in args.starts.split(","):
        starts.pop(args.checkpoint)
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
    for start, lrs in starts.items():
        for strat in chosen:
            cells = []
            for t in tasks:
                tcfg, task = loaded[t]
                cfg = FinetuneConfig(
                    name="cell", output_dir=args.out, model=ModelConfig(name=start),
                    task=tcfg, strategy=strat,
                    optim=OptimConfig(lr=lrs.get(strat.name, lrs["default"]), betas=(0.9, 0.999)),
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
                    cells.append("n/a (no MLM head)" if "needs a masked LM" in str(e)
                                 else f"error: {type(e).__name__}")
                    print(f"{start} | {label(strat)} | {t}: {type(e).__name__}: {e}", flush=True)
            name = "MiniLM" if start == "builtin:minilm" else "pretune bert-mini"
            lines.append(f"| {name} | {label(strat)} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    note = (f"\naccuracy / macro-F1 on a {args.test_size}-example test split; {args.budget} "
            f"training labels, {args.epochs:g} epochs, max length {args.max_length}; zero-shot "
            "prompting uses no labels.\n")
    print(table + note)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    name = "table.md" if args.strategies is None else "table-partial.md"  # keep the full one
    (Path(args.out) / name).write_text(table + note)


if __name__ == "__main__":
    main()
