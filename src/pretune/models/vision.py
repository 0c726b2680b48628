"""Image models by name (ResNet / ViT from ``transformers``), image checkpoints, and one adapter
API (``ImageBackbone``, a ``pretune.models.backbone.Backbone``).

Every model is a plain ``*ForImageClassification`` in float32; a saved directory holds
``config.json`` + ``model.safetensors`` + ``preprocessor_config.json`` and loads with
``AutoModelForImageClassification`` / ``AutoImageProcessor`` without pretune. The sizes are
``pretune.models.archs.IMAGE_ARCHS``; ``pretune.models.start`` resolves a name for both
modalities and refuses one of the other modality with a pointer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    PretrainedConfig,
    PreTrainedModel,
    ResNetConfig,
    ViTConfig,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
)

from pretune.config import ModelConfig
from pretune.data.images import MEAN, STD
from pretune.errors import PretuneError
from pretune.models.archs import IMAGE_ARCHS, ResNetArch, ViTArch
from pretune.models.backbone import Backbone, unwrap
from pretune.models.overrides import apply_overrides, quiet_transformers, set_dropout
from pretune.models.start import Start, resolve_start

IMAGE_FILE = "pretune_image.json"  # image_size / channels / border the model was trained on


def is_image_model(model: nn.Module) -> bool:
    """True for HF vision models (their configs have ``num_channels``), PEFT-wrapped or not."""
    return hasattr(getattr(unwrap(model), "config", None), "num_channels")


def _labels_kwargs(labels: list[str]) -> dict[str, Any]:
    return {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}


def _check_vit_size(config: PretrainedConfig, image_size: int, where: str) -> None:
    if config.model_type != "vit":
        return
    if image_size % config.patch_size:
        raise PretuneError(f"{where}: image_size {image_size} is not a multiple of the ViT "
                           f"patch_size {config.patch_size}; change data.image_size")


def build_image_model(name: str, num_labels: int, image_size: int, channels: int,
                      overrides: dict[str, Any] | None = None, *, dropout: float | None = None,
                      labels: list[str] | None = None) -> PreTrainedModel:
    """Random-init ``*ForImageClassification`` for a registry name (seed torch beforehand)."""
    if name not in IMAGE_ARCHS:
        raise PretuneError(f"unknown image model '{name}'; choose one of: {', '.join(IMAGE_ARCHS)}"
                           ", hf:<dir>")
    a = IMAGE_ARCHS[name]
    labels = labels or [f"LABEL_{i}" for i in range(num_labels)]
    if len(labels) != num_labels:
        raise ValueError("labels must have num_labels entries")
    if isinstance(a, ResNetArch):
        config: PretrainedConfig = ResNetConfig(
            num_channels=channels, embedding_size=a.embedding, hidden_sizes=list(a.hidden),
            depths=list(a.depths), layer_type=a.layer_type, **_labels_kwargs(labels))
    else:
        config = ViTConfig(
            image_size=image_size, patch_size=a.patch, num_channels=channels,
            hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=a.heads,
            intermediate_size=a.intermediate, **_labels_kwargs(labels))
        config._attn_implementation = "sdpa"
    apply_overrides(config, dict(overrides or {}), name)
    set_dropout(config, dropout)
    if isinstance(a, ViTArch):
        if config.hidden_size % config.num_attention_heads:
            raise PretuneError(f"model.overrides: hidden_size {config.hidden_size} is not "
                               f"divisible by num_attention_heads {config.num_attention_heads}")
        _check_vit_size(config, image_size, f"model {name}")
    return AutoModelForImageClassification.from_config(config, dtype=torch.float32)


def checkpoint_image_info(path: Path) -> dict[str, Any]:
    """image_size / channels a checkpoint expects: pretune_image.json, else its configs."""
    info: dict[str, Any] = {}
    if (path / IMAGE_FILE).is_file():
        info = json.loads((path / IMAGE_FILE).read_text())
    cfg = json.loads((path / "config.json").read_text())
    info.setdefault("channels", cfg.get("num_channels"))
    if "image_size" not in info and cfg.get("image_size"):
        info["image_size"] = cfg["image_size"]
    return info


def load_image_model(spec: ModelConfig, labels: list[str], image_size: int, channels: int,
                     keep_head: bool = False, *, start: Start | None = None) -> PreTrainedModel:
    """Random init of an arch name, or ``from_pretrained`` of an image checkpoint with a new
    classifier for ``labels`` (kept only if ``keep_head`` and its label names match)."""
    start = (start or resolve_start(spec.name)).require("image")
    if start.arch is not None:
        return build_image_model(start.arch, len(labels), image_size, channels, spec.overrides,
                                 dropout=spec.dropout, labels=labels)
    assert start.path is not None
    path = start.path
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise PretuneError(f"model.name={spec.name}: {path} is not a loadable Hugging Face "
                           f"checkpoint ({type(e).__name__})") from None
    if config.model_type not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES \
            and not spec.trust_remote_code:
        raise PretuneError(f"model.name={spec.name}: {path} holds a '{config.model_type}' model, "
                           "not an image classifier; choose an image checkpoint")
    if not any(path.glob("*.safetensors")):
        raise PretuneError(f"model.name={spec.name}: {path} has no .safetensors weights (pickle "
                           "weights are not loaded for safety)")
    have = getattr(config, "num_channels", channels)
    if have != channels:
        raise PretuneError(f"model.name={spec.name} was trained on {have}-channel images; "
                           f"set data.channels={have}")
    if config.model_type == "vit" and config.image_size != image_size:
        raise PretuneError(f"model.name={spec.name} is a ViT for {config.image_size}px images; "
                           f"set data.image_size={config.image_size}")
    apply_overrides(config, spec.overrides, str(path), pretrained=True)
    set_dropout(config, spec.dropout)
    old = [config.id2label[i] for i in sorted(config.id2label)]
    reuse = keep_head and old == list(labels)
    for key, value in _labels_kwargs(labels).items():
        setattr(config, key, value)
    with quiet_transformers():  # the "newly initialised head" report is expected here
        model = AutoModelForImageClassification.from_pretrained(
            path, config=config, dtype=torch.float32, use_safetensors=True,
            ignore_mismatched_sizes=True, trust_remote_code=spec.trust_remote_code)
    if not reuse:
        reset_head(model)
    return model


def reset_head(model: nn.Module) -> None:
    """Fresh classifier weights (torch's default init; seed torch beforehand)."""
    head = ImageBackbone(model).head()
    for m in head.modules() if head is not None else []:
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


def image_processor(image_size: int, channels: int) -> Any:
    """The HF processor matching ``pretune.data.images``: resize, /255, (x - 0.5) / 0.5."""
    try:  # transformers >= 5 without torchvision: the PIL backend (the plain class warns)
        from transformers import ViTImageProcessorPil as Processor
    except ImportError:  # pragma: no cover - older transformers
        from transformers import ViTImageProcessor as Processor
    return Processor(do_resize=True, size={"height": image_size, "width": image_size},
                     do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                     image_mean=[MEAN] * channels, image_std=[STD] * channels,
                     do_convert_rgb=channels == 3)


def save_image_model(model: nn.Module, path: Path, image_size: int, channels: int,
                     extra: dict[str, Any] | None = None) -> Path:
    """Write an HF image directory: safetensors + config + preprocessor + ``pretune_image.json``."""
    from transformers.utils import logging as hf_logging

    path.mkdir(parents=True, exist_ok=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar per checkpoint
    try:
        model.save_pretrained(path, safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    image_processor(image_size, channels).save_pretrained(path)
    info = {"image_size": image_size, "channels": channels, **(extra or {})}
    (path / IMAGE_FILE).write_text(json.dumps(info, indent=2))
    return path


# --------------------------------------------------------------------------- adapter


class ImageBackbone(Backbone):
    """``Backbone`` for HF image classifiers: only where the blocks, the stem and the pooled
    features live differ (``head``, ``layer_groups`` and ``num_layers`` are inherited).

    ResNet blocks are the residual blocks of all stages; ViT blocks its transformer layers."""

    def embeddings(self) -> nn.Module:
        enc = self.encoder
        return enc.embedder if hasattr(enc, "embedder") else enc.embeddings

    def layers(self) -> list[nn.Module]:
        """Residual / transformer blocks, bottom to top."""
        enc = self.encoder
        if hasattr(enc, "encoder") and hasattr(enc.encoder, "stages"):  # ResNet
            return [blk for stage in enc.encoder.stages for blk in stage.layers]
        if isinstance(getattr(enc, "layers", None), nn.ModuleList):  # ViT (transformers 5)
            return list(enc.layers)
        try:
            return super().layers()  # ViT (transformers 4: encoder.layer) and the generic search
        except ValueError:
            raise PretuneError(f"cannot find the blocks of {type(self.hf).__name__}; image "
                               "strategies other than full fine-tuning support ResNet and ViT"
                               ) from None

    @property
    def hidden_size(self) -> int:
        sizes = getattr(self.config, "hidden_sizes", None)
        return int(sizes[-1]) if sizes else int(self.config.hidden_size)

    def lora_targets(self) -> list[str]:
        names = set()
        for layer in self.layers():
            for name, module in layer.named_modules():
                if isinstance(module, nn.Linear | nn.Conv2d):
                    names.add(name.rsplit(".", 1)[-1])
        return sorted(names)

    def encode(self, pixel_values: Tensor) -> Tensor:  # type: ignore[override]
        """Pooled features (B, H): what the classifier sees (ResNet: global average pool;
        ViT: the final-LayerNorm CLS token)."""
        out = self.encoder(pixel_values=pixel_values)
        if self.config.model_type == "vit":
            return out.last_hidden_state[:, 0]
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None:
            return pooled.flatten(1)
        hidden = out.last_hidden_state  # (B, T, H) or (B, H, h, w)
        return hidden.mean(1) if hidden.ndim == 3 else hidden.mean((2, 3))


# --------------------------------------------------------------------------- SimCLR


class SimCLRModel(nn.Module):
    """Image classifier + projection MLP: ``forward`` maps (2B, C, S, S) to (2B, D) embeddings.

    Only ``model`` is exported; the projection exists for the contrastive loss (SimCLR shows
    the features *before* the projection transfer better)."""

    def __init__(self, model: PreTrainedModel, projection_dim: int) -> None:
        super().__init__()
        self.model = model
        hidden = ImageBackbone(model).hidden_size
        self.projection = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(),
                                        nn.Linear(hidden, projection_dim))

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.projection(ImageBackbone(self.model).encode(pixel_values))


def nt_xent(z: Tensor, temperature: float) -> Tensor:
    """NT-Xent over (2B, D) embeddings where rows i and i + B are two views of one image."""
    n = z.shape[0] // 2
    z = F.normalize(z.float(), dim=1)
    sim = z @ z.T / temperature  # (2B, 2B) cosine similarities
    sim.fill_diagonal_(float("-inf"))  # an embedding is not its own positive
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)
