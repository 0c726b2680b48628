"""Config sections of models and training: the starting model, the optimizer, the one loop,
and the two pre-training commands (text MLM/CLM, images supervised/SimCLR)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from pretune.config.base import RunName, Section
from pretune.config.data import PrepareConfig
from pretune.config.tasks import ImageAugmentConfig, ImageDataConfig


class ModelConfig(Section):
    """A starting model: registry name (``bert-mini``, ``gpt-tiny``...), ``hf:<dir>``,
    ``builtin:minilm``, or a pretune checkpoint directory."""

    name: str = "bert-mini"
    # Architecture overrides applied to the HF config (e.g. num_hidden_layers: 2).
    overrides: dict[str, int | float | str | bool] = Field(default_factory=dict)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)  # overrides hidden + attention dropout
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False


class OptimConfig(Section):
    """The optimizer and its learning-rate schedule (warmup, decay, gradient clipping)."""

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    # auto (fine-tuning's default): by strategy and model size, see pretune.finetune.recipe
    lr: Annotated[float, Field(gt=0)] | Literal["auto"] = 5e-4
    weight_decay: float = Field(0.01, ge=0)  # not applied to norms/biases/embeddings' LN
    l1: float = Field(0.0, ge=0)  # optional L1 penalty on trainable weights
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    momentum: float = 0.9  # sgd only
    schedule: Literal["cosine", "linear", "constant"] = "linear"
    warmup_steps: int | None = Field(None, ge=0)  # wins over warmup_ratio
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    grad_clip: float | None = Field(1.0, gt=0)


class LoopConfig(Section):
    """Settings of the one training loop (pre-training and fine-tuning)."""

    batch_size: int = Field(32, ge=1)
    grad_accum: int = Field(1, ge=1)
    # Budget: the first one reached ends training. At least one must be set.
    max_steps: int | None = Field(None, ge=1)  # optimizer steps
    max_tokens: int | None = Field(None, ge=1)
    max_minutes: float | None = Field(None, gt=0)
    epochs: float | None = Field(None, gt=0)
    # With an epoch budget: at least this many optimizer steps (a small training set gets
    # more epochs; fine-tuning's default is 100).
    min_steps: int | None = Field(None, ge=1)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # Under torchrun: ddp (each process holds the model) or fsdp (weights, gradients and
    # optimizer state sharded over the processes; sharded checkpoints). One process: neither.
    strategy: Literal["ddp", "fsdp"] = "ddp"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 autocast on CUDA
    compile: bool = False
    tf32: bool = True
    num_workers: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)
    eval_every: int | None = Field(None, ge=1)  # steps; None = once per epoch / at the end
    save_every: int | None = Field(None, ge=1)  # steps; a checkpoint is always saved at the end
    keep_last: int = Field(2, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1)  # evaluations without improvement
    # Console progress: a live bar on a terminal, a plain line every log_every steps and every
    # evaluation otherwise (batch jobs, nohup, SLURM logs); false: quiet.
    progress: bool = True
    # Experiment trackers: tensorboard, mlflow (MLFLOW_TRACKING_URI or runs/mlruns), wandb
    # (offline unless WANDB_MODE / WANDB_API_KEY); [] for none. `tensorboard: false` drops it.
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = ["tensorboard"]
    # [start, end]: record a torch.profiler trace of these optimizer steps (CPU + CUDA) into
    # the run's tensorboard dir, and print the top ops in one line.
    profile_steps: tuple[int, int] | None = None

    @classmethod
    def _before(cls, data: dict[str, Any]) -> dict[str, Any]:
        if "tensorboard" in data:  # the older switch: tensorboard: false == no TensorBoard
            on = data.pop("tensorboard")
            given = cls._report_list(data.get("report_to", ["tensorboard"]))
            others = [r for r in given if r != "tensorboard"]
            data["report_to"] = ["tensorboard", *others] if on else others
        if "report_to" in data:
            data["report_to"] = cls._report_list(data["report_to"])
        return data

    @staticmethod
    def _report_list(value: Any) -> Any:
        """``report_to: mlflow`` / ``none`` as a list."""
        if isinstance(value, str):
            return [] if value in ("none", "") else [v.strip() for v in value.split(",")]
        return value

    @model_validator(mode="after")
    def _check_profile(self) -> LoopConfig:
        if self.profile_steps is not None and not 1 <= self.profile_steps[0] <= \
                self.profile_steps[1]:
            raise ValueError("train.profile_steps must be [start, end] with 1 <= start <= end")
        return self

    @property
    def tensorboard(self) -> bool:
        return "tensorboard" in self.report_to


class PretrainConfig(Section):
    """``pretune pretrain``: MLM or CLM on packed shards, from scratch or continued."""

    name: RunName = "pretrain"
    output_dir: str = "runs"
    # A prepared artifact directory, or an inline prepare config (run first, cached).
    data: str | PrepareConfig = PrepareConfig()
    model: ModelConfig = ModelConfig()
    # auto: from the architecture (mlm for bert-*, clm for gpt-*). electra: replaced-token
    # detection (a small generator + the discriminator, exported). simcse: only the contrastive
    # sentence loss. wordvec: no transformer training, the word vectors alone (seconds).
    objective: Literal["auto", "mlm", "clm", "electra", "simcse", "wordvec"] = "auto"
    seq_len: int = Field(128, ge=8)
    mlm_probability: float = Field(0.15, gt=0, lt=1)  # also ELECTRA's generator masking
    whole_word_mask: bool = False
    # Initialise the word embeddings with vectors learned from the corpus's co-occurrences
    # (PPMI + truncated SVD, seconds) before the objective trains; `wordvec` does only this.
    embedding_init: Literal["random", "wordvec"] = "random"
    wordvec_window: int = Field(5, ge=1, le=20)
    # ELECTRA: generator width (and depth of heads) as a fraction of the discriminator's, and
    # the weight of the discriminator's loss against the generator's MLM loss (paper: 50).
    electra_generator_size: float = Field(0.25, gt=0, le=1)
    electra_weight: float = Field(50.0, gt=0)
    # Unsupervised SimCSE, added to mlm / electra when > 0 (objective simcse uses weight 1):
    # `simcse_windows` spans of `simcse_window` tokens per block, two dropout views each,
    # in-batch negatives.
    simcse_weight: float = Field(0.0, ge=0)
    simcse_window: int = Field(32, ge=4)
    simcse_windows: int = Field(1, ge=1)
    simcse_temperature: float = Field(0.05, gt=0)
    optim: OptimConfig = OptimConfig()
    train: LoopConfig = LoopConfig(max_steps=1000, eval_every=200, save_every=500)
    val_batches: int = Field(20, ge=1)  # validation batches per evaluation


class ImagePretrainConfig(Section):
    """``pretrain_images``: supervised or SimCLR pre-training of a ResNet/ViT on images."""

    name: RunName = "vision-pretrain"
    output_dir: str = "runs"
    data: ImageDataConfig = ImageDataConfig(path="builtin:mnist-5k", val_fraction=0.1,
                                            test_fraction=0.0)
    model: ModelConfig = ModelConfig(name="resnet-tiny")
    objective: Literal["supervised", "simclr"] = "supervised"
    augment: ImageAugmentConfig = ImageAugmentConfig(shift=2, rotate=10)
    # SimCLR: NT-Xent on two augmented views; projection MLP on the pooled features.
    temperature: float = Field(0.2, gt=0)
    projection_dim: int = Field(64, ge=2)
    optim: OptimConfig = OptimConfig(lr=2e-3, betas=(0.9, 0.999), weight_decay=1e-4,
                                     schedule="cosine")
    train: LoopConfig = LoopConfig(epochs=5, batch_size=128)
