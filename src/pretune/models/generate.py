"""Batched text generation and teacher-forced target likelihood, for any causal LM
(GPT-2, Llama/SmolLM2, ...) or encoder-decoder (T5, BART, Marian).

``generate_texts`` sorts prompts by length, left-pads each batch (what decoder-only models
need to continue every prompt at its end), calls ``model.generate`` with the decoding options,
decodes only the new tokens and cuts them at the first stop string. ``target_nll`` sums the
cross-entropy of the target tokens (labels != -100) per example: loss and perplexity.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

from pretune.config import DecodeConfig

IGNORE = -100


def is_seq2seq(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return bool(getattr(config, "is_encoder_decoder", False))


def _batches(seqs: list[list[int]], batch_size: int) -> Iterator[np.ndarray]:
    order = np.argsort([-len(s) for s in seqs], kind="stable")
    for i in range(0, len(order), batch_size):
        yield order[i : i + batch_size]


def pad_batch(seqs: list[list[int]], pad_id: int, left: bool) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask (B, T), padded on the left (generation) or the right."""
    width = max(1, max(len(s) for s in seqs))
    ids = _pad(seqs, width, pad_id, left)
    mask = _pad([[1] * len(s) for s in seqs], width, 0, left)
    return {"input_ids": ids, "attention_mask": mask}


def generate_kwargs(decode: DecodeConfig, tokenizer: Any, pad_id: int, eos_ids: list[int]
                    ) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "max_new_tokens": decode.max_new_tokens, "num_beams": decode.num_beams,
        "do_sample": decode.do_sample, "pad_token_id": pad_id, "eos_token_id": eos_ids,
        "repetition_penalty": decode.repetition_penalty,
        "no_repeat_ngram_size": decode.no_repeat_ngram_size,
    }
    if decode.do_sample:  # (passing these to greedy search only earns warnings)
        kw.update(temperature=decode.temperature, top_p=decode.top_p, top_k=decode.top_k)
    else:
        kw.update(temperature=None, top_p=None, top_k=None)
    return kw


class StopOnNewText(StoppingCriteria):
    """Stop a row once its generated text (not the prompt: HF's ``stop_strings`` also look at
    the prompt's last tokens, so a template ending in "\n" would stop at once) holds a stop
    string."""

    def __init__(self, tokenizer: Any, stop: list[str], prompt_width: int) -> None:
        self.tokenizer, self.stop, self.width = tokenizer, [s for s in stop if s], prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.width:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts],
                            device=input_ids.device)


def _stopping(tokenizer: Any, decode: DecodeConfig, width: int) -> dict[str, Any]:
    if not any(decode.stop):
        return {}
    return {"stopping_criteria": StoppingCriteriaList([StopOnNewText(tokenizer,
                                                                     list(decode.stop), width)])}


def cut_at_stop(text: str, stop: list[str]) -> str:
    cuts = [text.find(s) for s in stop if s and s in text]
    return (text[: min(cuts)] if cuts else text).strip()


@torch.no_grad()
def generate_texts(model: nn.Module, tokenizer: Any, prompts: list[list[int]],
                   decode: DecodeConfig, device: torch.device, pad_id: int,
                   eos_ids: list[int]) -> list[str]:
    """The generated continuation of each prompt (new tokens only, stop strings cut)."""
    was = model.training
    model.eval()
    seq2seq = is_seq2seq(model)
    kw = generate_kwargs(decode, tokenizer, pad_id, eos_ids)
    out: list[str] = [""] * len(prompts)
    if decode.do_sample:
        torch.manual_seed(decode.seed)
    for idx in _batches(prompts, decode.batch_size):
        batch = pad_batch([prompts[i] for i in idx], pad_id, left=not seq2seq)
        batch = {k: v.to(device) for k, v in batch.items()}
        width = 1 if seq2seq else batch["input_ids"].shape[1]  # seq2seq: the start token
        gen = model.generate(**batch, **kw, **_stopping(tokenizer, decode, width))
        new = gen if seq2seq else gen[:, batch["input_ids"].shape[1]:]
        for row, i in enumerate(idx):
            text = tokenizer.decode(new[row], skip_special_tokens=True)
            out[i] = cut_at_stop(text, decode.stop)
    model.train(was)
    return out


def lm_batch(input_ids: list[list[int]], labels: list[list[int]], pad_id: int,
             seq2seq: bool) -> dict[str, torch.Tensor]:
    """A training / scoring batch. Encoder-decoders: right-padded inputs, labels padded with
    -100. Causal LMs: LEFT-padded, with position ids counted from each row's first real token,
    and ``labels`` holding only the last K label positions (K = the longest target in the
    batch): every target ends at the right edge, so the model computes LM-head logits for the
    last K + 1 positions only (``logits_to_keep``) instead of all of them (the LM head of a
    49k vocabulary is a quarter of a small model's forward FLOPs, and most of its memory)."""
    if seq2seq:
        batch = pad_batch(input_ids, pad_id, left=False)
        width = max(1, max(len(r) for r in labels))
        batch["labels"] = _pad(labels, width, IGNORE, left=False)
        return batch
    batch = pad_batch(input_ids, pad_id, left=True)
    mask = batch["attention_mask"]
    batch["position_ids"] = (mask.cumsum(1) - 1).clamp_min(0)
    # (a target starting at column 0 has no logit before it: at most T - 1 positions scored)
    k = max(1, min(max(_target_span(r) for r in labels), batch["input_ids"].shape[1] - 1))
    batch["labels"] = _pad([r[-k:] for r in labels], k, IGNORE, left=True)
    return batch


def _target_span(labels: list[int]) -> int:
    """Positions from the first scored token to the end of the row."""
    for i, v in enumerate(labels):
        if v != IGNORE:
            return len(labels) - i
    return 0


def _pad(rows: list[list[int]], width: int, value: int, left: bool) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for row, seq in enumerate(rows):
        seq = seq[-width:] if left else seq[:width]
        if seq:
            sl = slice(width - len(seq), width) if left else slice(0, len(seq))
            out[row, sl] = torch.tensor(seq, dtype=torch.long)
    return out


def lm_token_losses(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor,
                                                                               torch.Tensor]:
    """(per-position NLL (B, K), labels (B, K)) of a ``lm_batch`` (ignored positions: 0)."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if "position_ids" in batch:  # causal: logits for the last K + 1 positions only
        logits = model(**inputs, logits_to_keep=labels.shape[1] + 1).logits[:, :-1]
    else:
        logits = model(**inputs, labels=labels).logits
    loss = nn.functional.cross_entropy(logits.float().transpose(1, 2), labels,
                                       ignore_index=IGNORE, reduction="none")
    return loss, labels


def lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean NLL over the target tokens of the batch (what fine-tuning minimises)."""
    loss, labels = lm_token_losses(model, batch)
    return loss.sum() / (labels != IGNORE).sum().clamp_min(1)


@torch.no_grad()
def target_nll(model: nn.Module, input_ids: list[list[int]], labels: list[list[int]],
               batch_size: int, device: torch.device, pad_id: int) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """Per example: summed NLL of its target tokens and their number (teacher forcing)."""
    was = model.training
    model.eval()
    seq2seq = is_seq2seq(model)
    nll, count = np.zeros(len(labels)), np.zeros(len(labels), dtype=np.int64)
    for idx in _batches(input_ids, batch_size):
        batch = lm_batch([input_ids[i] for i in idx], [labels[i] for i in idx], pad_id, seq2seq)
        loss, lab = lm_token_losses(model, {k: v.to(device) for k, v in batch.items()})
        nll[idx] = loss.sum(1).cpu().numpy()
        count[idx] = (lab != IGNORE).sum(1).cpu().numpy()
    model.train(was)
    return nll, count


@torch.no_grad()
def stream(model: nn.Module, tokenizer: Any, prompt: list[int], decode: DecodeConfig,
           device: torch.device, pad_id: int, eos_ids: list[int]) -> str:
    """Generate for one prompt, printing tokens to stdout as they come."""
    model.eval()
    batch = {k: v.to(device) for k, v in pad_batch([prompt], pad_id, left=True).items()}
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    if decode.do_sample:
        torch.manual_seed(decode.seed)
    width = 1 if is_seq2seq(model) else batch["input_ids"].shape[1]
    gen = model.generate(**batch, streamer=streamer,
                         **generate_kwargs(decode, tokenizer, pad_id, eos_ids),
                         **_stopping(tokenizer, decode, width))
    new = gen[0] if is_seq2seq(model) else gen[0, batch["input_ids"].shape[1]:]
    return cut_at_stop(tokenizer.decode(new, skip_special_tokens=True), decode.stop)
