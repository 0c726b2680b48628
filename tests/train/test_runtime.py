"""The loop's ground rules, one each: which parameters are not weight-decayed (the same set the
loop and the strategies used to compute by two different rules), the rank-aware device, and
the checkpointed counters round-tripping through a plain dict."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pretune.config import ModelConfig
from pretune.errors import PretuneError
from pretune.models.registry import load_model
from pretune.models.vision import build_image_model
from pretune.train.runtime import default_param_groups, no_decay_ids, resolve_device
from pretune.train.state import TrainState

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64}


def _by_name(model: nn.Module) -> set[int]:  # the loop's rule before
    return {id(p) for n, p in model.named_parameters()
            if p.ndim < 2 or "norm" in n.lower() or n.endswith(".bias")}


def _by_module(model: nn.Module) -> set[int]:  # the strategies' rule before
    ids = set()
    for module in model.modules():
        is_norm = isinstance(module, nn.LayerNorm | nn.GroupNorm | nn.BatchNorm1d | nn.BatchNorm2d)
        is_norm = is_norm or "norm" in type(module).__name__.lower()
        for pname, p in module.named_parameters(recurse=False):
            if is_norm or pname.endswith("bias") or p.ndim < 2:
                ids.add(id(p))
    return ids


def test_one_no_decay_rule_matches_both_old_ones(wordpiece_dir, bpe_dir):
    from transformers import AutoTokenizer

    models = [
        load_model(ModelConfig(name="bert-tiny", overrides=TINY), "mlm",
                   AutoTokenizer.from_pretrained(wordpiece_dir)),
        load_model(ModelConfig(name="gpt-tiny", overrides={"n_embd": 32, "n_layer": 1,
                                                            "n_head": 2}), "clm",
                   AutoTokenizer.from_pretrained(bpe_dir)),
        build_image_model("resnet-tiny", 3, 16, 1), build_image_model("vit-tiny", 3, 16, 1),
    ]
    for model in models:
        rule = no_decay_ids(model)
        assert rule == _by_name(model) == _by_module(model), type(model).__name__
        decay, no_decay = default_param_groups(model, 0.01)
        assert {id(p) for p in no_decay["params"]} == rule and no_decay["weight_decay"] == 0.0
        assert all(p.ndim >= 2 for p in decay["params"])


def test_device_is_rank_aware(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(PretuneError, match="no CUDA GPU"):
            resolve_device("cuda:0")
    else:  # pragma: no cover - GPU machines
        monkeypatch.setenv("LOCAL_RANK", "0")
        assert resolve_device("auto") == torch.device("cuda:0")


def test_train_state_round_trips_and_reads_older_checkpoints():
    st = TrainState(step=7, tokens=90, best_metric=0.5, best_step=5,
                    ckpt_metrics={5: 0.5}, history=[{"kind": "train", "step": 5}])
    again = TrainState.from_dict(st.to_dict())
    assert again == st
    # a checkpoint written before `last_metric` was a field, with JSON-style string keys
    old = {k: v for k, v in st.to_dict().items() if k != "last_metric"}
    old["ckpt_metrics"] = {"5": 0.5}
    assert TrainState.from_dict(old).ckpt_metrics == {5: 0.5}
