"""The one way a ``model`` config section changes a Hugging Face config, for text and image
models alike: ``model.overrides`` (checked against the config's fields; shape-changing keys only
for random init) and ``model.dropout`` (every dropout field the architecture has). Also the one
switch that silences transformers' per-load reports."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from transformers import PretrainedConfig

from pretune.errors import PretuneError

# Config keys that change weight shapes: random init only.
SHAPE_KEYS = {
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
    "n_embd", "n_layer", "n_head", "n_inner", "max_position_embeddings", "n_positions",
    "type_vocab_size",  # text
    "embedding_size", "hidden_sizes", "depths", "layer_type", "patch_size", "num_channels",
    "image_size",  # images
}
# BERT-style names accepted for GPT-2 too, so one override set fits both families.
_ALIASES = {"gpt2": {"intermediate_size": "n_inner"}}
_DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob",  # BERT family, ViT
                 "resid_pdrop", "embd_pdrop", "attn_pdrop",  # GPT-2
                 "dropout", "attention_dropout",  # DistilBERT and others
                 "drop_path_rate")  # stochastic depth (ConvNeXt, Swin, ...)


def apply_overrides(config: PretrainedConfig, overrides: dict[str, Any], where: str,
                    pretrained: bool = False) -> None:
    """Set ``model.overrides`` on ``config``; unknown keys (and, on a pre-trained checkpoint,
    shape-changing ones) are one-line errors naming the key."""
    alias = _ALIASES.get(config.model_type, {})
    overrides = {alias.get(k, k): v for k, v in overrides.items()}
    known = set(config.to_dict()) | set(getattr(config, "attribute_map", {}))
    for key, value in overrides.items():
        if pretrained and key in SHAPE_KEYS:
            raise PretuneError(
                f"model.overrides.{key} would change the shape of the pre-trained checkpoint "
                f"{where}; remove it (shape overrides apply to random-init architectures only)")
        if key not in known:
            raise PretuneError(f"model.overrides.{key} is not a field of the {where} config "
                               f"({type(config).__name__}); check the spelling")
        setattr(config, key, value)


def set_dropout(config: PretrainedConfig, dropout: float | None) -> None:
    if dropout is None:
        return
    for key in _DROPOUT_KEYS:
        if hasattr(config, key):
            setattr(config, key, dropout)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence the load report table (missing/unexpected keys) and progress bars: pretune says
    what matters (a new head is expected when fine-tuning)."""
    from transformers.utils import logging as hf_logging

    old = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # the per-load "Loading weights" bar floods study logs
    try:
        yield
    finally:
        hf_logging.set_verbosity(old)
        if bars:
            hf_logging.enable_progress_bar()
