"""Sweep config validation: keys, specs, grid rules, value ranges — and YAML loading."""

from __future__ import annotations

import pytest

from pretune.config import FinetuneConfig, ParamSpec, SweepConfig, load_config
from pretune.config.sweep import apply_params, check_key, grid_space, spec_values
from pretune.errors import PretuneError


def test_yaml_shorthand_int_alias_and_base_file(tmp_path):
    base = tmp_path / "ft.yaml"
    base.write_text("name: mine\noptim: {lr: 0.001}\n")
    path = tmp_path / "sweep.yaml"
    path.write_text(
        f"name: s\nbase: {base}\nsampler: grid\nn_trials: null\n"
        "space:\n  strategy.name: [full, lora]\n"
        "  strategy.lora_r: {low: 4, high: 12, int: true, step: 4}\n"
        "  optim.weight_decay: {low: 0.0, high: 0.2, step: 0.1}\n")
    cfg = load_config(SweepConfig, path)
    assert cfg.base.name == "mine" and cfg.base.optim.lr == 0.001
    assert cfg.space["strategy.name"].choices == ["full", "lora"]
    assert cfg.space["strategy.lora_r"].integer is True
    assert grid_space(cfg.space) == {"strategy.name": ["full", "lora"],
                                     "strategy.lora_r": [4, 8, 12],
                                     "optim.weight_decay": [0.0, 0.1, 0.2]}


@pytest.mark.parametrize(("space", "match"), [
    ({}, "'space' is empty"),
    ({"optim.lrr": [0.1]}, "not a FinetuneConfig setting: optim has no 'lrr' "
                           r"\(did you mean 'optim.lr'\?\)"),
    ({"optimizer.lr": [0.1]}, "FinetuneConfig has no 'optimizer'"),
    ({"optim": [0.1]}, "'optim' is a section"),
    ({"optim.lr.x": [0.1]}, "optim.lr is a setting, not a section"),
    ({"name": ["a"]}, "set by the sweep itself"),
    ({"model.overrides": [1]}, "is a mapping"),
    ({"optim.lr": {"low": 0.1}}, "both low and high"),
    ({"optim.lr": {"low": 0.1, "high": 0.01}}, "low=0.1 is larger than high=0.01"),
    ({"optim.lr": {"low": 0.0, "high": 0.1, "log": True}}, "log: true needs low > 0"),
    ({"optim.lr": {"choices": [0.1], "low": 0.0, "high": 1.0}}, "not both"),
    ({"optim.lr": {"choices": []}}, "choices is empty"),
    ({"optim.lr": {"low": -1.0, "high": 0.1}}, r"optim.lr=-1.0 is not a valid FinetuneConfig"),
    ({"strategy.name": ["full", "bogus"]}, "strategy.name='bogus' is not a valid"),
    ({"train.batch_size": {"low": 1.5, "high": 8, "int": True}}, "whole-number low"),
])
def test_bad_spaces_are_one_line_errors(space, match):
    with pytest.raises(PretuneError, match=match):
        SweepConfig(space=space)


def test_grid_and_budget_rules():
    with pytest.raises(PretuneError, match="grid sampler needs choices, int: true, or a step"):
        SweepConfig(sampler="grid", space={"optim.lr": {"low": 0.001, "high": 0.01}})
    with pytest.raises(PretuneError, match="drop log"):
        SweepConfig(sampler="grid", space={"optim.lr": {"low": 0.001, "high": 0.01,
                                                          "log": True}})
    with pytest.raises(PretuneError, match="needs n_trials or timeout_minutes"):
        SweepConfig(n_trials=None, space={"optim.lr": [0.1]})
    assert SweepConfig(n_trials=None, timeout_minutes=1, space={"optim.lr": [0.1]}).n_trials is None


def test_unknown_key_through_load_config_is_a_pretune_error(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("space: {strategy.lora_rank: [4, 8]}\n")
    with pytest.raises(PretuneError, match="'strategy.lora_rank'.*did you mean 'strategy.lora_r'"):
        load_config(SweepConfig, path)


def test_apply_params_sets_nested_and_dict_keys():
    base = FinetuneConfig()
    check_key("model.overrides.hidden_size")  # one level into a mapping is allowed
    cfg = apply_params(base, {"optim.lr": 0.002, "model.overrides.hidden_size": 64,
                              "strategy.name": "lora"})
    assert cfg.optim.lr == 0.002 and cfg.model.overrides == {"hidden_size": 64}
    assert cfg.strategy.name == "lora" and base.optim.lr != 0.002  # base untouched
    assert spec_values(ParamSpec(low=0.1, high=0.3, step=0.1)) == [0.1, 0.2, 0.3]


def test_command_line_overrides_flatten_to_dotted_keys():
    cfg = load_config(SweepConfig, None, [
        "space.optim.lr=[0.001,0.01]", "space.strategy.lora_r.low=4",
        "space.strategy.lora_r.high=8", "space.strategy.lora_r.int=true",
        "space.model.overrides.hidden_size=[32,64]"])
    assert set(cfg.space) == {"optim.lr", "strategy.lora_r", "model.overrides.hidden_size"}
    assert cfg.space["strategy.lora_r"].integer and cfg.space["optim.lr"].choices == [0.001, 0.01]
