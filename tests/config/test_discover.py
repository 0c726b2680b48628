from __future__ import annotations

from pretune.config import FinetuneConfig, LoopConfig, PretrainConfig, StudyConfig
from pretune.config.discover import commented_yaml, field_comments, field_paths, suggest


def test_comments_come_from_the_source():
    c = field_comments(LoopConfig)
    assert c["device"] == "auto | cpu | cuda | cuda:N"
    assert c["max_steps"].startswith("Budget: the first one reached")  # the block above it
    assert "save_every" in c and "keep_last" not in c


def test_field_paths_reach_nested_and_union_sections():
    paths = field_paths(PretrainConfig)
    assert {"train.max_steps", "data.tokenizer.vocab_size", "optim.lr"} <= set(paths)
    ft = field_paths(FinetuneConfig)
    assert {"task.text_field", "task.target_field", "task.image_size"} <= set(ft)


def test_suggest():
    assert suggest(FinetuneConfig, "train.batchsize") == ["train.batch_size"]
    assert suggest(StudyConfig, "finetune.optim.lrr")[0] == "finetune.optim.lr"
    assert suggest(FinetuneConfig, "qwertyuiop") == []


def test_commented_yaml_is_valid_yaml_of_the_dump():
    import yaml

    cfg = PretrainConfig()
    assert yaml.safe_load(commented_yaml(cfg, "header")) == cfg.model_dump(mode="json")
