"""Generative fine-tuning and generation speed: pretune vs the Hugging Face anchors, same run.

Supervised fine-tuning on ``builtin:news-headlines`` (article cut to fit ``--max-length`` with
its headline; loss on the headline only): pretune's length-grouped, left-padded batches with
LM-head logits for the target span only, in its loop, vs HF ``Trainer`` with
``DataCollatorForSeq2Seq`` (labels padded with -100, logits for every position), same model,
data, batch size, learning rate and number of steps. Each measurement runs in its own
process, so its peak RSS is its own.

    python bench/generate.py                 # gpt-mini full, smollm2 LoRA, smollm2 full RSS,
                                             # generation throughput
    python bench/generate.py --quick         # a smoke run (2 steps, 8 prompts)

Prints samples/s, real (non-padding) tokens/s, ratios and peak RSS; generation: new tokens/s
of batched ``generate_texts`` (batch 16, left-padded) vs ``model.generate`` one prompt at a
time.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import torch

from pretune.config import FinetuneConfig, LoopConfig, OptimConfig, load_config
from pretune.finetune.strategies import apply_strategy
from pretune.models.generate import generate_texts
from pretune.models.start import resolve_start
from pretune.tasks import get_kind
from pretune.tasks.generation import GenBatches
from pretune.train.loop import fit

KIND = get_kind("generation")
SETUPS = {  # name -> (model, strategy, lr)
    "gpt-mini-full": ("gpt-mini", "full", 1e-3),
    "smollm2-lora": ("builtin:smollm2", "lora", 5e-4),
    "smollm2-full": ("builtin:smollm2", "full", 5e-5),
}


def _setup(name: str, n: int, max_length: int):
    model, strategy, lr = SETUPS[name]
    tok = "builtin:smollm2" if model == "gpt-mini" else None  # its 49k vocabulary
    cfg = load_config(FinetuneConfig, None, [
        "task.kind=generation", "task.path=builtin:news-headlines", "task.test_size=100",
        "task.val_size=50", f"task.max_length={max_length}", f"task.budget={n}",
        f"model.name={model}", f"strategy.name={strategy}", f"optim.lr={lr}",
        *([f"tokenizer={resolve_start(tok).path}"] if tok else [])])
    task = KIND.load(cfg)
    loaded = KIND.load_model(cfg, task, resolve_start(cfg.model.name))
    return cfg, task, loaded


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ours(name: str, steps: int, bs: int, max_length: int) -> dict:
    cfg, task, loaded = _setup(name, steps * bs, max_length)
    plan = apply_strategy(loaded.model, cfg.strategy, cfg.optim, KIND.peft_task_type)
    batches = GenBatches(loaded.processor.encode(task.train), loaded.processor, bs, seed=0)
    tokens = sum(len(x) for x in batches.enc.input_ids)
    loop = LoopConfig(max_steps=steps, batch_size=bs, progress=False, tensorboard=False,
                      log_every=steps, save_every=None, device="cpu")
    optim = OptimConfig(lr=cfg.optim.lr, warmup_steps=0)
    t0 = time.perf_counter()
    fit(plan.model, KIND.loss_fn(task, cfg), batches, loop, optim, None,
        param_groups=plan.param_groups)
    s = time.perf_counter() - t0
    return {"samples_s": steps * bs / s, "tokens_s": tokens / s, "peak_mb": _peak_mb()}


def hf_trainer(name: str, steps: int, bs: int, max_length: int) -> dict:
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    cfg, task, loaded = _setup(name, steps * bs, max_length)
    model = loaded.model
    if cfg.strategy.name == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        s = cfg.strategy
        model = get_peft_model(model, LoraConfig(
            task_type=TaskType.CAUSAL_LM, r=s.lora_r, lora_alpha=s.lora_alpha,
            lora_dropout=s.lora_dropout,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                            "down_proj"]))
    enc = loaded.processor.encode(task.train)
    rows = [{"input_ids": i, "attention_mask": [1] * len(i), "labels": lab}
            for i, lab in zip(enc.input_ids, enc.labels, strict=True)]
    tokens = sum(len(r["input_ids"]) for r in rows)
    tok = loaded.processor.tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=bs, max_steps=steps,
            learning_rate=cfg.optim.lr, warmup_steps=0, report_to="none", save_strategy="no",
            logging_steps=steps, use_cpu=True, disable_tqdm=True, seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=rows,
                          data_collator=DataCollatorForSeq2Seq(tok, padding=True,
                                                               label_pad_token_id=-100))
        t0 = time.perf_counter()
        trainer.train()
        s = time.perf_counter() - t0
    return {"samples_s": steps * bs / s, "tokens_s": tokens / s, "peak_mb": _peak_mb()}


@torch.no_grad()
def generation(n: int, max_new: int, max_length: int) -> dict:
    cfg, task, loaded = _setup("smollm2-lora", 16, max_length)
    p, model = loaded.processor, loaded.model.eval()
    prompts = p.encode(task.test.subset(range(n)), reserve=max_new).prompts
    decode = p.decode.model_copy(update={"max_new_tokens": max_new, "batch_size": 16})
    t0 = time.perf_counter()
    texts = generate_texts(model, p.tokenizer, prompts, decode, torch.device("cpu"), p.pad_id,
                           list(p.eos_ids))
    batched_s = time.perf_counter() - t0
    new_batched = sum(len(p.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    t0 = time.perf_counter()
    new_naive = 0
    for ids in prompts:
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False,
                             pad_token_id=p.pad_id, eos_token_id=list(p.eos_ids))
        new_naive += out.shape[1] - len(ids)
    naive_s = time.perf_counter() - t0
    return {"batched_tok_s": new_batched / batched_s, "naive_tok_s": new_naive / naive_s,
            "batched_s": batched_s, "naive_s": naive_s}


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                         text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--child", nargs="+")
    a = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    if a.child:
        what, *rest = a.child
        if what == "generation":
            res = generation(int(rest[0]), int(rest[1]), a.max_length)
        else:
            fn = ours if what == "ours" else hf_trainer
            res = fn(rest[0], int(rest[1]), a.batch_size, a.max_length)
        print(json.dumps(res))
        return
    steps = {"gpt-mini-full": 2 if a.quick else 30, "smollm2-lora": 2 if a.quick else 8}
    common = ["--batch-size", str(a.batch_size), "--max-length", str(a.max_length)]
    print(f"SFT on builtin:news-headlines, batch {a.batch_size}, max_length {a.max_length}, "
          f"{torch.get_num_threads()} threads")
    for name, n in steps.items():
        hf = _child(["hf", name, str(n), *common])
        us = _child(["ours", name, str(n), *common])
        print(f"{name:14s} HF Trainer {hf['samples_s']:6.2f} samples/s ({hf['tokens_s']:6.0f} "
              f"tok/s, peak {hf['peak_mb']:5.0f} MB) | pretune {us['samples_s']:6.2f} "
              f"samples/s ({us['tokens_s']:6.0f} tok/s, peak {us['peak_mb']:5.0f} MB) | "
              f"{us['samples_s'] / hf['samples_s']:.2f}x")
    full = _child(["ours", "smollm2-full", "2" if a.quick else "4", *common])
    print(f"smollm2-full   pretune {full['samples_s']:6.2f} samples/s, "
          f"peak RSS {full['peak_mb']:5.0f} MB")
    g = _child(["generation", "8" if a.quick else "48", "24", *common])
    print(f"generation     smollm2, 24 new tokens: batched (16) {g['batched_tok_s']:.1f} new "
          f"tok/s vs one prompt at a time {g['naive_tok_s']:.1f} | "
          f"{g['batched_tok_s'] / g['naive_tok_s']:.2f}x")


if __name__ == "__main__":
    main()
