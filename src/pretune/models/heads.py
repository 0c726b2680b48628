"""Sparse masked-LM loss: the vocabulary projection only where a label exists.

With 15% masking the dense HF forward spends ~85% of the LM-head FLOPs (and a (B, T, V) logits
tensor) on positions whose loss is ignored. We run the encoder, gather the M masked hidden
states (M, H), and apply the model's own MLM transform + decoder to those only. Same loss as
the dense forward (tested to ~1e-5), a fraction of the head cost.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def mlm_head(model: nn.Module) -> nn.Module | None:
    """The per-token MLM head of an HF masked-LM model ((..., H) -> (..., V)), if it has one.

    BERT: ``cls`` (transform + tied decoder); RoBERTa/XLM-R/Electra-style: ``lm_head``.
    """
    for name in ("cls", "lm_head"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    return None


def sparse_mlm_loss(
    model: nn.Module, input_ids: Tensor, labels: Tensor, attention_mask: Tensor | None = None,
    masked_index: Tensor | None = None, **kwargs: Tensor,
) -> Tensor:
    """Mean cross-entropy over masked positions (labels != -100); same value as HF's loss.

    input_ids, labels, attention_mask: (B, T). ``masked_index`` (M,): flat indices into B*T of
    the labelled positions, computed by the batcher on the CPU; with it the gather needs no
    device->host sync (boolean indexing would have to wait for the GPU to learn M).
    Falls back to the dense forward for models whose head is not a per-token module."""
    if hasattr(model, "get_base_model"):  # PEFT: LoRA layers live inside the HF model
        model = model.get_base_model()
    head = mlm_head(model)
    base = getattr(model, "base_model", None)
    if head is None or base is None or base is model:
        return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs).loss
    out = base(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    hidden = out[0]  # (B, T, H)
    if masked_index is None:
        masked_index = (labels.reshape(-1) != -100).nonzero().squeeze(1)  # (M,)
    # Gather the M labelled rows: (M, H); the head then gives (M, V) instead of (B, T, V).
    rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, masked_index)
    targets = labels.reshape(-1).index_select(0, masked_index)
    logits = head(rows)
    return F.cross_entropy(logits.float(), targets)
