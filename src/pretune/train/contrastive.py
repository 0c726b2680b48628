"""Unsupervised SimCSE (Gao et al. 2021) on packed blocks: a sentence objective for pooled
features, alone or added to MLM / ELECTRA.

Each block gives ``windows`` spans of ``window`` stream tokens (short, like the texts a probe
or a classifier reads), each behind a [CLS]. The encoder reads every span twice in train mode,
so two dropout masks make two views; the mean-pooled views of the same span are positives,
every other span in the batch a negative (InfoNCE at ``temperature``). Dropout must be on:
with ``model.dropout=0`` the two views are identical and the loss teaches nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pretune.errors import PretuneError


def spans(batch: dict[str, Tensor], window: int, windows: int, cls_id: int) -> Tensor:
    """(B * windows, window + 1) original (unmasked) spans of an MLM or plain block batch."""
    ids = batch["input_ids"]
    labels = batch.get("labels")
    if labels is not None:  # undo the masking: the views must read the real text
        ids = torch.where(labels != -100, labels, ids)
    body = ids[:, 1:] if labels is not None else ids  # MLM blocks start with [CLS]
    need = window * windows
    if body.shape[1] < need:
        raise PretuneError(f"simcse_window x simcse_windows = {need} tokens exceeds the "
                           f"block ({body.shape[1]} tokens); lower them or raise seq_len")
    parts = body[:, :need].reshape(-1, window)  # (B * windows, window)
    cls = torch.full((parts.shape[0], 1), cls_id, dtype=parts.dtype, device=parts.device)
    return torch.cat([cls, parts], 1)


def simcse_loss(encoder: nn.Module, span_ids: Tensor, temperature: float) -> Tensor:
    """InfoNCE between two dropout views of each span: (N, T) ids -> scalar."""
    both = torch.cat([span_ids, span_ids], 0)  # one forward, two dropout masks: (2N, T)
    hidden = encoder(input_ids=both)[0]  # (2N, T, H)
    pooled = F.normalize(hidden.mean(1).float(), dim=-1)  # (2N, H); spans have no padding
    a, b = pooled.chunk(2)
    logits = a @ b.T / temperature  # (N, N): row i's positive is column i
    target = torch.arange(a.shape[0], device=a.device)
    return F.cross_entropy(logits, target)
