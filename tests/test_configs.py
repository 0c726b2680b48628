"""Every shipped YAML recipe validates against its config class."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretune.config import (
    FinetuneConfig,
    ImagePretrainConfig,
    ImageStudyConfig,
    StudyConfig,
    SweepConfig,
    load_config,
    load_study_config,
)
from pretune.study.runner import plan_cells

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["quickstart.yaml", "gpu-sst2.yaml", "quickstart-zh.yaml"])
def test_study_configs_validate_and_plan(name):
    cfg = load_study_config(CONFIGS / name)
    assert isinstance(cfg, StudyConfig)
    cells = plan_cells(cfg)
    assert cells and len({c.key for c in cells}) == len(cells)
    assert {c.start for c in cells} == set(cfg.starts)


def test_vision_quickstart_sections_validate():
    path = CONFIGS / "vision-quickstart.yaml"
    assert load_config(ImagePretrainConfig, path, section="pretrain").data.path == "builtin:mnist-5k"
    ft = load_config(FinetuneConfig, path, section="finetune")
    assert ft.task.kind == "image-classification" and ft.task.path == "builtin:digits"
    assert ft.optim.lr == 1e-3 and ft.model.name.endswith("pretrain/model")
    study = load_study_config(path)
    assert isinstance(study, ImageStudyConfig)
    assert [t.path for t in study.tasks] == ["builtin:digits"]  # from finetune.task
    cells = plan_cells(study)
    assert {c.start for c in cells} == {"scratch", "pretrained"}
    assert len(cells) == 2 * len(study.strategies) * len(study.budgets) * len(study.seeds)


def test_sweep_config_validates():
    cfg = load_config(SweepConfig, CONFIGS / "sweep-rt.yaml")
    assert set(cfg.space) == {"optim.lr", "strategy.name"} and cfg.sampler == "grid"


def test_every_shipped_yaml_is_covered():
    assert {p.name for p in CONFIGS.glob("*.yaml")} == {
        "quickstart.yaml", "gpu-sst2.yaml", "vision-quickstart.yaml", "sweep-rt.yaml",
        "quickstart-zh.yaml", "quickstart-generation.yaml", "gpu-generation.yaml"}


def test_generation_configs_plan_what_they_say():
    gpu = load_study_config(CONFIGS / "gpu-generation.yaml")
    assert {t.kind for t in gpu.tasks} == {"generation"} and len(plan_cells(gpu)) == 25


def test_chinese_quickstart_plans_tagging_without_prompts_or_sklearn():
    cfg = load_study_config(CONFIGS / "quickstart-zh.yaml")
    ner = [c for c in plan_cells(cfg) if c.task == "peoples-daily-ner"]
    assert ner and {c.strategy for c in ner} == {"full"}  # no sklearn probe for tags
    assert {c.settings for c in ner} != {""}  # its own recipe is part of its cell keys
