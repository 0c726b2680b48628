"""A study's fine-tuning matrix, sequential vs ``--workers N``: cells per minute, same results?

The matrix is quickstart-shaped (2 tasks x {scratch, pretrained} x {sklearn linear probe, full
fine-tuning} x 2 budgets x 3 seeds = 48 cells) with tiny models and short recipes, so the
whole bench runs in minutes on 2 CPU cores. The phases before the matrix (prepare,
pre-training, probes) run once and are reused; then the matrix runs twice in the same study
directory, its cells deleted in between: once with 1 process (all cores), once with
``--workers N`` (cores / N threads each). Printed: wall time of each matrix, cells per minute,
the ratio, and whether every cell's metrics are identical (on CPU, a different thread count
per run may change float reductions in the last bits; the tests check bitwise equality at an
equal thread count).

Run: ``.venv/bin/python bench/study.py [--workers 2]``. On a GPU machine: ``--workers`` = the
number of GPUs (each worker then sees one).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

STUDY = """
name: bench-study
prepare: {max_docs: 600, tokenizer: {vocab_size: 2000}}
pretrain:
  model: {name: bert-tiny, overrides: {hidden_size: 128, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 256}}
  seq_len: 64
  train: {max_steps: 40, batch_size: 16, eval_every: 20, save_every: 20, progress: false, report_to: []}
tasks:
  - {path: "builtin:rotten-tomatoes", test_size: 300, val_fraction: 0.05, max_length: 64}
  - {path: "builtin:wiki-topics", test_size: 300, val_fraction: 0.05, max_length: 48}
starts: [scratch, pretrained]
strategies:
  - {name: linear-probe, sklearn: true}
  - {name: full}
budgets: [128, 512]
seeds: [0, 1, 2]
finetune:
  optim: {lr: 1.0e-3}
  train: {epochs: 4, batch_size: 16, min_steps: null, report_to: []}
"""
SKIP = {"seconds", "error"}


def matrix_run(cfg_path: Path, overrides: list[str], workers: int) -> tuple[float, dict]:
    from pretune.cli import main

    out = Path(overrides[0].split("=", 1)[1]) / "bench-study"
    shutil.rmtree(out / "cells", ignore_errors=True)
    t = time.perf_counter()
    code = main(["study", str(cfg_path), *overrides, "--workers", str(workers)])
    seconds = time.perf_counter() - t
    assert code == 0, f"study failed (exit {code})"
    rows = json.loads((out / "report.json").read_text())["results"]
    return seconds, {r["cell"]: {k: v for k, v in r.items() if k not in SKIP} for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = root / "study.yaml"
        cfg.write_text(STUDY)
        overrides = [f"output_dir={root / 'runs'}", f"prepare.output_dir={root / 'data'}"]
        from pretune.cli import main as cli

        t = time.perf_counter()
        assert cli(["study", str(cfg), *overrides]) == 0  # phases + a first matrix (warm-up)
        print(f"phases + warm-up matrix: {time.perf_counter() - t:.0f} s", flush=True)
        seq_s, seq = matrix_run(cfg, overrides, 1)
        par_s, par = matrix_run(cfg, overrides, args.workers)
    n = len(seq)
    same = sum(seq[k] == par.get(k) for k in seq)
    keys = [k for k in seq if seq[k] != par.get(k)]
    worst = max((abs(float(v) - float(par[k].get(m, v))) for k in keys
                 for m, v in seq[k].items() if isinstance(v, float)), default=0.0)
    print(f"\n{n} cells; sequential: {seq_s:.0f} s = {60 * n / seq_s:.1f} cells/min; "
          f"--workers {args.workers}: {par_s:.0f} s = {60 * n / par_s:.1f} cells/min; "
          f"ratio {seq_s / par_s:.2f}x")
    print(f"identical rows: {same}/{n}" + (f" (the others differ by at most {worst:.2g} in "
                                           "any metric)" if keys else ""))


if __name__ == "__main__":
    main()
