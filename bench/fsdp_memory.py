"""Memory per process of ``train.strategy=ddp`` vs ``fsdp``: 2 gloo processes under torchrun.

Pre-trains a GPT (default: gpt-small's 12 x 768 blocks over an 8k BPE vocabulary, ~92M
parameters) for a few CLM steps on a synthetic corpus, once with DDP (every process holds the
weights, gradients and AdamW's two moments: ~16 bytes per parameter) and once with FSDP (each
holds half of them). Each process reports its peak RSS (the loop's ``peak_mem_mb``) and the
run's tokens/s; printed: per-rank peaks, the fsdp/ddp memory ratio and the speed ratio. Both
runs start from the same weights and must end on the same loss (printed).

On a CPU the "device" is host memory, so this is what FSDP saves on GPUs too, less the
activations. Both runs get glibc's fixed mmap threshold (``MALLOC_MMAP_THRESHOLD_``, what
pretune's FSDP sets for itself on CPU with ``mallopt``), so the ratio is the sharding's alone.
Run alone (2 cores): ``.venv/bin/python bench/fsdp_memory.py [--steps 4]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys
import torch
torch.set_num_threads(1)
from pretune.config import LoopConfig, ModelConfig, OptimConfig, PretrainConfig
from pretune.train.pretrain import pretrain

art, out, strategy, steps, layers, width = sys.argv[1:7]
model = ModelConfig(name="gpt-small", dropout=0.0,
                    overrides={"n_layer": int(layers), "n_embd": int(width)})
train = LoopConfig(max_steps=int(steps), batch_size=2, log_every=1, progress=False,
                   report_to=[], strategy=strategy)
pretrain(PretrainConfig(name=strategy, output_dir=out, data=art, model=model, seq_len=128,
                        optim=OptimConfig(lr=1e-4), train=train, val_batches=1))
torch.distributed.destroy_process_group()
"""


def _artifact(root: Path) -> Path:
    from pretune.config import TokenizerConfig
    from pretune.data.shards import write_shards
    from pretune.data.tokenizer import train_tokenizer

    rng = random.Random(0)
    words = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "su", "ta", "ri", "po")
             for b in ("ra", "ven", "dol", "mek", "sin", "tor", "lu", "bas")]
    docs = [" ".join(rng.choice(words) for _ in range(300)) for _ in range(400)]
    tok = train_tokenizer(docs, TokenizerConfig(kind="bpe", vocab_size=8000, min_frequency=1),
                          root / "tokenizer")
    write_shards(docs, tok, root, val_fraction=0.05, seed=0)
    return root


def _run(art: Path, out: Path, strategy: str, args: argparse.Namespace) -> dict:
    script = out / "child.py"
    script.write_text(CHILD)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(art), str(out), strategy, str(args.steps), str(args.layers),
         str(args.width)], capture_output=True, text=True, timeout=1800,
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)})
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    rows = [json.loads(x) for x in (out / strategy / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    summary = json.loads((out / strategy / "summary.json").read_text())
    return {"peak_mb": max(r["peak_mem_mb"] for r in train), "loss": train[-1]["loss"],
            "tokens_per_s": summary["tokens_per_second"], "params": summary["parameters"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=768)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        art = _artifact(root / "art")
        res = {s: _run(art, root, s, args) for s in ("ddp", "fsdp")}
    ddp, fsdp = res["ddp"], res["fsdp"]
    print(f"model: {ddp['params'] / 1e6:.1f}M parameters, 2 processes, batch 2 x 128 tokens "
          f"each, {args.steps} AdamW steps")
    for name, r in res.items():
        print(f"  {name:4s}  peak RSS (rank 0) {r['peak_mb']:8,.0f} MB   "
              f"{r['tokens_per_s']:7,.0f} tokens/s   last loss {r['loss']:.5f}")
    print(f"fsdp / ddp: memory {fsdp['peak_mb'] / ddp['peak_mb']:.2f}x, "
          f"speed {fsdp['tokens_per_s'] / ddp['tokens_per_s']:.2f}x, "
          f"loss difference {abs(fsdp['loss'] - ddp['loss']):.2e}")


if __name__ == "__main__":
    main()
