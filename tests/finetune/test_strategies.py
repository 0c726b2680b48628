"""Each strategy trains exactly what it should: requires_grad counts, LLRD learning rates,
gradual unfreezing, LoRA head surviving merge/save/reload, the scikit-learn probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pretune.config import ModelConfig, OptimConfig, StrategyConfig
from pretune.data.batches import encode
from pretune.finetune.probe import fit_sklearn_probe, probe_outputs
from pretune.finetune.strategies import apply_strategy, count_trainable, export_model, layer_groups
from pretune.models.registry import load_model
from pretune.tasks.text_classification import extract_features

TINY_BERT = ModelConfig(name="bert-tiny", overrides={
    "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 64})
TINY_GPT = ModelConfig(name="gpt-tiny", overrides={
    "n_embd": 32, "n_layer": 1, "n_head": 2, "n_inner": 64})
OPTIM = OptimConfig(lr=1e-3, weight_decay=0.01)


def _model(tokenizer_dir, spec=TINY_BERT, num_labels=2):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = load_model(spec, "classify", tok, num_labels=num_labels,
                       id2label={i: f"l{i}" for i in range(num_labels)})
    return model, tok


def _numel(params) -> int:
    return sum(p.numel() for p in params)


def _group_params(plan) -> int:
    return sum(p.numel() for g in plan.param_groups for p in g["params"])


def test_full_trains_everything(wordpiece_dir):
    model, _ = _model(wordpiece_dir)
    plan = apply_strategy(model, StrategyConfig(name="full"), OPTIM)
    total = sum(p.numel() for p in model.parameters())
    assert plan.trainable_params == total == count_trainable(model) == _group_params(plan)
    no_decay = [g for g in plan.param_groups if g["weight_decay"] == 0.0]
    assert no_decay and all(p.ndim == 1 for g in no_decay for p in g["params"])


def test_linear_probe_and_partial_train_only_the_top(wordpiece_dir):
    model, _ = _model(wordpiece_dir, TINY_BERT.model_copy(update={"overrides": {
        **TINY_BERT.overrides, "num_hidden_layers": 3}}))
    groups = layer_groups(model)  # embeddings, 3 layers, top (pooler + classifier)
    assert len(groups) == 5
    plan = apply_strategy(model, StrategyConfig(name="linear-probe"), OPTIM)
    assert count_trainable(model) == _numel(groups[-1]) == plan.trainable_params
    assert model.classifier.weight.requires_grad
    assert not model.bert.embeddings.word_embeddings.weight.requires_grad
    plan = apply_strategy(model, StrategyConfig(name="partial", top_k=2), OPTIM)
    assert count_trainable(model) == _numel(groups[-1]) + _numel(groups[-2]) + _numel(groups[-3])
    assert not any(p.requires_grad for p in groups[1]) and not any(p.requires_grad for p in groups[0])
    assert _group_params(plan) == plan.trainable_params == count_trainable(model)


def test_llrd_learning_rates_decay_with_depth(wordpiece_dir):
    model, _ = _model(wordpiece_dir, TINY_BERT.model_copy(update={"overrides": {
        **TINY_BERT.overrides, "num_hidden_layers": 2}}))
    plan = apply_strategy(model, StrategyConfig(name="llrd", llrd_decay=0.5), OPTIM)
    lrs = {g["name"].split("/")[0]: g["lr"] for g in plan.param_groups}
    assert lrs == pytest.approx({"head": 1e-3, "depth1": 5e-4, "depth2": 2.5e-4, "depth3": 1.25e-4})
    word = model.bert.embeddings.word_embeddings.weight
    emb_group = next(g for g in plan.param_groups if any(p is word for p in g["params"]))
    assert emb_group["lr"] == pytest.approx(1.25e-4)  # embeddings: the deepest group
    assert _group_params(plan) == sum(p.numel() for p in model.parameters())


def test_gradual_unfreezes_one_group_per_epoch_from_the_top(wordpiece_dir):
    model, _ = _model(wordpiece_dir)
    groups = layer_groups(model)  # embeddings, layer 0, top
    plan = apply_strategy(model, StrategyConfig(name="gradual"), OPTIM)
    assert count_trainable(model) == _numel(groups[-1])
    plan.on_epoch_start(1, model)
    assert count_trainable(model) == _numel(groups[-1]) + _numel(groups[1])
    plan.on_epoch_start(2, model)
    assert count_trainable(model) == sum(p.numel() for p in model.parameters())
    assert _group_params(plan) == plan.trainable_params  # all in the optimizer from the start


@pytest.mark.parametrize("spec,tok_fixture", [(TINY_BERT, "wordpiece_dir"), (TINY_GPT, "bpe_dir")])
def test_lora_head_survives_merge_save_reload(spec, tok_fixture, request, tmp_path):
    model, tok = _model(request.getfixturevalue(tok_fixture), spec, num_labels=3)
    base_params = sum(p.numel() for p in model.parameters())
    plan = apply_strategy(model, StrategyConfig(name="lora", lora_r=4), OPTIM)
    assert 0 < plan.trainable_params < base_params * 0.5
    assert plan.trainable_params == count_trainable(plan.model)
    # A few plain optimizer steps so the LoRA B matrices and the head move away from init.
    opt = torch.optim.AdamW(plan.param_groups, lr=1e-2)
    batch = tok(["a great film", "a terrible film", "it was fine"], return_tensors="pt",
                padding=True)
    plan.model.train()
    for _ in range(5):
        loss = plan.model(**batch, labels=torch.tensor([0, 1, 2])).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    plan.model.eval()
    with torch.no_grad():
        before = plan.model(**batch).logits
    merged = export_model(plan.model)
    assert not hasattr(merged, "peft_config")
    merged.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        after = reloaded(**batch).logits
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-4)


def test_sklearn_probe_uses_frozen_features(wordpiece_dir, rt_rows):
    model, tok = _model(wordpiece_dir)
    plan = apply_strategy(model, StrategyConfig(name="linear-probe", sklearn=True), OPTIM)
    assert plan.sklearn and plan.param_groups == []
    texts = [r["text"] for r in rt_rows[:80]]
    y = [int(r["label"] == "rotten") for r in rt_rows[:80]]
    x = extract_features(model, encode(tok, texts, None, 48))
    assert x.shape == (80, 32) and np.isfinite(x).all()
    est = fit_sklearn_probe(x[:60], y[:60], x[60:], y[60:], "single_label", ["fresh", "rotten"])
    probs = probe_outputs(est, x[60:], "single_label", 2)
    assert probs.shape == (20, 2) and np.allclose(probs.sum(1), 1)
    reg = fit_sklearn_probe(x[:60], np.linspace(0, 1, 60), x[60:], np.linspace(0, 1, 20),
                            "regression", [])
    assert probe_outputs(reg, x[60:], "regression", 0).shape == (20,)
