"""Typed configs for every command: frozen pydantic sections, YAML loading, ``a.b=c`` overrides.

One module per command family; everything is importable from ``pretune.config``:
``base`` (the machinery), ``data`` (prepare), ``train`` (models, optimizer, loop, pre-training),
``tasks`` (one task section per task kind), ``finetune``, ``study``, ``sweep``.
"""

from pretune.config.base import (
    TASK_KINDS,
    Section,
    apply_overrides,
    config_hash,
    config_identity,
    deep_merge,
    dump_yaml,
    format_validation_error,
    load_config,
    load_yaml,
    parse_override,
)
from pretune.config.data import CleanConfig, PrepareConfig, SourceConfig, TokenizerConfig
from pretune.config.finetune import AugmentConfig, FinetuneConfig, StrategyConfig
from pretune.config.study import ImageStudyConfig, MatrixConfig, StudyConfig, load_study_config
from pretune.config.sweep import ParamSpec, SweepConfig
from pretune.config.tasks import (
    IMAGE_STRATEGIES,
    KIND_SKLEARN_PROBE,
    KIND_STRATEGIES,
    DecodeConfig,
    GenTaskConfig,
    ImageAugmentConfig,
    ImageDataConfig,
    TagTaskConfig,
    TaskConfig,
    infer_kind,
    modality_of,
)
from pretune.config.train import (
    ImagePretrainConfig,
    LoopConfig,
    ModelConfig,
    OptimConfig,
    PretrainConfig,
)

__all__ = [
    "IMAGE_STRATEGIES", "KIND_SKLEARN_PROBE", "KIND_STRATEGIES", "TASK_KINDS", "AugmentConfig", "CleanConfig",
    "DecodeConfig", "FinetuneConfig", "GenTaskConfig", "ImageAugmentConfig", "ImageDataConfig", "ImagePretrainConfig",
    "ImageStudyConfig", "LoopConfig", "MatrixConfig", "ModelConfig", "OptimConfig", "ParamSpec",
    "PrepareConfig", "PretrainConfig", "Section", "SourceConfig", "StrategyConfig",
    "StudyConfig", "SweepConfig", "TagTaskConfig", "TaskConfig", "TokenizerConfig", "apply_overrides",
    "config_hash", "config_identity", "deep_merge", "dump_yaml", "format_validation_error", "infer_kind",
    "load_config", "load_study_config", "load_yaml", "modality_of", "parse_override",
]
