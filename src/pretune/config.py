"""Typed configs for every command: pydantic models, YAML loading, ``a.b=c`` overrides.

Configs are the single source of truth. They are validated on load, frozen, and never mutated
at run time (use ``model_copy(update=...)`` to derive a new one). Unknown keys and wrong types
fail with one line naming the key and the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pretune.errors import PretuneError


class Section(BaseModel):
    """Base for all config sections: unknown keys are errors, instances are immutable.

    A section field whose default is a customised instance (``train: LoopConfig =
    LoopConfig(max_steps=1000)``) keeps those values when the user sets only some keys of it
    (``train.batch_size=8`` still trains 1000 steps).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _keep_section_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            given, default = merged.get(name), field.default
            if isinstance(given, dict) and isinstance(default, BaseModel):
                merged[name] = deep_merge(default.model_dump(exclude_unset=True), given)
        return merged


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# --------------------------------------------------------------------------- data preparation


class SourceConfig(Section):
    """One corpus input: a file, directory, glob, or ``builtin:<name>``."""

    path: str
    format: Literal["auto", "txt", "jsonl", "csv", "tsv", "parquet"] = "auto"
    text_field: str = "text"  # column/key holding the text (jsonl/csv/tsv/parquet)
    txt_mode: Literal["file", "line", "paragraph"] = "file"  # one doc per file/line/blank-line block


class CleanConfig(Section):
    nfkc: bool = True
    strip_control: bool = True  # control + zero-width characters
    strip_html: bool = True  # tags and entities
    normalize_whitespace: bool = True
    lowercase: bool = False
    min_chars: int = Field(20, ge=0)
    max_chars: int | None = Field(None, ge=1)  # longer docs are dropped (not truncated)
    min_words: int = Field(0, ge=0)
    exact_dedup: bool = True
    near_dedup: bool = True
    near_dedup_threshold: float = Field(0.8, gt=0.0, le=1.0)  # MinHash-LSH Jaccard threshold
    minhash_perm: int = Field(64, ge=16)
    shingle_words: int = Field(5, ge=1)


class TokenizerConfig(Section):
    kind: Literal["wordpiece", "bpe", "unigram"] = "wordpiece"
    vocab_size: int = Field(8000, ge=32)
    min_frequency: int = Field(2, ge=1)
    lowercase: bool = True  # wordpiece/unigram normaliser; byte-level BPE keeps case
    model_max_length: int = Field(512, ge=8)  # saved with the tokenizer (HF truncation default)
    # Reuse an existing tokenizer instead of training: an HF dir or ``builtin:minilm``.
    path: str | None = None


class PrepareConfig(Section):
    """``pretune prepare``: corpus -> clean -> tokenizer -> packed memmap shards."""

    name: str = "corpus"
    sources: list[SourceConfig] = Field(default_factory=lambda: [SourceConfig(path="builtin:news")])
    clean: CleanConfig = CleanConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    val_fraction: float = Field(0.02, ge=0.0, lt=0.5)  # documents held out for validation
    max_docs: int | None = Field(None, ge=1)  # cap on documents read (quick runs, tests)
    output_dir: str = "runs/data"  # artifact goes to <output_dir>/<name>-<config hash>
    num_workers: int = Field(0, ge=0)  # 0 = os.cpu_count()
    batch_docs: int = Field(1000, ge=1)
    seed: int = 0
    progress: bool = True

    @field_validator("sources", mode="before")
    @classmethod
    def _sources_shorthand(cls, v: Any) -> Any:
        # Allow `sources: builtin:news` or a list of plain strings.
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list):
            return [{"path": s} if isinstance(s, str) else s for s in v]
        return v


# --------------------------------------------------------------------------- models & training


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
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(5e-4, gt=0)
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
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 autocast on CUDA
    compile: bool = False
    tf32: bool = True
    num_workers: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)
    eval_every: int | None = Field(None, ge=1)  # steps; None = once per epoch / at the end
    save_every: int | None = Field(None, ge=1)  # steps; a checkpoint is always saved at the end
    keep_last: int = Field(2, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1)  # evaluations without improvement
    progress: bool = True
    tensorboard: bool = True


class PretrainConfig(Section):
    """``pretune pretrain``: MLM or CLM on packed shards, from scratch or continued."""

    name: str = "pretrain"
    output_dir: str = "runs"
    # A prepared artifact directory, or an inline prepare config (run first, cached).
    data: str | PrepareConfig = PrepareConfig()
    model: ModelConfig = ModelConfig()
    objective: Literal["auto", "mlm", "clm"] = "auto"  # auto: from the architecture
    seq_len: int = Field(128, ge=8)
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    whole_word_mask: bool = False
    optim: OptimConfig = OptimConfig()
    train: LoopConfig = LoopConfig(max_steps=1000, eval_every=200, save_every=500)
    val_batches: int = Field(20, ge=1)  # validation batches per evaluation


# --------------------------------------------------------------------------- fine-tuning


class TaskConfig(Section):
    """A labeled task: ``builtin:rotten-tomatoes``, ``builtin:wiki-topics`` or files."""

    path: str = "builtin:rotten-tomatoes"  # train file (or the only file), or builtin:<name>
    validation: str | None = None
    test: str | None = None
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = "auto"
    text_field: str = "text"
    text_pair_field: str | None = None
    label_field: str = "label"
    type: Literal["auto", "single_label", "multi_label", "regression"] = "auto"
    label_sep: str = "|"  # multi-label labels inside one cell
    val_fraction: float = Field(0.1, ge=0, lt=0.5)  # when no validation file is given
    test_fraction: float = Field(0.2, ge=0, lt=0.5)  # when no test file is given
    test_size: int | None = Field(None, ge=1)  # absolute test size (wins over test_fraction)
    split_seed: int = 0  # splits are fixed across runs; budgets/seeds vary separately
    budget: int | None = Field(None, ge=1)  # stratified subsample of training examples
    max_length: int = Field(128, ge=8)


class StrategyConfig(Section):
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


class AugmentConfig(Section):
    token_mask_prob: float = Field(0.0, ge=0, lt=1)
    token_delete_prob: float = Field(0.0, ge=0, lt=1)


class FinetuneConfig(Section):
    """``pretune finetune``: adapt a starting model to a labeled task."""

    name: str = "finetune"
    output_dir: str = "runs"
    model: ModelConfig = ModelConfig(name="builtin:minilm")
    # Tokenizer for a registry-name start (random init); checkpoints bring their own.
    tokenizer: str | None = None
    task: TaskConfig = TaskConfig()
    strategy: StrategyConfig = StrategyConfig()
    optim: OptimConfig = OptimConfig(lr=5e-5, schedule="linear", betas=(0.9, 0.999))
    train: LoopConfig = LoopConfig(epochs=4, batch_size=32, early_stopping_patience=None)
    augment: AugmentConfig = AugmentConfig()
    class_weights: bool = False
    metric: str = "auto"  # selection/early-stopping metric; auto: macro_f1 / r2
    save_model: bool = True


# --------------------------------------------------------------------------- study


class MatrixConfig(Section):
    """What every study shares, text or image: the matrix of starts x strategies x label
    budgets x seeds, the cells to skip, per-start fine-tuning settings and retries."""

    name: str = "study"
    output_dir: str = "runs"
    # scratch | pretrained | continued (text) | hf:<dir> | builtin:minilm | <checkpoint dir>
    starts: list[str] = Field(default_factory=lambda: ["scratch", "pretrained"])
    strategies: list[StrategyConfig] = Field(default_factory=lambda: [StrategyConfig()])
    budgets: list[int | Literal["all"]] = Field(default_factory=lambda: [128, "all"])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    # Cells to skip: each entry matches on the keys it names (task, start, strategy, budget),
    # e.g. {start: builtin:minilm, strategy: full} keeps the matrix affordable on a CPU.
    exclude: list[dict[Literal["task", "start", "strategy", "budget"], str | int]] = Field(
        default_factory=list)
    # Per-start fine-tuning settings, so no start is judged on another's learning rate:
    # start -> a sweep dir (or its best.yaml; its `optim` section is used), or a mapping merged
    # into `finetune` for that start, e.g. {builtin:minilm: {optim: {lr: 5.0e-5}}}.
    start_finetune: dict[str, str | dict[str, Any]] = Field(default_factory=dict)
    retries: int = Field(1, ge=0)  # retries of a crashed cell before it is reported failed


class StudyConfig(MatrixConfig):
    """``pretune study``: the controlled comparison of starting points, one report."""

    modality: Literal["text"] = "text"  # `modality: image` selects ImageStudyConfig
    prepare: PrepareConfig | None = PrepareConfig()
    pretrain: PretrainConfig | None = None  # its `data` is replaced by `prepare`'s artifact
    continued: PretrainConfig | None = None  # continued pre-training of an hf:/builtin start
    tasks: list[TaskConfig] = Field(default_factory=lambda: [TaskConfig()])
    finetune: FinetuneConfig = FinetuneConfig()  # defaults for every cell (model/task replaced)
    probes: bool = True  # linear probe on intermediate pre-training checkpoints
    contamination_ngram: int = Field(13, ge=3)

    @field_validator("tasks", mode="before")
    @classmethod
    def _tasks_shorthand(cls, v: Any) -> Any:
        return _paths_shorthand(v)


def _paths_shorthand(v: Any) -> Any:
    """``tasks: builtin:x`` or ``[builtin:x, {path: ...}]``: strings are ``{path: ...}``."""
    if isinstance(v, str):
        v = [v]
    if isinstance(v, list):
        return [{"path": t} if isinstance(t, str) else t for t in v]
    return v


# --------------------------------------------------------------------------- sweep


class ParamSpec(Section):
    """One search dimension: ``choices: [...]`` or a range ``low``..``high`` (``log``, ``int``,
    ``step``). A plain YAML list is shorthand for ``choices``."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True,
                              validate_by_alias=True)

    choices: list[str | int | float | bool | None] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = Field(False, alias="int")  # `int: true` in YAML
    step: float | None = Field(None, gt=0)  # checked with its key by SweepConfig


class SweepConfig(Section):
    """``pretune sweep``: Optuna / grid search (optionally k-fold CV) over a FinetuneConfig."""

    name: str = "sweep"
    output_dir: str = "runs"  # the sweep lives in <output_dir>/<name>/ (optuna.db, trials/...)
    base: FinetuneConfig = FinetuneConfig()  # or a path to a finetune YAML
    space: dict[str, ParamSpec] = Field(default_factory=dict)  # dotted FinetuneConfig key -> spec
    sampler: Literal["tpe", "grid", "random"] = "tpe"
    n_trials: int | None = Field(20, ge=1)  # None: the whole grid, or until timeout_minutes
    timeout_minutes: float | None = Field(None, gt=0)
    pruner: Literal["median", "none"] = "median"
    metric: str = "auto"  # VALIDATION metric to optimise; auto: macro_f1 / r2; direction from it
    kfold: int | None = Field(None, ge=2)  # k-fold CV on train+val; the search optimises the mean
    seed: int = 0  # sampler seed (training seeds come from base.train.seed)
    n_jobs: int = Field(1, ge=1)  # parallel trials (threads)
    save_models: bool = False  # keep each trial's model dir (best.yaml retrains the winner)

    @field_validator("base", mode="before")
    @classmethod
    def _base_from_file(cls, v: Any) -> Any:
        return load_yaml(v) if isinstance(v, str) else v

    @field_validator("space", mode="before")
    @classmethod
    def _space_shorthand(cls, v: Any) -> Any:
        # A list is `choices`; nested mappings flatten to dotted keys, so the CLI override
        # `space.optim.lr=[1e-4,1e-3]` means the key "optim.lr".
        if not isinstance(v, dict):
            return v
        spec_keys = set(ParamSpec.model_fields) | {"int"}
        out: dict[str, Any] = {}
        for k, s in v.items():
            if isinstance(s, list):
                out[k] = {"choices": s}
            elif isinstance(s, dict) and s and not set(s) <= spec_keys:
                out.update({f"{k}.{sub}": spec for sub, spec in cls._space_shorthand(s).items()})
            else:
                out[k] = s
        return out

    def model_post_init(self, _context: Any) -> None:
        from pretune.sweep.space import check_sweep  # lazy: keeps config import light

        check_sweep(self)  # unknown keys, empty space, grid-only specs: PretuneError


# --------------------------------------------------------------------------- vision


class ImageDataConfig(Section):
    """Images: ``builtin:mnist-5k`` / ``builtin:digits``, a folder of class sub-folders
    (PNG/JPEG; a folder of images without sub-folders is unlabeled), or an ``.npz`` (x, y)."""

    path: str = "builtin:digits"
    validation: str | None = None
    test: str | None = None
    # Every image is resized to image_size x image_size (None: keep; then all must match).
    image_size: int | None = Field(28, ge=4)
    # Zero border (pixels, inside image_size) around the resized image: MNIST digits sit in a
    # 20 px box with a 4 px border, so digits with image_size 28 and border 4 match MNIST.
    border: int = Field(0, ge=0)
    channels: Literal[1, 3] = 3  # 3: HF image pipelines feed RGB; 1: grayscale, cheaper
    val_fraction: float = Field(0.1, ge=0, lt=0.5)  # when no validation file is given
    test_fraction: float = Field(0.2, ge=0, lt=0.5)  # when no test file is given
    test_size: int | None = Field(None, ge=1)  # absolute test size (wins over test_fraction)
    split_seed: int = 0
    budget: int | None = Field(None, ge=1)  # stratified subsample of labeled training images
    max_images: int | None = Field(None, ge=1)  # random cap on images read (quick runs, tests)


class ImageAugmentConfig(Section):
    """Tensor-op augmentation of training batches (pixels in [0, 1], before normalisation)."""

    shift: int = Field(0, ge=0)  # random translation up to N px (zero pad + crop)
    flip: bool = False  # horizontal flip; keep OFF for digits/text-like images
    rotate: float = Field(0.0, ge=0, le=180)  # random rotation up to +-N degrees
    zoom: float = Field(0.0, ge=0, lt=1)  # random scale in [1 - zoom, 1 + zoom]
    noise: float = Field(0.0, ge=0)  # gaussian pixel noise std
    # Half of a batch is resized down to U(1 - downsample, 1) x its size and back up: blur that
    # makes features robust to low-resolution sources (8x8 digits beside 28x28 MNIST).
    downsample: float = Field(0.0, ge=0, lt=1)
    mixup: float = Field(0.0, ge=0)  # Beta(a, a) mixup of images + labels (0 = off)
    cutmix: float = Field(0.0, ge=0)  # Beta(a, a) CutMix (0 = off; with mixup: one per batch)


class ImagePretrainConfig(Section):
    """``pretrain_images``: supervised or SimCLR pre-training of a ResNet/ViT on images."""

    name: str = "vision-pretrain"
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


class ImageFinetuneConfig(Section):
    """``finetune_images``: adapt an image model (random init or a checkpoint) to labeled images."""

    name: str = "vision-finetune"
    output_dir: str = "runs"
    model: ModelConfig = ModelConfig(name="resnet-tiny")  # arch name, hf:<dir> or a model dir
    data: ImageDataConfig = ImageDataConfig()
    strategy: StrategyConfig = StrategyConfig()  # full | linear-probe | partial | gradual | llrd
    keep_head: bool = False  # keep a checkpoint's classifier when its label names match
    augment: ImageAugmentConfig = ImageAugmentConfig(shift=2)
    optim: OptimConfig = OptimConfig(lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4,
                                     schedule="cosine")
    train: LoopConfig = LoopConfig(epochs=20, batch_size=32)
    metric: str = "auto"  # selection metric on val; auto: macro_f1
    save_model: bool = True


IMAGE_STRATEGIES = ("full", "linear-probe", "partial", "gradual", "llrd")


class ImageStudyConfig(MatrixConfig):
    """``pretune study`` on images (``modality: image``): pre-train an image model, then
    fine-tune it and the same architecture from scratch on image tasks; the same report."""

    modality: Literal["image"] = "image"
    name: str = "vision-study"
    pretrain: ImagePretrainConfig | None = ImagePretrainConfig()
    # Defaults to [finetune.data] when not given, so one YAML also serves `finetune-images`.
    tasks: list[ImageDataConfig] = Field(default_factory=lambda: [ImageDataConfig()])
    budgets: list[int | Literal["all"]] = Field(default_factory=lambda: [20, 50, 100])
    finetune: ImageFinetuneConfig = ImageFinetuneConfig()  # defaults for every cell
    contamination: bool = True  # test images that also occur in the pre-training images

    @model_validator(mode="before")
    @classmethod
    def _tasks_from_finetune(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tasks" not in data:
            ft = data.get("finetune")
            if isinstance(ft, dict) and isinstance(ft.get("data"), dict):
                data = {**data, "tasks": [ft["data"]]}
        return data

    @field_validator("tasks", mode="before")
    @classmethod
    def _image_tasks_shorthand(cls, v: Any) -> Any:
        return _paths_shorthand(v)

    @field_validator("strategies")
    @classmethod
    def _image_strategies(cls, v: list[StrategyConfig]) -> list[StrategyConfig]:
        for i, s in enumerate(v):
            if s.name not in IMAGE_STRATEGIES:
                raise ValueError(f"strategies.{i}.name={s.name} is for text models; image "
                                 f"studies support {', '.join(IMAGE_STRATEGIES)}")
        return v

    @field_validator("starts")
    @classmethod
    def _image_starts(cls, v: list[str]) -> list[str]:
        for s in v:
            if s == "continued" or s.startswith("builtin:"):
                raise ValueError(f"start '{s}' is a text start; image studies use scratch, "
                                 "pretrained, an image arch (resnet-*/vit-*) or a checkpoint dir")
        return v


def load_study_config(path: str | Path | None = None, overrides: list[str] = ()
                      ) -> StudyConfig | ImageStudyConfig:
    """A text or image study config, chosen by its ``modality`` key (file or override)."""
    data = load_yaml(path) if path else {}
    modality = apply_overrides(data, [o for o in overrides if o.startswith("modality=")]).get(
        "modality", "text")
    if modality not in ("text", "image"):
        raise PretuneError(f"{path or 'overrides'}: modality={modality!r}; use text or image")
    cls = ImageStudyConfig if modality == "image" else StudyConfig
    return load_config(cls, path, overrides)


# --------------------------------------------------------------------------- loading


C = TypeVar("C", bound=BaseModel)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=c`` -> (["a", "b"], value); the value is parsed as a YAML scalar/list/dict."""
    if "=" not in item:
        raise PretuneError(f"override '{item}' must look like key.sub=value")
    key, raw = item.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise PretuneError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b=c`` set (creating nested dicts as needed).

    A numeric path part indexes into a list (``strategies.0.name=lora``)."""
    out = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        path, value = parse_override(item)
        node: Any = out
        for part in path[:-1]:
            if isinstance(node, list):
                node = node[_list_index(node, part, item)]
                continue
            if not isinstance(node.get(part), dict | list):
                node[part] = {}
            node = node[part]
        last = path[-1]
        if isinstance(node, list):
            node[_list_index(node, last, item)] = value
        else:
            node[last] = value
    return out


def _list_index(node: list, part: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise PretuneError(f"override '{item}': '{part}' is not an index of a {len(node)}-item list")
    return int(part)


def format_validation_error(err: ValidationError, where: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see `pretune <command> --help`)"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"config error in {where}: '{key}': {msg}{more}"


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise PretuneError(f"config file {p} not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise PretuneError(f"config file {p}{line}: invalid YAML ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise PretuneError(f"config file {p} must hold a mapping of keys, not {type(data).__name__}")
    return data


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] = (),
                section: str | None = None) -> C:
    """Load ``cls`` from an optional YAML file plus ``a.b=c`` overrides; validate once.

    ``section``: when the file holds several configs under top-level keys (e.g. ``pretrain:``
    and ``finetune:``), use that key's mapping."""
    data = load_yaml(path) if path else {}
    if section and isinstance(data.get(section), dict):
        data = data[section]
    data = apply_overrides(data, list(overrides))
    where = str(path) if path else "command-line overrides"
    if path and overrides:
        where = f"{path} (with overrides)"
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise PretuneError(format_validation_error(e, where)) from None


def config_hash(cfg: BaseModel, exclude: set[str] | None = None) -> str:
    """Stable short hash of a config's content (cache keys for prepared artifacts)."""
    payload = cfg.model_dump(mode="json", exclude=exclude)
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def dump_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
