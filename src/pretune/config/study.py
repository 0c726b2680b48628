"""``pretune study``'s configs: the matrix every study shares (starts x strategies x label
budgets x seeds), and the text and image studies around it (their pre-training phases)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from pretune.config.base import (
    RunName,
    Section,
    apply_overrides,
    deep_merge,
    format_validation_error,
    load_config,
    load_yaml,
    paths_shorthand,
)
from pretune.config.data import PrepareConfig
from pretune.config.finetune import FinetuneConfig, StrategyConfig
from pretune.config.tasks import (
    IMAGE_STRATEGIES,
    GenTaskConfig,
    ImageDataConfig,
    TagTaskConfig,
    TaskConfig,
    modality_of,
    with_kind,
)
from pretune.config.train import ImagePretrainConfig, PretrainConfig
from pretune.errors import PretuneError

# A text study's tasks: classification and token tagging may sit side by side.
TextTaskSpec = Annotated[TaskConfig | TagTaskConfig | GenTaskConfig, Field(discriminator="kind")]


class MatrixConfig(Section):
    """What every study shares, text or image: the matrix of starts x strategies x label
    budgets x seeds, the cells to skip, per-start fine-tuning settings and retries."""

    name: RunName = "study"
    output_dir: str = "runs"
    # scratch | pretrained | continued (text) | hf:<dir> | builtin:minilm | <checkpoint dir>
    starts: list[str] = Field(default_factory=lambda: ["scratch", "pretrained"])
    strategies: list[StrategyConfig] = Field(default_factory=lambda: [StrategyConfig()])
    budgets: list[int | Literal["all"]] = Field(default_factory=lambda: [128, "all"])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    # Cells to skip: each entry matches on the keys it names (task, start, strategy, budget, seed),
    # e.g. {start: builtin:minilm, strategy: full} keeps the matrix affordable on a CPU.
    exclude: list[dict[Literal["task", "start", "strategy", "budget", "seed"], str | int]] = Field(
        default_factory=list)
    # Per-start fine-tuning settings, so no start is judged on another's learning rate:
    # start -> a sweep dir (or its best.yaml; its `optim` section is used), or a mapping merged
    # into `finetune` for that start, e.g. {builtin:minilm: {optim: {lr: 5.0e-5}}}.
    start_finetune: dict[str, str | dict[str, Any]] = Field(default_factory=dict)
    # Per-task fine-tuning settings, merged after the start's: tagging and sentiment rarely
    # want one recipe, e.g. {peoples-daily-ner: {optim: {lr: 1.0e-3}, train: {epochs: 6}}}.
    task_finetune: dict[str, dict[str, Any]] = Field(default_factory=dict)
    retries: int = Field(1, ge=0)  # retries of a crashed cell before it is reported failed
    # Multiple comparisons: every p-value of the report is corrected over all its comparisons
    # (holm: Holm-Bonferroni, the chance of any false claim; bh: Benjamini-Hochberg, the
    # expected share of false claims; none). Verdicts use the corrected p.
    correction: Literal["holm", "bh", "none"] = "holm"


class StudyConfig(MatrixConfig):
    """``pretune study``: the controlled comparison of starting points, one report."""

    modality: Literal["text"] = "text"  # `modality: image` selects ImageStudyConfig
    prepare: PrepareConfig | None = PrepareConfig()
    pretrain: PretrainConfig | None = None  # its `data` is replaced by `prepare`'s artifact
    # More pre-training recipes side by side, each merged onto `pretrain` and a start of its
    # own, `pretrained-<key>`: e.g. {electra: {objective: electra}, wordvec: {objective: wordvec}}.
    pretrain_variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    continued: PretrainConfig | None = None  # continued pre-training of an hf:/builtin start
    tasks: list[TextTaskSpec] = Field(default_factory=lambda: [TaskConfig()])
    finetune: FinetuneConfig = FinetuneConfig()  # defaults for every cell (model/task replaced)
    probes: bool = True  # linear probe on intermediate pre-training checkpoints
    contamination_ngram: int = Field(13, ge=3)

    @field_validator("pretrain_variants")
    @classmethod
    def _variant_names(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for key in v:
            if not key.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"pretrain_variants.{key}: use letters, digits, - and _ (it "
                                 "names the start pretrained-<key> and its run directory)")
        return v

    def variant(self, key: str) -> PretrainConfig:
        """The `pretrain` section with variant ``key``'s settings merged in."""
        if self.pretrain is None:
            raise PretuneError("pretrain_variants need a `pretrain:` section to vary")
        merged = deep_merge(self.pretrain.model_dump(mode="json"), self.pretrain_variants[key])
        try:
            return PretrainConfig.model_validate(merged)
        except ValidationError as e:
            raise PretuneError(format_validation_error(e, f"pretrain_variants.{key}", PretrainConfig)) from None

    @model_validator(mode="after")
    def _variants_valid(self) -> StudyConfig:
        for key in self.pretrain_variants:  # a typo fails at load, not after the first phase
            self.variant(key)
        return self

    @classmethod
    def _before(cls, data: dict[str, Any]) -> dict[str, Any]:
        if "tasks" in data:
            tasks = [with_kind(t) for t in paths_shorthand(data["tasks"]) or []]
            for i, t in enumerate(tasks):
                kind = t.get("kind") if isinstance(t, dict) else getattr(t, "kind", "")
                where = t.get('path') if isinstance(t, dict) else t.path
                if modality_of(str(kind)) == "image":
                    raise ValueError(f"tasks.{i} ({where}) is an image task; image studies say "
                                     "`modality: image`")
            data["tasks"] = tasks
        return data


class ImageStudyConfig(MatrixConfig):
    """``pretune study`` on images (``modality: image``): pre-train an image model, then
    fine-tune it and the same architecture from scratch on image tasks; the same report."""

    modality: Literal["image"] = "image"
    name: RunName = "vision-study"
    pretrain: ImagePretrainConfig | None = ImagePretrainConfig()
    # Defaults to [finetune.task] when not given, so one YAML also serves `finetune-images`.
    tasks: list[ImageDataConfig] = Field(default_factory=lambda: [ImageDataConfig()])
    budgets: list[int | Literal["all"]] = Field(default_factory=lambda: [20, 50, 100])
    finetune: FinetuneConfig = FinetuneConfig(task=ImageDataConfig())  # defaults for every cell
    contamination: bool = True  # test images that also occur in the pre-training images

    @classmethod
    def _before(cls, data: dict[str, Any]) -> dict[str, Any]:
        ft = data.get("finetune")
        if isinstance(ft, dict):  # the cells' defaults are image fine-tuning's
            ft = dict(ft)
            if "data" in ft and "task" not in ft:
                ft["task"] = ft.pop("data")
            ft["task"] = with_kind(ft.get("task", {}), "image-classification")
            data["finetune"] = ft
            if "tasks" not in data and ft["task"].get("path"):
                data["tasks"] = [ft["task"]]
        if "tasks" in data:
            data["tasks"] = [with_kind(t, "image-classification")
                             for t in paths_shorthand(data["tasks"]) or []]
        return data

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
