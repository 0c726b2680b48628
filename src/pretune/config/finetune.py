"""``pretune finetune``'s config: one ``FinetuneConfig`` for every task kind.

``task`` is a tagged union (``task.kind``; inferred from the data when omitted). A kind may
bring its own defaults for the rest (images train a small CNN longer at a higher learning
rate): they sit under what the user writes, and above the class defaults below.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from pretune.config.base import RunName, Section, deep_merge
from pretune.config.tasks import (
    KIND_SKLEARN_PROBE,
    KIND_STRATEGIES,
    GenTaskConfig,
    ImageAugmentConfig,
    ImageDataConfig,
    TagTaskConfig,
    TaskConfig,
    modality_of,
    with_kind,
)
from pretune.config.train import LoopConfig, ModelConfig, OptimConfig

TaskSpec = Annotated[TaskConfig | ImageDataConfig | TagTaskConfig | GenTaskConfig,
                     Field(discriminator="kind")]


class StrategyConfig(Section):
    """How the starting model is adapted: which weights train, and how (LoRA, prompting...)."""

    name: Literal["full", "linear-probe", "partial", "gradual", "llrd", "lora", "prompt"] = "full"
    sklearn: bool = False  # linear-probe: fit scikit-learn on features extracted once
    top_k: int = Field(2, ge=0)  # partial: trainable top layers
    llrd_decay: float = Field(0.9, gt=0, le=1)
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    lora_targets: list[str] | None = None  # None: attention + MLP projections of the arch
    # prompt: zero-shot unless few_shot (PET-style training of the MLM head on the pattern)
    template: str = "{text} It was [MASK]."
    verbalizer: dict[str, str | list[str]] | None = None  # label -> word(s)
    label_descriptions: dict[str, str] | None = None  # for encoders without an MLM head
    calibrate: bool = True  # divide by the label prior (content-free input)
    # prior from the content-free input "N/A", or mean probs over (unlabeled) training texts
    calibration: Literal["content-free", "train"] = "content-free"
    few_shot: bool = False


class AugmentConfig(ImageAugmentConfig):
    """Training-batch augmentation: token dropout/masking for text, pixel ops for images
    (the fields of ``ImageAugmentConfig``); each kind uses its own and refuses the others."""

    token_mask_prob: float = Field(0.0, ge=0, lt=1)
    token_delete_prob: float = Field(0.0, ge=0, lt=1)


TEXT_AUGMENT = ("token_mask_prob", "token_delete_prob")

# What a kind changes in the defaults of FinetuneConfig (under the user's own settings).
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "image-classification": {
        "name": "vision-finetune",
        "model": {"name": "resnet-tiny"},
        "augment": {"shift": 2},
        "optim": {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 1e-4, "schedule": "cosine"},
        "train": {"epochs": 20, "batch_size": 32, "min_steps": None},
    },
    "generation": {
        "name": "generate-finetune",
        "model": {"name": "builtin:smollm2"},
        "optim": {"lr": 1e-4},
        "train": {"epochs": 2, "batch_size": 8, "min_steps": None},
    },
}


class FinetuneConfig(Section):
    """``pretune finetune``: adapt a starting model to a labeled task of any kind."""

    name: RunName = "finetune"
    output_dir: str = "runs"
    model: ModelConfig = ModelConfig(name="builtin:minilm")
    # Tokenizer for a registry-name start (random init); checkpoints bring their own.
    tokenizer: str | None = None
    task: TaskSpec = TaskConfig()
    strategy: StrategyConfig = StrategyConfig()
    optim: OptimConfig = OptimConfig(lr="auto", schedule="linear", betas=(0.9, 0.999))
    train: LoopConfig = LoopConfig(epochs=4, batch_size=32, min_steps=100,
                                   early_stopping_patience=None)
    augment: AugmentConfig = AugmentConfig()
    # auto: on when the smallest class has under a third of the largest's examples (binary:
    # a minority under 25%); every strategy honours it, the scikit-learn probe as well.
    class_weights: bool | Literal["auto"] = "auto"
    # Binary tasks: the decision threshold on the positive (minority) class's probability.
    # auto: F1-optimal on validation, saved with the model and used by predict / evaluate (the
    # metrics at 0.5 are reported too, the tuned ones as tuned_*); off: 0.5; or a number.
    threshold: Literal["auto", "off"] | Annotated[float, Field(gt=0, lt=1)] = "auto"
    keep_head: bool = False  # images: keep a checkpoint's classifier when its label names match
    metric: str = "auto"  # selection/early-stopping metric; auto: the kind's (macro_f1 / r2)
    save_model: bool = True

    @classmethod
    def _before(cls, data: dict[str, Any]) -> dict[str, Any]:
        if "data" in data:  # the image commands' first name for `task`
            given = data.get("task") or {}
            if not isinstance(given, dict) or set(given) - {"kind"}:
                raise ValueError("give the task as `task` (or its old name `data`), not both")
            data["task"] = {**given, **data.pop("data")} if isinstance(data["data"], dict) \
                else data.pop("data")
        task = with_kind(data["task"]) if "task" in data else None
        if task is not None:
            data["task"] = task
        kind = (task.get("kind") if isinstance(task, dict) else getattr(task, "kind", None)) \
            or "text-classification"
        return deep_merge(KIND_DEFAULTS.get(kind, {}), data)

    @model_validator(mode="after")
    def _fits_the_kind(self) -> FinetuneConfig:
        kind = self.task.kind
        if self.strategy.name not in KIND_STRATEGIES[kind]:
            raise ValueError(f"strategy.name={self.strategy.name} does not apply to {kind} "
                             f"tasks; choose one of: {', '.join(KIND_STRATEGIES[kind])}")
        if self.strategy.sklearn and self.strategy.name == "linear-probe" \
                and kind not in KIND_SKLEARN_PROBE:
            raise ValueError(f"strategy.sklearn (the scikit-learn probe) is not available for "
                             f"{kind} tasks; use strategy.sklearn=false (the loop's linear probe)")
        if kind == "generation" and (self.augment.token_mask_prob or
                                     self.augment.token_delete_prob):
            raise ValueError("augment.token_mask_prob / token_delete_prob would corrupt the "
                             "targets; generation tasks take no token augmentation")
        if kind == "token-classification" and self.augment.token_delete_prob:
            raise ValueError("augment.token_delete_prob would shift tokens against their tags; "
                             "token classification takes augment.token_mask_prob only")
        image = modality_of(kind) == "image"
        for key in AugmentConfig.model_fields:
            value, default = getattr(self.augment, key), AugmentConfig.model_fields[key].default
            if value != default and (key in TEXT_AUGMENT) == image:
                other = "text" if image else "image"
                raise ValueError(f"augment.{key} is for {other} tasks; this task is {kind}")
        return self
