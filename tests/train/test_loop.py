"""THE loop: learning, logging, budgets, grad accumulation, early stopping + best restore, NaN
and SIGINT handling, optimizers, L1, resume guards. Tiny BERT MLM on a tiny artifact."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM

from pretune.config import LoopConfig, ModelConfig, OptimConfig
from pretune.data.shards import PackedTokens
from pretune.errors import PretuneError
from pretune.models.registry import load_model
from pretune.train.loop import Evaluation, Hooks, fit
from pretune.train.objectives import BlockBatches, clm_loss, mlm_loss
from pretune.train.runtime import lr_lambda

# Tiny models (hidden 32, one layer): seconds per test on 2 CPU cores.
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64}
TINY_BERT = ModelConfig(name="bert-tiny", dropout=0.0, overrides=TINY)


QUIET = {"progress": False, "tensorboard": False, "log_every": 5}


def _val(setup):
    _, vb = setup(split="val", shuffle=False)
    val = vb.fixed(3)
    return lambda m: {"val_loss": sum(mlm_loss(m, b).item() for b in val) / len(val)}


def test_learns_logs_and_writes_hf_checkpoints(setup, tmp_path: Path):
    model, batches = setup()
    loop = LoopConfig(max_steps=40, eval_every=20, save_every=20, log_every=10, progress=True)
    res = fit(model, mlm_loss, batches, loop, OptimConfig(lr=3e-3, warmup_steps=4), tmp_path,
              evaluate=_val(setup))
    assert (res.steps, res.stopped_reason) == (40, "max_steps")
    assert res.tokens == 40 * 8 * 32
    train = [h for h in res.history if h["kind"] == "train"]
    evals = [h for h in res.history if h["kind"] == "eval"]
    assert train[-1]["loss"] < train[0]["loss"] - 0.5
    assert [e["step"] for e in evals] == [20, 40] and evals[-1]["val_loss"] < math.log(len(model.cls.predictions.bias))
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == len(res.history)
    assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-40"
    assert res.last_checkpoint == tmp_path / "checkpoints" / "step-40"
    again = AutoModelForMaskedLM.from_pretrained(res.last_checkpoint)
    torch.testing.assert_close(again.state_dict()["bert.embeddings.word_embeddings.weight"],
                               model.state_dict()["bert.embeddings.word_embeddings.weight"].cpu())


def test_grad_accumulation_matches_big_batch(wp_artifact, tok):
    # Unmasked blocks with labels = inputs: every half-batch has the same token count, so
    # two accumulated halves give exactly the big batch's mean gradient.
    tokens = PackedTokens(wp_artifact).tokens
    results = []
    for bs, accum in ((8, 1), (4, 2)):
        torch.manual_seed(0)
        model = load_model(TINY_BERT, "mlm", tok)
        batches = BlockBatches(tokens, "clm", 32, bs)
        loop = LoopConfig(max_steps=6, batch_size=bs, grad_accum=accum, **QUIET)
        fit(model, clm_loss, batches, loop, OptimConfig(lr=1e-3), None)
        results.append(model.state_dict())
    for k, v in results[0].items():
        torch.testing.assert_close(v, results[1][k], atol=1e-5, rtol=1e-4)


def test_budgets_tokens_epochs_minutes(setup):
    model, batches = setup()
    res = fit(model, mlm_loss, batches, LoopConfig(max_tokens=8 * 32 * 7, **QUIET), OptimConfig(), None)
    assert (res.steps, res.stopped_reason) == (7, "max_tokens")
    model, batches = setup(n_tokens=31 * 8 * 4)  # 4 batches per epoch
    seen = []
    res = fit(model, mlm_loss, batches, LoopConfig(epochs=1.5, **QUIET), OptimConfig(), None,
              hooks=Hooks(on_epoch_start=lambda e, m: seen.append(e)))
    assert len(batches) == 4 and res.steps == 6 and res.stopped_reason == "epochs"
    assert seen == [0, 1]
    model, batches = setup()
    res = fit(model, mlm_loss, batches, LoopConfig(max_minutes=1e-6, max_steps=50, **QUIET),
              OptimConfig(), None)
    assert res.steps == 1 and res.stopped_reason == "max_minutes"
    with pytest.raises(PretuneError, match="no training budget"):
        fit(model, mlm_loss, batches, LoopConfig(**QUIET), OptimConfig(), None)


def test_early_stopping_restores_best_weights(setup):
    model, batches = setup()
    scripted = iter([3.0, 1.0, 2.0, 2.5, 2.7, 2.9])
    snapshots = {}

    def evaluate(m):
        snapshots[len(snapshots)] = {k: v.detach().clone() for k, v in m.state_dict().items()}
        return {"acc": next(scripted)}

    loop = LoopConfig(max_steps=100, eval_every=2, early_stopping_patience=2, **QUIET)
    seen = []
    res = fit(model, mlm_loss, batches, loop, OptimConfig(lr=1e-3), None,
              evaluate=Evaluation(evaluate, metric="acc", mode="min", restore_best=True),
              hooks=Hooks(on_evaluate=lambda i, m: seen.append((i, m["acc"]))))
    assert seen == [(0, 3.0), (1, 1.0), (2, 2.0), (3, 2.5)]  # the hook sees every evaluation
    assert res.stopped_reason == "early_stopping"
    assert (res.best_metric, res.best_step, res.steps) == (1.0, 4, 8)
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[1][k])


def test_nan_loss_stops_with_last_good_checkpoint(setup, tmp_path: Path):
    model, batches = setup()
    calls = {"n": 0}

    def loss_fn(m, batch):
        calls["n"] += 1
        loss = mlm_loss(m, batch)
        return loss * float("nan") if calls["n"] > 12 else loss

    loop = LoopConfig(max_steps=30, save_every=10, **QUIET)
    with pytest.raises(PretuneError, match=r"NaN at step 13; last good checkpoint: .*step-10"):
        fit(model, loss_fn, batches, loop, OptimConfig(), tmp_path)
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-10"


def test_nan_is_caught_before_an_evaluation_between_log_lines(setup):
    """eval_every=3 with log_every=100: the NaN check must run before the evaluation reads a
    NaN model (scikit-learn metrics would raise 'Input contains NaN')."""
    model, batches = setup()
    evaluated = []

    def loss_fn(m, batch):
        return mlm_loss(m, batch) * float("nan")

    loop = LoopConfig(max_steps=30, eval_every=3, log_every=100, progress=False,
                      tensorboard=False)
    with pytest.raises(PretuneError, match=r"loss became NaN at step 1"):
        fit(model, loss_fn, batches, loop, OptimConfig(), None,
            evaluate=lambda m: evaluated.append(1) or {"val_loss": 1.0})
    assert evaluated == []


def test_sigint_saves_and_exits_cleanly(setup, tmp_path: Path):
    model, batches = setup()
    calls = {"n": 0}
    before = signal.getsignal(signal.SIGINT)

    def loss_fn(m, batch):
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGINT)
        return mlm_loss(m, batch)

    res = fit(model, loss_fn, batches, LoopConfig(max_steps=50, **QUIET), OptimConfig(), tmp_path)
    assert res.stopped_reason == "interrupted" and res.steps == 7
    assert (tmp_path / "checkpoints" / "step-7" / "trainer_state.pt").is_file()
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_other_optimizers_and_param_groups(setup, name):
    model, batches = setup()
    emb = list(model.bert.embeddings.parameters())
    emb_ids = {id(p) for p in emb}
    rest = [p for p in model.parameters() if id(p) not in emb_ids]
    groups = [{"params": emb, "lr": 1e-4}, {"params": rest, "lr": 1e-3}]
    lrs = []
    optim = OptimConfig(name=name, schedule="constant", warmup_steps=0)
    fit(model, mlm_loss, batches, LoopConfig(max_steps=3, **QUIET), optim, None,
        param_groups=groups, hooks=Hooks(extra_loss=lambda m: lrs.append(1) or torch.zeros(())))
    assert len(lrs) == 3  # extra_loss once per optimizer step


def test_l1_penalty_shrinks_weights(setup):
    norms = []
    for l1 in (0.0, 1e-2):
        model, batches = setup()
        fit(model, mlm_loss, batches, LoopConfig(max_steps=10, **QUIET),
            OptimConfig(l1=l1, lr=1e-2, weight_decay=0.0), None)
        norms.append(sum(p.abs().sum().item() for p in model.parameters() if p.ndim >= 2))
    assert norms[1] < 0.9 * norms[0]


def test_resume_requires_checkpoint_and_same_config(setup, tmp_path: Path):
    model, batches = setup()
    with pytest.raises(PretuneError, match="nothing to resume"):
        fit(model, mlm_loss, batches, LoopConfig(max_steps=2, **QUIET), OptimConfig(), tmp_path,
            resume=True)
    fit(model, mlm_loss, batches, LoopConfig(max_steps=2, **QUIET), OptimConfig(), tmp_path)
    model, batches = setup()
    with pytest.raises(PretuneError, match="different optim"):
        fit(model, mlm_loss, batches, LoopConfig(max_steps=4, **QUIET), OptimConfig(lr=1e-2),
            tmp_path, resume=True)


def test_schedules():
    cos = lr_lambda(OptimConfig(schedule="cosine", warmup_steps=10), 110)
    assert cos(0) == pytest.approx(1 / 11) and cos(9) == pytest.approx(10 / 11)
    assert cos(10) == pytest.approx(1.0) and cos(60) == pytest.approx(0.5) and cos(110) < 1e-9
    lin = lr_lambda(OptimConfig(schedule="linear", warmup_ratio=0.1), 100)
    assert lin(10) == pytest.approx(1.0) and lin(55) == pytest.approx(0.5)
    assert lr_lambda(OptimConfig(schedule="constant", warmup_steps=0), None)(1000) == 1.0


def test_bf16_autocast_on_cpu(setup):
    model, batches = setup()
    res = fit(model, mlm_loss, batches, LoopConfig(max_steps=2, precision="bf16", **QUIET),
              OptimConfig(), None)
    assert math.isfinite(res.history[-1]["loss"])
    assert next(model.parameters()).dtype == torch.float32  # weights stay fp32 (autocast only)
