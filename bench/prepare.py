"""Tokenization + packing throughput: pretune's shard writer vs the HF examples' way.

Both sides get the same cleaned builtin:news documents (in memory) and the same WordPiece
tokenizer trained once here. Measured in one process, one after the other:

- ours:   ``pretune.data.shards.write_shards`` -> train.bin + train.idx.npy on disk (the packed
          form the training loop slices into blocks).
- anchor: transformers' ``examples/pytorch/language-modeling/run_mlm.py`` approach (our code,
          following it): ``datasets.Dataset.from_dict({"text": docs}).map(tokenize, batched=True,
          num_proc=N)`` then ``group_texts`` into 128-token blocks with ``map(batched=True)``.

Run: ``.venv/bin/python bench/prepare.py [--max-docs N] [--num-proc N]``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path


def load_docs(max_docs: int | None) -> list[str]:
    from pretune.config import CleanConfig, SourceConfig
    from pretune.data.clean import CleanStats, clean_documents
    from pretune.data.sources import SourceStats, iter_documents

    raw = itertools.islice(iter_documents([SourceConfig(path="builtin:news")], SourceStats()), max_docs)
    return list(clean_documents(raw, CleanConfig(), CleanStats()))


def run_ours(docs: list[str], tok, out: Path) -> tuple[float, int]:
    from pretune.data.shards import write_shards

    t = time.perf_counter()
    meta = write_shards(docs, tok, out, val_fraction=0.0)
    return time.perf_counter() - t, meta["splits"]["train"]["tokens"]


def run_anchor(docs: list[str], tok_dir: Path, num_proc: int, block_size: int) -> tuple[float, int]:
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_caching()
    datasets.utils.logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))

    def tokenize_function(examples):
        # run_mlm.py (line_by_line=False): special tokens per text, then grouped.
        return tokenizer(examples["text"], return_special_tokens_mask=True)

    def group_texts(examples):
        concatenated = {k: list(itertools.chain(*examples[k])) for k in examples}
        total = len(concatenated["input_ids"])
        total = (total // block_size) * block_size
        return {k: [t[i : i + block_size] for i in range(0, total, block_size)]
                for k, t in concatenated.items()}

    t = time.perf_counter()
    ds = datasets.Dataset.from_dict({"text": docs})
    proc = num_proc if num_proc > 1 else None
    tokenized = ds.map(tokenize_function, batched=True, num_proc=proc, remove_columns=["text"])
    grouped = tokenized.map(group_texts, batched=True, num_proc=proc)
    elapsed = time.perf_counter() - t
    return elapsed, len(grouped) * block_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-docs", type=int, default=None, help="cap on news articles (default: all)")
    ap.add_argument("--num-proc", type=int, default=os.cpu_count() or 1, help="anchor's map num_proc")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--block-size", type=int, default=128)
    args = ap.parse_args()

    from pretune.config import TokenizerConfig
    from pretune.data.tokenizer import train_tokenizer

    docs = load_docs(args.max_docs)
    mb = sum(len(d.encode()) for d in docs) / 1e6
    with tempfile.TemporaryDirectory(prefix="pretune-bench-") as tmp:
        tok_dir = Path(tmp) / "tokenizer"
        tok = train_tokenizer(docs, TokenizerConfig(vocab_size=args.vocab_size), tok_dir)
        print(f"{len(docs):,} docs, {mb:.1f} MB of cleaned text, wordpiece vocab {len(tok):,}, "
              f"{os.cpu_count()} CPUs")
        # Ours first: the anchor's datasets.map(num_proc>1) forks, and the Rust tokenizer turns
        # its thread pool off in a process that has forked (TOKENIZERS_PARALLELISM), which
        # would slow whatever runs after it in this process.
        ours_s, ours_tokens = run_ours(docs, tok, Path(tmp) / "ours")
        anchor_s, anchor_tokens = run_anchor(docs, tok_dir, args.num_proc, args.block_size)

    rows = [("ours (write_shards)", ours_s, ours_tokens),
            (f"HF run_mlm map+group_texts (num_proc={args.num_proc})", anchor_s, anchor_tokens)]
    print(f"{'':52s} {'seconds':>8s} {'MB/s':>8s} {'tokens/s':>12s} {'tokens':>11s}")
    for name, s, n in rows:
        print(f"{name:52s} {s:8.2f} {mb / s:8.2f} {n / s:12,.0f} {n:11,d}")
    print(f"speed-up (ours / anchor, MB/s): {anchor_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
