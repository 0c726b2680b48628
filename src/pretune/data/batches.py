"""Batches of labeled text for the training loop, and length-sorted batches for inference.

Texts are tokenized once (no padding). Each epoch the examples are shuffled, cut into
mega-batches of ~50 batches, sorted by length inside each mega-batch and split into batches
whose order is shuffled again: batches hold similar lengths (little padding, the main CPU
speed-up over padding to max_length) while the order stays random. Everything is drawn from
generators seeded by (seed, epoch), so resuming at (epoch, position) replays the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pretune.config import AugmentConfig
from pretune.data.stream import EpochCursor

MEGA_BATCHES = 50


@dataclass
class Encoded:
    """Tokenized inputs without padding: one id list (and token-type list) per example."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int) -> Encoded:
    """Tokenize (truncating to ``max_length``) without padding."""
    args = (texts, pairs) if pairs is not None else (texts,)
    enc = tokenizer(*args, truncation=True, max_length=max_length, padding=False)
    types = enc.get("token_type_ids")
    pad = tokenizer.pad_token_id
    if pad is None:  # GPT-style tokenizers: any id works, the attention mask hides it
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return Encoded(list(enc["input_ids"]), list(types) if types is not None else None, int(pad))


def collate(enc: Encoded, idx: list[int] | np.ndarray, ids: list[list[int]] | None = None
            ) -> dict[str, torch.Tensor]:
    """Pad the chosen examples to the longest among them: input_ids/attention_mask (B, T)."""
    seqs = ids if ids is not None else [enc.input_ids[i] for i in idx]
    width = max(1, max(len(s) for s in seqs))
    input_ids = torch.full((len(seqs), width), enc.pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        input_ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    out = {"input_ids": input_ids, "attention_mask": mask}
    if enc.token_type_ids is not None and ids is None:
        types = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, i in enumerate(idx):
            types[row, : len(enc.token_type_ids[i])] = torch.tensor(enc.token_type_ids[i])
        out["token_type_ids"] = types
    return out


def label_tensor(labels: list[Any], task_type: str, width: int = 0) -> torch.Tensor:
    if task_type == "single_label":
        return torch.tensor(labels, dtype=torch.long)  # (B,)
    if task_type == "token":  # per-token label ids, padded with -100 (ignored) to (B, T)
        out = torch.full((len(labels), width), -100, dtype=torch.long)
        for row, seq in enumerate(labels):
            out[row, : len(seq)] = torch.tensor(seq[:width], dtype=torch.long)
        return out
    return torch.tensor(labels, dtype=torch.float32)  # (B, C) multi-hot or (B,) targets


class LabeledBatches(EpochCursor):
    """Iterable of training batches for ``pretune.train.loop.fit`` (resumable)."""

    def __init__(self, enc: Encoded, labels: list[Any], task_type: str, batch_size: int,
                 seed: int = 0, augment: AugmentConfig | None = None,
                 special_ids: set[int] | None = None, mask_id: int | None = None) -> None:
        self.enc, self.labels, self.task_type = enc, labels, task_type
        self.batch_size, self.seed = batch_size, seed
        self.augment = augment or AugmentConfig()
        self.special_ids = special_ids or set()
        self.mask_id = mask_id
        self.epoch, self.position = 0, 0

    def __len__(self) -> int:
        return -(-len(self.enc) // self.batch_size)

    def order(self, epoch: int) -> list[np.ndarray]:
        """Batches (example indices) of one epoch: length-grouped, randomly ordered."""
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(len(self.enc))
        lengths = np.fromiter((len(s) for s in self.enc.input_ids), dtype=np.int64,
                              count=len(self.enc))
        mega = self.batch_size * MEGA_BATCHES
        batches: list[np.ndarray] = []
        for start in range(0, len(perm), mega):
            chunk = perm[start : start + mega]
            chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size]
                           for i in range(0, len(chunk), self.batch_size))
        return [batches[i] for i in rng.permutation(len(batches))]

    def _augment(self, idx: np.ndarray, rng: np.random.Generator) -> list[list[int]] | None:
        a = self.augment
        if a.token_mask_prob == 0 and a.token_delete_prob == 0:
            return None
        out = []
        for i in idx:
            ids = np.asarray(self.enc.input_ids[i])
            special = np.isin(ids, list(self.special_ids))
            if a.token_delete_prob > 0:
                keep = special | (rng.random(len(ids)) >= a.token_delete_prob)
                ids, special = ids[keep], special[keep]
            if a.token_mask_prob > 0 and self.mask_id is not None:
                hit = ~special & (rng.random(len(ids)) < a.token_mask_prob)
                ids = np.where(hit, self.mask_id, ids)
            out.append(ids.tolist())
        return out

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch = self.epoch
        batches = self.order(epoch)
        while self.position < len(batches):
            pos = self.position
            idx = batches[pos]
            # Augmentation noise depends only on (seed, epoch, batch position): resumable.
            aug = self._augment(idx, np.random.default_rng([self.seed, epoch, pos, 1]))
            batch = collate(self.enc, idx, aug)
            if aug is not None and self.enc.token_type_ids is not None:
                # Deletions shift pair boundaries; segment ids are dropped (all zeros) then.
                batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
            batch["labels"] = label_tensor([self.labels[i] for i in idx], self.task_type,
                                           batch["input_ids"].shape[1])
            self.position = pos + 1
            yield batch
        self.epoch, self.position = epoch + 1, 0


def sorted_batches(enc: Encoded, batch_size: int) -> Iterator[tuple[np.ndarray, dict]]:
    """Inference batches sorted by length (least padding); yields (indices, batch)."""
    order = np.argsort([-len(s) for s in enc.input_ids], kind="stable")
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        yield idx, collate(enc, idx)
