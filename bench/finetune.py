"""Fine-tuning throughput: pretune (length-grouped dynamic padding + our loop) vs HF ``Trainer``
with ``DataCollatorWithPadding``, same model (builtin MiniLM), data (builtin:rotten-tomatoes),
max length (128), batch size (32) and number of optimizer steps, in the same process.

    python bench/finetune.py              # 40 steps each
    python bench/finetune.py --steps 3    # quick smoke run

Prints samples/s for both and the ratio (goal: >= 1.5x on CPU).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from pretune.config import FinetuneConfig, LoopConfig, ModelConfig, OptimConfig, TaskConfig
from pretune.data.batches import LabeledBatches, encode
from pretune.data.labeled import load_task
from pretune.models.registry import load_model, load_tokenizer_for
from pretune.tasks import KINDS
from pretune.tasks.text_classification import PROBLEM_TYPES
from pretune.train.loop import fit

SPEC = ModelConfig(name="builtin:minilm")


def _model(task, tokenizer):
    torch.manual_seed(0)
    return load_model(SPEC, "classify", tokenizer, num_labels=len(task.labels),
                      problem_type=PROBLEM_TYPES[task.type], id2label=dict(enumerate(task.labels)))


def ours(task, tokenizer, steps: int, bs: int, max_length: int, device: str) -> float:
    model = _model(task, tokenizer)
    enc = encode(tokenizer, task.train.texts, None, max_length)
    batches = LabeledBatches(enc, task.train.labels, task.type, bs, seed=0)
    loop = LoopConfig(max_steps=steps, batch_size=bs, device=device, progress=False,
                      tensorboard=False, log_every=max(1, steps), save_every=None)
    optim = OptimConfig(lr=5e-5, betas=(0.9, 0.999), warmup_steps=0)
    t0 = time.perf_counter()
    # out_dir=None: no checkpoint writes (the Trainer side runs with save_strategy="no")
    loss = KINDS["text-classification"].loss_fn(task, FinetuneConfig())
    fit(model, loss, batches, loop, optim, None)
    seconds = time.perf_counter() - t0
    return steps * bs / seconds


def hf_trainer(task, tokenizer, steps: int, bs: int, max_length: int, device: str) -> float:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    model = _model(task, tokenizer)
    enc = tokenizer(task.train.texts, truncation=True, max_length=max_length)
    rows = [{**{k: enc[k][i] for k in enc}, "labels": task.train.labels[i]}
            for i in range(len(task.train))]
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=bs, max_steps=steps, learning_rate=5e-5,
            warmup_steps=0, report_to="none", save_strategy="no", logging_steps=max(1, steps),
            use_cpu=device == "cpu", disable_tqdm=True, seed=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows,
                          data_collator=DataCollatorWithPadding(tokenizer))
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    return steps * bs / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    task = load_task(TaskConfig(path="builtin:rotten-tomatoes", test_size=2000))
    tokenizer = load_tokenizer_for(SPEC, None)
    # Both runs see the same examples: the first steps*batch_size of the training split.
    n = min(len(task.train), a.steps * a.batch_size)
    task.train = task.train.subset(list(range(n)))
    print(f"MiniLM on rotten-tomatoes: {a.steps} steps x batch {a.batch_size}, max_length "
          f"{a.max_length}, device {a.device}, torch threads {torch.get_num_threads()}")
    hf = hf_trainer(task, tokenizer, a.steps, a.batch_size, a.max_length, a.device)
    print(f"HF Trainer + DataCollatorWithPadding: {hf:8.1f} samples/s")
    us = ours(task, tokenizer, a.steps, a.batch_size, a.max_length, a.device)
    print(f"pretune (length-grouped, our loop):    {us:8.1f} samples/s")
    print(f"ratio pretune / HF Trainer: {us / hf:.2f}x")


if __name__ == "__main__":
    main()
