"""The registry's architecture names: BERT/GPT sizes for text, ResNet/ViT sizes for images,
and which language-model objective a Hugging Face config trains (MLM or CLM).

Pure data: builders live in ``registry`` (text) and ``vision`` (images); ``start`` resolves a
``model.name`` against these tables once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
)

from pretune.errors import PretuneError


@dataclass(frozen=True)
class Arch:
    family: Literal["bert", "gpt", "t5"]
    layers: int
    hidden: int
    heads: int
    intermediate: int


ARCHS: dict[str, Arch] = {
    "bert-tiny": Arch("bert", 2, 128, 2, 512),
    "bert-mini": Arch("bert", 4, 256, 4, 1024),
    "bert-small": Arch("bert", 4, 512, 8, 2048),
    "bert-medium": Arch("bert", 8, 512, 8, 2048),
    "bert-base": Arch("bert", 12, 768, 12, 3072),
    "gpt-tiny": Arch("gpt", 2, 128, 2, 512),
    "gpt-mini": Arch("gpt", 4, 256, 4, 1024),
    "gpt-small": Arch("gpt", 12, 768, 12, 3072),  # GPT-2 124M
    # encoder-decoders for generation (layers each side; random init, fine-tuned directly)
    "t5-tiny": Arch("t5", 2, 128, 2, 512),
    "t5-mini": Arch("t5", 4, 256, 4, 1024),
}
Objective = Literal["mlm", "clm", "seq2seq"]
FAMILY_OBJECTIVE: dict[str, Objective] = {"bert": "mlm", "gpt": "clm", "t5": "seq2seq"}


@dataclass(frozen=True)
class ResNetArch:
    embedding: int  # stem width (7x7 conv, stride 2, then 3x3 max-pool)
    hidden: tuple[int, ...]  # stage widths
    depths: tuple[int, ...]  # blocks per stage
    layer_type: str = "basic"


@dataclass(frozen=True)
class ViTArch:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    patch: int


IMAGE_ARCHS: dict[str, ResNetArch | ViTArch] = {
    "resnet-tiny": ResNetArch(16, (16, 32, 64), (1, 1, 1)),
    "resnet-mini": ResNetArch(32, (32, 64, 128), (2, 2, 2)),
    "resnet-18": ResNetArch(64, (64, 128, 256, 512), (2, 2, 2, 2)),
    "resnet-50": ResNetArch(64, (256, 512, 1024, 2048), (3, 4, 6, 3), "bottleneck"),
    "vit-tiny": ViTArch(64, 2, 4, 128, 4),
    "vit-mini": ViTArch(128, 4, 4, 256, 4),
    "vit-small": ViTArch(192, 6, 3, 768, 4),
    "vit-base": ViTArch(768, 12, 12, 3072, 16),
}


def objective_for(model_or_config: Any) -> Objective:
    """"mlm" for encoders (BERT family), "clm" for decoders (GPT family), "seq2seq" for
    encoder-decoders (T5, BART, Marian). Takes a model, an HF config, or a config.json
    mapping."""
    config = getattr(model_or_config, "config", model_or_config)
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    model_type = get("model_type")
    if get("is_encoder_decoder", False) or model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return "seq2seq"
    if get("is_decoder", False):
        return "clm"
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "mlm"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "clm"
    raise PretuneError(f"model type '{model_type}' supports neither masked, causal nor "
                       "sequence-to-sequence LM")
