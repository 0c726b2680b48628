"""One adapter API over Hugging Face models, so fine-tuning strategies are model-agnostic.

``Backbone(model)`` works for BERT-family encoders, GPT-2, any ``AutoModelFor*`` wrapper of
them (sequence classification, masked/causal LM) and PEFT-wrapped models. It only *views*
the model: freezing, parameter groups and pooled features act on the wrapped model's own
parameters.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from pretune.models.archs import objective_for

Pooling = Literal["cls", "mean", "last"]

# Default LoRA targets per model type: attention + MLP projections (names PEFT matches by suffix).
_LORA_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "key", "value", "dense"],
    "roberta": ["query", "key", "value", "dense"],
    "xlm-roberta": ["query", "key", "value", "dense"],
    "electra": ["query", "key", "value", "dense"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
}


def unwrap(model: nn.Module) -> nn.Module:
    """PEFT -> the HF model it wraps; DDP/compile wrappers -> the module."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


class Backbone:
    """Uniform view of an HF model: encoder, embeddings, blocks, head, pooled features."""

    def __init__(self, model: nn.Module, pooling: Pooling | None = None) -> None:
        self.model = model
        self.hf = unwrap(model)
        self.config = self.hf.config
        self.is_decoder = self._is_decoder()
        # Mean pooling suits sentence encoders (MiniLM); decoders see the whole text only at
        # the last token.
        # A pretune-pretrained model records the pooling its objective trained
        # (config.pretune_pooling).
        recorded = getattr(self.config, "pretune_pooling", None)
        self.pooling: Pooling = pooling or recorded or ("last" if self.is_decoder else "mean")

    def _is_decoder(self) -> bool:
        try:
            return objective_for(self.config) == "clm"
        except Exception:  # noqa: BLE001 - unknown model types: treat as encoder
            return False

    # ------------------------------------------------------------------ structure

    @property
    def encoder(self) -> nn.Module:
        """The base transformer (model.bert / model.transformer / the model itself)."""
        return self.hf.base_model

    def embeddings(self) -> nn.Module:
        enc = self.encoder
        if hasattr(enc, "embeddings"):
            return enc.embeddings
        if hasattr(enc, "wte"):  # GPT-2: token + position tables are separate modules
            parts = [enc.wte] + ([enc.wpe] if hasattr(enc, "wpe") else [])
            return nn.ModuleList(parts)
        return nn.ModuleList([enc.get_input_embeddings()])

    def layers(self) -> list[nn.Module]:
        """Transformer blocks, bottom to top."""
        enc = self.encoder
        if getattr(self.config, "is_encoder_decoder", False):  # T5 / BART: encoder, then decoder
            return [*_blocks(self.hf.get_encoder()), *_blocks(self.hf.get_decoder())]
        if hasattr(enc, "encoder") and hasattr(enc.encoder, "layer"):  # BERT family
            return list(enc.encoder.layer)
        if hasattr(enc, "h"):  # GPT-2
            return list(enc.h)
        if hasattr(enc, "transformer") and hasattr(enc.transformer, "layer"):  # DistilBERT
            return list(enc.transformer.layer)
        # Generic: the first ModuleList with one entry per hidden layer.
        n = getattr(self.config, "num_hidden_layers", None)
        for module in enc.modules():
            if isinstance(module, nn.ModuleList) and len(module) == n:
                return list(module)
        raise ValueError(f"cannot find the transformer blocks of {type(self.hf).__name__}")

    def head(self) -> nn.Module | None:
        """Task / LM head: the top-level children beside the encoder that hold parameters.

        A tied LM head (GPT-2 lm_head) is returned too, though its weight is the embedding."""
        enc = self.encoder
        if enc is self.hf:
            return None
        parts = [m for m in self.hf.children() if m is not enc and any(True for _ in m.parameters())]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else nn.ModuleList(parts)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return len(self.layers())

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[embeddings, layer 0, ..., layer L-1, rest]; every parameter in exactly one group.

        "rest" is the top: pooler, final LayerNorm and the head (they sit above the last block).
        Tied weights (LM decoder = word embeddings) appear once, in the embeddings group."""
        seen: set[int] = set()

        def take(params) -> list[nn.Parameter]:
            out = []
            for p in params:
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
            return out

        groups = [take(self.embeddings().parameters())]
        groups += [take(layer.parameters()) for layer in self.layers()]
        groups.append(take(self.hf.parameters()))
        return groups

    def lora_targets(self) -> list[str]:
        """Default module-name suffixes for PEFT LoRA: attention + MLP projections."""
        mt = self.config.model_type
        if mt in _LORA_TARGETS:
            return list(_LORA_TARGETS[mt])
        names = set()
        for layer in self.layers():
            for name, module in layer.named_modules():
                if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
                    names.add(name.rsplit(".", 1)[-1])
        return sorted(names)

    # ------------------------------------------------------------------ features

    def encode(
        self, input_ids: Tensor, attention_mask: Tensor | None = None,
        pooling: Pooling | None = None, **kwargs: Tensor,
    ) -> Tensor:
        """Pooled features (B, H) from the last hidden states (B, T, H)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return pool(hidden, attention_mask, pooling or self.pooling)


def _blocks(stack: nn.Module) -> list[nn.Module]:
    """The blocks of one side of an encoder-decoder (T5 ``block``, BART ``layers``)."""
    for name in ("block", "layers", "layer"):
        if isinstance(getattr(stack, name, None), nn.ModuleList):
            return list(getattr(stack, name))
    raise ValueError(f"cannot find the blocks of {type(stack).__name__}")


def pool(hidden: Tensor, attention_mask: Tensor, pooling: Pooling) -> Tensor:
    """(B, T, H) hidden states + (B, T) mask -> (B, H)."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.to(hidden.dtype)
    if pooling == "mean":
        summed = (hidden * mask.unsqueeze(-1)).sum(1)  # (B, H)
        return summed / mask.sum(1, keepdim=True).clamp_min(1.0)
    if pooling == "last":
        # Index of the last real token; works for right and left padding: (B,)
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = (positions * attention_mask.long()).argmax(1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling '{pooling}' (cls, mean, last)")
