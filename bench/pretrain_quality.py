"""Which pre-training objective pays off at a small CPU budget? Score vs budget per objective.

For each wall-clock budget (minutes of pre-training on this machine), every objective
pre-trains bert-mini on ``builtin:news`` (the quickstart's corpus, tokenizer and architecture)
for the number of steps its measured speed allows in that time, then one ``pretune study``
scores each pre-trained model against the same architecture from scratch: the scikit-learn
linear probe (frozen mean-pooled features) at 128 and 1,024 labels, and full fine-tuning at
1,024 labels, on both builtin tasks, 3 seeds, paired statistics (the study's own).

Objectives (``pretrain`` settings merged onto the quickstart's):
  mlm       BERT MLM, 15% masking (the quickstart's recipe before this benchmark)
  mlm40     MLM with 40% masking (Wettig et al. 2022)
  cramming  40% masking, no dropout, triangular LR with a high peak (Geiping & Goldstein 2022)
  electra   replaced-token detection, generator 1/4 width (Clark et al. 2020)
  simcse    MLM + unsupervised SimCSE on 32-token spans (Gao et al. 2021)
  wordvec   corpus word vectors (PPMI + SVD) in the embeddings; no transformer training
  wv-mlm    word vectors, then MLM 40%
  wv-electra  word vectors, then ELECTRA

    python bench/pretrain_quality.py --minutes 4                 # the quickstart's budget
    python bench/pretrain_quality.py --minutes 1 2 4             # the curve (3x the time)
    python bench/pretrain_quality.py --quick                     # smoke test, tiny budget

Speeds are measured first (a short run of each objective, alone on the machine), so the
budgets are steps: the runs themselves are deterministic and cached by the study on rerun.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from pretune.config import PretrainConfig
from pretune.config.base import deep_merge
from pretune.config.study import StudyConfig
from pretune.data.pipeline import prepare
from pretune.study.runner import run_study
from pretune.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVES: dict[str, dict[str, Any]] = {
    "mlm": {},
    "mlm40": {"mlm_probability": 0.4},
    "cramming": {"mlm_probability": 0.4, "model": {"dropout": 0.0},
                 "optim": {"lr": 1.5e-3, "warmup_ratio": 0.5, "schedule": "linear"}},
    "electra": {"objective": "electra", "optim": {"lr": 1.5e-3}},
    "simcse": {"mlm_probability": 0.4, "simcse_weight": 0.5},
    "wordvec": {"objective": "wordvec"},
    "wv-mlm": {"embedding_init": "wordvec", "mlm_probability": 0.4},
    "wv-electra": {"embedding_init": "wordvec", "objective": "electra", "optim": {"lr": 1.5e-3}},
}
TASKS = ("rotten-tomatoes", "wiki-topics")


def base_study() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())


def measure_speed(study: dict[str, Any], objectives: list[str], steps: int, out: Path) -> dict[str, float]:
    """Seconds per optimizer step of each objective (a short run; the first steps count,
    as they do in the real run)."""
    artifact = prepare(StudyConfig.model_validate(study).prepare)
    speed = {}
    for name in objectives:
        if OBJECTIVES[name].get("objective") == "wordvec":
            speed[name] = 0.0
            continue
        cfg = deep_merge(study["pretrain"], OBJECTIVES[name])
        cfg = deep_merge(cfg, {"name": f"speed-{name}", "output_dir": str(out),
                               "data": str(artifact),
                               "train": {"max_steps": steps, "eval_every": None,
                                         "save_every": None, "progress": False,
                                         "tensorboard": False}})
        pretrain(PretrainConfig.model_validate(cfg), overwrite=True)
        summary = json.loads((out / f"speed-{name}" / "summary.json").read_text())
        speed[name] = summary["train_seconds"] / steps
        print(f"speed {name}: {speed[name]:.3f} s/step", flush=True)
    return speed


def study_for(study: dict[str, Any], minutes: float, objectives: list[str],
              speed: dict[str, float], seeds: list[int], quick: bool,
              full_on: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """One study config: the first objective is `pretrain`, the others `pretrain_variants`."""
    def steps(name: str) -> int:
        s = speed[name]
        return 1 if s == 0 else max(4, int(minutes * 60 / s))

    first, *rest = objectives
    pre = dict(study["pretrain"])
    pre = deep_merge(pre, OBJECTIVES[first])
    pre["train"] = {**pre["train"], "max_steps": steps(first), "eval_every": max(1, steps(first) // 4),
                    "save_every": None}
    variants = {}
    for name in rest:
        v = deep_merge(OBJECTIVES[name], {"train": {"max_steps": steps(name), "save_every": None,
                                                    "eval_every": max(1, steps(name) // 4)}})
        variants[name] = v
    out = dict(study)
    out.update({
        "name": f"quality-{minutes:g}min", "pretrain": pre, "pretrain_variants": variants,
        "starts": ["scratch", "pretrained"] + [f"pretrained-{n}" for n in rest],
        "strategies": [{"name": "linear-probe", "sklearn": True}, {"name": "full"}],
        "budgets": [128, 1024], "seeds": seeds, "probes": False,
        "exclude": [{"strategy": "full", "budget": 128}],
    })
    start_of = {first: "pretrained", **{n: f"pretrained-{n}" for n in rest}}
    for task, names in (full_on or {}).items():  # full fine-tuning on this task: these only
        out["exclude"] += [{"task": task, "strategy": "full", "start": start_of[n]}
                           for n in objectives if n not in names]
    if quick:
        out["tasks"] = [dict(t, test_size=200) for t in study["tasks"]]
        out["finetune"] = {**study.get("finetune", {}), "train": {"epochs": 1, "batch_size": 16}}
    return out


def table(summary_csv: Path, objectives: list[str], tokens: dict[str, int]) -> list[str]:
    rows = list(csv.DictReader(summary_csv.open()))
    names = {"pretrained": objectives[0], **{f"pretrained-{n}": n for n in objectives[1:]}}
    cols = [(t, s, b) for s in ("linear-probe-sklearn", "full") for t in TASKS
            for b in (("128", "1024") if s != "full" else ("1024",))]
    find = {(r["task"], r["start"], r["strategy"], r["budget"]): r for r in rows}
    head = "| objective | tokens | " + " | ".join(
        f"{t.split('-')[0]} {'LP' if s != 'full' else 'full'}@{b}" for t, s, b in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]

    def cell(start: str, key: tuple) -> str:
        r = find.get((key[0], start, key[1], key[2]))
        if r is None or not r["mean"]:
            return "–"
        text = f"{100 * float(r['mean']):.1f}"
        if start != "scratch" and r.get("delta"):
            star = "*" if r.get("significant") == "True" else ""
            p = f", p={float(r['p']):.3f}" if r.get("p") else ""
            text += f" ({100 * float(r['delta']):+.1f}{star}{p})"
        return text

    lines.append("| scratch | 0 | " + " | ".join(cell("scratch", c) for c in cols) + " |")
    for start, name in names.items():
        lines.append(f"| {name} | {tokens.get(name, 0):,} | "
                     + " | ".join(cell(start, c) for c in cols) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[4.0])
    ap.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="runs/bench-quality")
    ap.add_argument("--speed-steps", type=int, default=30)
    ap.add_argument("--wiki-full", nargs="+", choices=list(OBJECTIVES),
                    help="full fine-tuning on wiki-topics for these objectives only (and "
                         "scratch); ~70 s a run on 2 cores, so the whole matrix takes an hour")
    ap.add_argument("--quick", action="store_true", help="tiny budget and tasks (smoke test)")
    args = ap.parse_args()
    study = base_study()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    speed_file = out / "speed.json"
    if speed_file.is_file() and set(json.loads(speed_file.read_text())) >= set(args.objectives):
        speed = json.loads(speed_file.read_text())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            speed = measure_speed(study, args.objectives, 5 if args.quick else args.speed_steps,
                                  Path(tmp))
        speed_file.write_text(json.dumps(speed, indent=1))
    minutes = [0.05] if args.quick else args.minutes
    report = []
    for m in minutes:
        cfg = study_for(study, m, args.objectives, speed, [0] if args.quick else args.seeds,
                        args.quick, {"wiki-topics": args.wiki_full} if args.wiki_full else None)
        cfg["output_dir"] = str(out)
        t0 = time.perf_counter()
        study_dir = run_study(StudyConfig.model_validate(cfg))
        wall = time.perf_counter() - t0
        tokens, seconds = {}, {}
        for name in args.objectives:
            run = study_dir / ("pretrain" if name == args.objectives[0] else f"pretrain-{name}")
            s = json.loads((run / "summary.json").read_text())
            tokens[name], seconds[name] = int(s.get("tokens") or 0), float(s.get("seconds") or 0)
        report.append(f"\n## {m:g} minute(s) of pre-training per objective (study {wall / 60:.1f} min)\n")
        report.append("pre-training seconds: " + ", ".join(
            f"{n} {seconds[n]:.0f}" for n in args.objectives))
        report.append("macro-F1 x 100, mean of seeds (delta vs scratch, * = p < 0.05 and CI "
                      "excludes 0):\n")
        report += table(study_dir / "summary.csv", args.objectives, tokens)
        print("\n".join(report), flush=True)
    (out / "table.md").write_text("\n".join(report) + "\n")
    print(f"\nwritten: {out / 'table.md'}")


if __name__ == "__main__":
    main()
