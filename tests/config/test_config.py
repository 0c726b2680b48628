from __future__ import annotations

import pytest

from pretune.config import (
    FinetuneConfig,
    PrepareConfig,
    PretrainConfig,
    StudyConfig,
    apply_overrides,
    config_hash,
    load_config,
)
from pretune.errors import PretuneError


def test_defaults_validate():
    for cls in (PrepareConfig, PretrainConfig, FinetuneConfig, StudyConfig):
        assert cls() == cls.model_validate({})


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: mine\ntokenizer:\n  vocab_size: 4000\n")
    cfg = load_config(PrepareConfig, path, ["tokenizer.kind=bpe", "clean.min_chars=5"])
    assert cfg.name == "mine"
    assert cfg.tokenizer.vocab_size == 4000
    assert cfg.tokenizer.kind == "bpe"
    assert cfg.clean.min_chars == 5


def test_shorthands():
    cfg = load_config(PrepareConfig, None, ["sources=builtin:news"])
    assert [s.path for s in cfg.sources] == ["builtin:news"]
    study = load_config(StudyConfig, None, ["tasks=[builtin:rotten-tomatoes, builtin:wiki-topics]"])
    assert [t.path for t in study.tasks] == ["builtin:rotten-tomatoes", "builtin:wiki-topics"]
    assert load_config(StudyConfig, None, ["budgets=[32, all]"]).budgets == [32, "all"]


def test_list_index_override():
    data = apply_overrides({"strategies": [{"name": "full"}]}, ["strategies.0.name=lora"])
    assert data == {"strategies": [{"name": "lora"}]}
    with pytest.raises(PretuneError, match="not an index"):
        apply_overrides({"strategies": [{"name": "full"}]}, ["strategies.3.name=lora"])


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("tokenizer:\n  vocab_sise: 10\n")
    with pytest.raises(PretuneError) as e:
        load_config(PrepareConfig, path)
    msg = str(e.value)
    assert "tokenizer.vocab_sise" in msg and str(path) in msg and "unknown key" in msg
    assert "\n" not in msg


def test_wrong_type_names_key():
    with pytest.raises(PretuneError, match="'train.batch_size'"):
        load_config(PretrainConfig, None, ["train.batch_size=lots"])


@pytest.mark.parametrize(
    "text, match",
    [("a: [1, 2\n", "invalid YAML"), ("- 1\n- 2\n", "must hold a mapping")],
)
def test_bad_yaml(tmp_path, text, match):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(PretuneError, match=match):
        load_config(PrepareConfig, path)


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(PretuneError, match="not found"):
        load_config(PrepareConfig, tmp_path / "nope.yaml")
    with pytest.raises(PretuneError, match="key.sub=value"):
        load_config(PrepareConfig, None, ["novalue"])


def test_configs_are_frozen():
    cfg = PrepareConfig()
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on frozen set
        cfg.name = "x"  # type: ignore[misc]


def test_config_hash_is_stable_and_sensitive():
    a = PrepareConfig()
    assert config_hash(a) == config_hash(PrepareConfig())
    assert config_hash(a) != config_hash(a.model_copy(update={"val_fraction": 0.1}))
    assert config_hash(a, exclude={"progress"}) == config_hash(
        a.model_copy(update={"progress": False}), exclude={"progress"}
    )


def test_partial_section_keeps_that_sections_custom_defaults(tmp_path):
    # PretrainConfig.train defaults to LoopConfig(max_steps=1000, ...): setting one key keeps it
    cfg = load_config(PretrainConfig, None, ["train.batch_size=8"])
    assert (cfg.train.batch_size, cfg.train.max_steps, cfg.train.save_every) == (8, 1000, 500)
    path = tmp_path / "f.yaml"
    path.write_text("optim:\n  lr: 0.001\n")
    ft = load_config(FinetuneConfig, path)
    assert ft.optim.lr == 0.001 and ft.optim.betas == (0.9, 0.999)  # FinetuneConfig's own betas
    # nested: the study's finetune section keeps FinetuneConfig's defaults too
    st = load_config(StudyConfig, None, ["finetune.optim.lr=0.002"])
    assert st.finetune.optim.betas == (0.9, 0.999) and st.finetune.train.epochs == 4
