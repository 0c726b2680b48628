"""Pre-training throughput: pretune's loop vs Hugging Face ``Trainer`` in the same process.

Same model (same init), same packed blocks of the builtin news corpus, same batch size and
sequence length, same optimizer/schedule. Timing starts after ``--warmup`` optimizer steps
(compilation, allocator warm-up) and covers ``--steps`` more.

    python bench/pretrain.py --quick          # tiny models, a few steps (smoke test)
    python bench/pretrain.py                  # CPU: bert-mini MLM T128, gpt-mini CLM T128
    python bench/pretrain.py --steps 50       # on a GPU: bert-base MLM T128 B256 and
                                              # GPT-2 124M T1024 B32, bf16 + torch.compile, MFU

MFU = achieved FLOP/s / peak, with FLOPs/token = 6 N + 12 L d T and the peak measured here as
the best bf16 matmul throughput (not the datasheet number).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pretune.config import LoopConfig, ModelConfig, OptimConfig, PrepareConfig, TokenizerConfig
from pretune.models.registry import (
    build_config,
    flops_per_token,
    load_model,
    load_tokenizer_for,
)
from pretune.train.loop import fit
from pretune.train.objectives import BlockBatches, MaskingSpec, loss_for


@dataclass
class Case:
    name: str
    model: str
    objective: str
    seq_len: int
    batch_size: int
    overrides: dict


def cases(gpu: bool, quick: bool) -> list[Case]:
    tiny = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 128}
    if quick:
        return [Case("bert-tiny* MLM T64", "bert-tiny", "mlm", 64, 8, tiny),
                Case("gpt-tiny* CLM T64", "gpt-tiny", "clm", 64, 8, tiny)]
    if gpu:
        return [Case("bert-base MLM T128 B256", "bert-base", "mlm", 128, 256, {}),
                Case("gpt2-124M CLM T1024 B32", "gpt-small", "clm", 1024, 32, {})]
    return [Case("bert-mini MLM T128 B16", "bert-mini", "mlm", 128, 16, {}),
            Case("gpt-mini CLM T128 B16", "gpt-mini", "clm", 128, 16, {})]


def prepare_data(kind: str, max_docs: int | None, out: Path) -> Path:
    """The builtin news corpus, tokenized (wordpiece for BERT, byte-level BPE for GPT)."""
    cfg = PrepareConfig(
        name=f"bench-news-{kind}", sources=["builtin:news"], max_docs=max_docs,
        tokenizer=TokenizerConfig(kind=kind, vocab_size=8000), output_dir=str(out),
        progress=False, val_fraction=0.01,
    )
    try:
        from pretune.data.pipeline import prepare
    except ImportError:  # pipeline not installed yet: same steps without cleaning/dedup
        return _prepare_plain(cfg, out / cfg.name)
    return Path(prepare(cfg))


def _prepare_plain(cfg: PrepareConfig, out: Path) -> Path:
    import itertools

    from pretune.data.shards import write_shards
    from pretune.data.sources import SourceStats, iter_documents
    from pretune.data.tokenizer import train_tokenizer

    if (out / "meta.json").is_file():
        return out
    docs = list(itertools.islice(iter_documents(cfg.sources, SourceStats()), cfg.max_docs))
    tok = train_tokenizer(docs, cfg.tokenizer, out / "tokenizer")
    write_shards(docs, tok, out, val_fraction=cfg.val_fraction, seed=cfg.seed)
    return out


class _Timed:
    """The batch stream; notes the time when the (warmup+1)-th micro-batch is requested."""

    def __init__(self, inner: BlockBatches, warmup: int, device: torch.device) -> None:
        self.inner, self.warmup, self.device = inner, warmup, device
        self.count, self.t_start = 0, None

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, e: int) -> None:
        self.inner.set_epoch(e)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, s: dict) -> None:
        self.inner.load_state_dict(s)

    def __iter__(self):
        for b in self.inner:
            if self.count == self.warmup:
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                self.t_start = time.perf_counter()
            self.count += 1
            yield b


def run_ours(case: Case, artifact: Path, steps: int, warmup: int, device: torch.device,
             gpu: bool) -> float:
    spec = ModelConfig(name=case.model, overrides=case.overrides)
    tok = load_tokenizer_for(spec, artifact / "tokenizer")
    torch.manual_seed(0)
    model = load_model(spec, case.objective, tok)
    from pretune.data.shards import PackedTokens

    masking = MaskingSpec.from_tokenizer(tok) if case.objective == "mlm" else None
    stream = BlockBatches(PackedTokens(artifact).tokens, case.objective, case.seq_len,
                          case.batch_size, masking=masking, cls_id=tok.cls_token_id)
    timed = _Timed(stream, warmup, device)
    loop = LoopConfig(max_steps=warmup + steps, batch_size=case.batch_size, log_every=10_000,
                      device=str(device), compile=gpu, progress=False, tensorboard=False)
    fit(model, loss_for(case.objective), timed, loop, OptimConfig(lr=5e-4, warmup_steps=10), None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * case.batch_size * case.seq_len / (time.perf_counter() - timed.t_start)


def run_hf(case: Case, artifact: Path, steps: int, warmup: int, device: torch.device,
           gpu: bool) -> float:
    from transformers import (
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from pretune.data.shards import PackedTokens

    spec = ModelConfig(name=case.model, overrides=case.overrides)
    tok = load_tokenizer_for(spec, artifact / "tokenizer")
    torch.manual_seed(0)
    model = load_model(spec, case.objective, tok)
    tokens = PackedTokens(artifact).tokens
    # The same packed blocks: [CLS] + T-1 tokens for MLM, T tokens for CLM.
    stride = case.seq_len - 1 if case.objective == "mlm" else case.seq_len
    n_blocks = len(tokens) // stride

    class Blocks(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return n_blocks

        def __getitem__(self, i: int) -> dict:
            ids = np.asarray(tokens[i * stride : (i + 1) * stride], dtype=np.int64)
            if case.objective == "mlm":
                ids = np.concatenate([[tok.cls_token_id], ids])
            return {"input_ids": torch.from_numpy(ids)}

    marks: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            if state.global_step == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                marks["start"] = time.perf_counter()

    out = Path(tempfile.mkdtemp(prefix="hf-bench-"))
    try:
        args = TrainingArguments(
            output_dir=str(out), per_device_train_batch_size=case.batch_size,
            max_steps=warmup + steps, learning_rate=5e-4, warmup_steps=10, weight_decay=0.01,
            lr_scheduler_type="linear", logging_steps=10_000, save_strategy="no",
            report_to="none", use_cpu=not gpu, bf16=gpu, torch_compile=gpu,
            optim="adamw_torch_fused" if gpu else "adamw_torch", disable_tqdm=True,
            dataloader_num_workers=0, max_grad_norm=1.0,
        )
        collator = DataCollatorForLanguageModeling(tok, mlm=case.objective == "mlm",
                                                   mlm_probability=0.15)
        trainer = Trainer(model=model, args=args, train_dataset=Blocks(), data_collator=collator,
                          callbacks=[Clock()])
        trainer.train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps * case.batch_size * case.seq_len / (time.perf_counter() - marks["start"])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def matmul_peak(device: torch.device) -> float:
    """Best measured bf16 matmul FLOP/s (8192^3 GEMMs) on this GPU."""
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    best = 0.0
    for _ in range(5):
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        best = max(best, 10 * 2 * n**3 / (time.perf_counter() - t))
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=None, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first")
    p.add_argument("--quick", action="store_true", help="tiny models, few steps (smoke test)")
    p.add_argument("--max-docs", type=int, default=None, help="corpus documents (default all)")
    p.add_argument("--data-dir", default="runs/bench-data")
    args = p.parse_args(argv)
    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    steps = args.steps or (3 if args.quick else 50 if gpu else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 10 if gpu else 3)
    max_docs = args.max_docs or (300 if args.quick else None)
    peak = matmul_peak(device) if gpu else None
    print(f"device: {torch.cuda.get_device_name() if gpu else 'cpu'}  torch {torch.__version__}"
          f"  threads {torch.get_num_threads()}  steps {steps} (+{warmup} warm-up)")
    if peak:
        print(f"measured bf16 matmul peak: {peak / 1e12:.0f} TFLOP/s")
    rows = []
    for case in cases(gpu, args.quick):
        kind = "wordpiece" if case.objective == "mlm" else "bpe"
        artifact = prepare_data(kind, max_docs, Path(args.data_dir))
        ours = run_ours(case, artifact, steps, warmup, device, gpu)
        hf = run_hf(case, artifact, steps, warmup, device, gpu)
        tok = load_tokenizer_for(ModelConfig(name=case.model), artifact / "tokenizer")
        fpt = flops_per_token(build_config(case.model, tok, case.overrides, None), case.seq_len)
        rows.append((case.name, ours, hf, fpt))
        print(f"{case.name:28s} pretune {ours:12,.0f} tok/s   HF Trainer {hf:12,.0f} tok/s   "
              f"ratio {ours / hf:5.2f}x", end="")
        if peak:
            print(f"   MFU pretune {ours * fpt / peak:6.1%}  HF {hf * fpt / peak:6.1%}", end="")
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
