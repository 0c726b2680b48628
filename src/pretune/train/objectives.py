"""Pre-training objectives: packed-block batchers (MLM / CLM) and their loss functions.

Batches are fixed-length blocks cut from the 1-D packed token stream (no padding; document
boundary tokens stay inside blocks). Each epoch visits the blocks in a seeded permutation; the
masking randomness of batch ``i`` of epoch ``e`` is derived from ``(seed, epoch, i, rank)``, so
the stream's whole state is ``(epoch, position)`` and a resumed run sees exactly the batches an
uninterrupted run would have seen. Under DDP every rank takes a disjoint slice of the
permutation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from pretune.data.stream import EpochCursor
from pretune.errors import PretuneError
from pretune.models.heads import sparse_mlm_loss


@dataclass(frozen=True)
class MaskingSpec:
    """What MLM masking needs to know about the vocabulary."""

    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]  # never masked, never chosen as targets
    probability: float = 0.15
    whole_word: bool = False
    # (V,) bool: True where a token continues the previous word (WordPiece "##x", or a
    # byte-level BPE token without the leading-space marker "Ġ").
    continuation: np.ndarray | None = None

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, probability: float = 0.15,
                       whole_word: bool = False) -> MaskingSpec:
        if tokenizer.mask_token_id is None:
            raise PretuneError(
                "the tokenizer has no [MASK] token, so it cannot train a masked LM; use a "
                "WordPiece/BERT tokenizer or the clm objective"
            )
        vocab_size = len(tokenizer)
        continuation = None
        if whole_word:
            continuation = np.zeros(vocab_size, dtype=bool)
            vocab = tokenizer.get_vocab()
            if any(tok.startswith("##") for tok in vocab):
                for tok, i in vocab.items():
                    continuation[i] = tok.startswith("##")
            else:  # byte-level BPE: a word starts with "Ġ" (a space)
                for tok, i in vocab.items():
                    continuation[i] = not tok.startswith("Ġ")
        return cls(
            mask_id=int(tokenizer.mask_token_id), vocab_size=vocab_size,
            special_ids=tuple(sorted(int(i) for i in tokenizer.all_special_ids)),
            probability=probability, whole_word=whole_word, continuation=continuation,
        )


def mask_tokens(ids: np.ndarray, spec: MaskingSpec, rng: np.random.Generator,
                word_starts: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BERT masking of a (B, T) int64 block: choose ``probability`` of the non-special tokens
    (or whole words), then 80% -> [MASK], 10% -> random token, 10% unchanged.

    ``word_starts`` (B, T): 1 where a token starts a word, from ``prepare``'s segmenter (Chinese
    whole-word masking); without it words come from the vocabulary's continuation marks.
    Returns (input_ids (B, T), labels (B, T) with -100 where not chosen, masked_index (M,)
    flat indices of the chosen positions)."""
    flat = ids.reshape(-1)
    candidates = ~np.isin(flat, np.asarray(spec.special_ids, dtype=flat.dtype))
    if spec.whole_word and (spec.continuation is not None or word_starts is not None):
        # A word = a start token plus the continuation tokens that follow it. Rows start a new
        # word even mid-word (blocks are cut anywhere).
        if word_starts is not None:
            starts = candidates & (word_starts.reshape(-1) > 0)
        else:
            starts = candidates & ~spec.continuation[flat]
        starts[:: ids.shape[1]] |= candidates[:: ids.shape[1]]
        word = np.cumsum(starts) - 1  # (B*T,) word index of each token
        n_words = int(word.max()) + 1 if word.size else 0
        chosen_words = rng.random(max(n_words, 1)) < spec.probability
        chosen = candidates & (word >= 0) & chosen_words[np.maximum(word, 0)]
    else:
        chosen = candidates & (rng.random(flat.shape) < spec.probability)
    if not chosen.any() and candidates.any():  # never an empty loss (NaN mean)
        chosen[np.flatnonzero(candidates)[0]] = True
    labels = np.where(chosen, flat, -100)
    out = flat.copy()
    r = rng.random(flat.shape)
    out[chosen & (r < 0.8)] = spec.mask_id
    random_pos = chosen & (r >= 0.8) & (r < 0.9)
    out[random_pos] = rng.integers(0, spec.vocab_size, size=int(random_pos.sum()))
    return out.reshape(ids.shape), labels.reshape(ids.shape), np.flatnonzero(chosen)


class BlockBatches(EpochCursor):
    """Batches of packed fixed-length blocks for MLM or CLM, with exact resume and DDP shards.

    MLM block: ``[CLS] + T-1 stream tokens``; CLM block: ``T`` stream tokens (labels are the
    inputs; HF shifts them). Implements the loop's batch-stream protocol: ``__iter__`` (rest of
    the current epoch), ``__len__`` (batches per epoch), ``set_epoch``, ``state_dict``,
    ``load_state_dict``."""

    def __init__(
        self,
        tokens: np.ndarray,
        objective: Literal["mlm", "clm"],
        seq_len: int,
        batch_size: int,
        *,
        masking: MaskingSpec | None = None,
        cls_id: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        name: str = "train",
        word_starts: np.ndarray | None = None,
    ) -> None:
        if objective == "mlm" and (masking is None or cls_id is None):
            raise ValueError("mlm batches need a MaskingSpec and the [CLS] id")
        self.tokens = tokens
        # per-token word-start flags for whole-word masking (only read when masking.whole_word)
        self.word_starts = word_starts if masking is not None and masking.whole_word else None
        self.objective = objective
        self.seq_len, self.batch_size = seq_len, batch_size
        self.masking, self.cls_id = masking, cls_id
        self.shuffle, self.seed = shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.stride = seq_len - 1 if objective == "mlm" else seq_len  # stream tokens per block
        self.n_blocks = len(tokens) // self.stride
        self.per_rank = self.n_blocks // world_size
        if self.per_rank < batch_size:
            raise PretuneError(
                f"the {name} split has {len(tokens):,} tokens = {self.n_blocks} blocks of "
                f"{seq_len}, fewer than batch_size {batch_size} x {world_size} process(es); "
                "lower train.batch_size / seq_len or add data"
            )
        self.epoch = 0
        self.position = 0  # batches of the current epoch already handed out

    def __len__(self) -> int:
        return self.per_rank // self.batch_size

    def state_dict(self) -> dict[str, int]:
        return {**super().state_dict(), "n_blocks": self.n_blocks, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["n_blocks"] != self.n_blocks or state.get("world_size", 1) != self.world_size:
            raise PretuneError(
                f"cannot resume: the checkpoint's data stream had {state['n_blocks']} blocks on "
                f"{state.get('world_size', 1)} process(es), now {self.n_blocks} on "
                f"{self.world_size}; resume with the same data, seq_len and number of processes"
            )
        self.epoch, self.position, self.seed = state["epoch"], state["position"], state["seed"]

    def _block_order(self, epoch: int) -> np.ndarray:
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.n_blocks)
        else:
            order = np.arange(self.n_blocks)
        return order[self.rank :: self.world_size][: self.per_rank]

    def make_batch(self, epoch: int, index: int, order: np.ndarray | None = None) -> dict[str, Tensor]:
        order = self._block_order(epoch) if order is None else order
        blocks = order[index * self.batch_size : (index + 1) * self.batch_size]  # (B,)
        offsets = blocks[:, None] * self.stride + np.arange(self.stride)  # (B, stride)
        ids = np.asarray(self.tokens[offsets], dtype=np.int64)
        if self.objective == "clm":
            return {"input_ids": torch.from_numpy(ids)}
        ids = np.concatenate([np.full((len(blocks), 1), self.cls_id, dtype=np.int64), ids], 1)
        rng = np.random.default_rng([self.seed, epoch, index, self.rank, 7])
        starts = None
        if self.word_starts is not None:  # [CLS] starts a word of its own
            starts = np.concatenate([np.ones((len(blocks), 1), np.uint8),
                                     np.asarray(self.word_starts[offsets])], 1)
        inputs, labels, index_flat = mask_tokens(ids, self.masking, rng, starts)
        return {"input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels),
                "masked_index": torch.from_numpy(index_flat.astype(np.int64))}

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        order = self._block_order(self.epoch)
        while self.position < len(self):
            batch = self.make_batch(self.epoch, self.position, order)
            self.position += 1  # counted when handed out: a checkpoint after the step skips it
            yield batch

    def fixed(self, n: int) -> list[dict[str, Tensor]]:
        """The first ``n`` batches of epoch 0 (deterministic validation set)."""
        order = self._block_order(0)
        return [self.make_batch(0, i, order) for i in range(min(n, len(self)))]


def mlm_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Masked-LM cross-entropy through the sparse head (only masked positions projected)."""
    return sparse_mlm_loss(model, batch["input_ids"], batch["labels"], batch.get("attention_mask"),
                           masked_index=batch.get("masked_index"))


def clm_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Causal-LM cross-entropy; labels default to the inputs (the model shifts them)."""
    labels = batch.get("labels", batch["input_ids"])
    return model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                 labels=labels).loss


def loss_for(objective: Literal["mlm", "clm"]):
    return mlm_loss if objective == "mlm" else clm_loss


# ---------------------------------------------------------------- the pre-training recipe

@dataclass
class Recipe:
    """What ``pretrain`` trains for one objective: the module the loop steps, the module
    exported as the model (the discriminator for ELECTRA), and the training and validation
    losses."""

    objective: str
    model: nn.Module
    export: nn.Module
    loss: Any  # (model, batch) -> scalar
    val_loss: Any  # (model, batch, index) -> scalar, deterministic


def recipe(cfg: Any, objective: str, model: nn.Module, cls_id: int | None) -> Recipe:
    """Compose the losses of ``cfg`` (a PretrainConfig) around ``model``: mlm / clm /
    electra (``model`` is then an ``ElectraPair``) / simcse, plus SimCSE when
    ``simcse_weight > 0``."""
    from pretune.train.contrastive import simcse_loss, spans
    from pretune.train.electra import electra_loss

    export = getattr(model, "discriminator", model)
    if objective == "electra":
        def base(m: nn.Module, b: dict[str, Tensor], seed: int | None = None) -> Tensor:
            return electra_loss(m, b, cfg.electra_weight, sample_seed=seed)[0]
        encoder = lambda m: m.electra  # noqa: E731
    elif objective == "clm":
        def base(m: nn.Module, b: dict[str, Tensor], seed: int | None = None) -> Tensor:
            return clm_loss(m, b)
        encoder = None
    elif objective == "simcse":
        base = None
        encoder = lambda m: getattr(m, "base_model", m)  # noqa: E731
    else:  # mlm (and wordvec, which never trains)
        def base(m: nn.Module, b: dict[str, Tensor], seed: int | None = None) -> Tensor:
            return mlm_loss(m, b)
        encoder = lambda m: getattr(m, "base_model", m)  # noqa: E731
    weight = 1.0 if objective == "simcse" else cfg.simcse_weight
    if weight > 0 and encoder is None:
        raise PretuneError("simcse_weight needs an encoder objective (mlm or electra); the clm "
                           "objective reads text left to right and has no sentence view")

    def total(m: nn.Module, b: dict[str, Tensor], seed: int | None = None) -> Tensor:
        loss = base(m, b, seed) if base is not None else 0.0
        if weight > 0:
            views = spans(b, cfg.simcse_window, cfg.simcse_windows, cls_id)
            loss = loss + weight * simcse_loss(encoder(m), views, cfg.simcse_temperature)
        return loss

    return Recipe(objective, model, export, loss=lambda m, b: total(m, b),
                  val_loss=lambda m, b, i: total(m, b, seed=i))
