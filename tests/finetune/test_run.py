"""``finetune`` end to end on tiny models: every strategy, task types, outputs, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pretune.config import AugmentConfig, ModelConfig, StrategyConfig, TaskConfig
from pretune.data.batches import encode
from pretune.data.labeled import load_task
from pretune.errors import PretuneError
from pretune.finetune.run import finetune
from pretune.tasks.text_classification import model_outputs


def write_csv(path, rows):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_full_finetune_writes_metrics_and_a_plain_hf_model(make_cfg):
    cfg = make_cfg(augment=AugmentConfig(token_mask_prob=0.1), class_weights=True,
                   optim=make_cfg().optim.model_copy(update={"l1": 1e-6}))
    res = finetune(cfg)
    assert res.steps == 12 and res.train_examples == 192  # 300 - 60 test - 48 val; 16/batch
    assert {"accuracy", "macro_f1", "roc_auc", "mcc"} <= set(res.metrics)
    saved = json.loads((res.out_dir / "metrics.json").read_text())
    assert saved["test"]["accuracy"] == res.metrics["accuracy"] and saved["val"]
    assert saved["config"]["strategy"]["name"] == "full" and saved["timing"]["steps"] == 12
    model_dir = res.out_dir / "model"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    assert model.config.id2label == {0: "fresh", 1: "rotten"}
    assert model.config.problem_type == "single_label_classification"
    assert "macro_f1" in (model_dir / "README.md").read_text()
    # The saved model reproduces the reported test metrics.
    tok = AutoTokenizer.from_pretrained(model_dir)
    task = load_task(cfg.task)
    probs = model_outputs(model, encode(tok, task.test.texts, None, 48), "single_label")
    assert float(np.mean(probs.argmax(1) == np.asarray(task.test.labels))) == pytest.approx(
        res.metrics["accuracy"])
    with pytest.raises(PretuneError, match="already exists; pass --overwrite"):
        finetune(cfg)
    assert finetune(cfg.model_copy(update={"save_model": False}), overwrite=True).steps == 12


@pytest.mark.parametrize("strategy", [
    StrategyConfig(name="linear-probe"), StrategyConfig(name="partial", top_k=1),
    StrategyConfig(name="gradual"), StrategyConfig(name="llrd", llrd_decay=0.8),
])
def test_loop_strategies_train_only_what_they_should(make_cfg, strategy):
    cfg = make_cfg(strategy=strategy, save_model=False,
                   train=make_cfg().train.model_copy(update={"epochs": 2}))
    res = finetune(cfg)
    total = 32 * 600 + 512 * 32 + 2 * 32  # rough size of the embeddings: only a lower bound
    if strategy.name in ("linear-probe", "partial"):
        assert 0 < res.trainable_params < total
    else:
        assert res.trainable_params > total
    assert res.steps == 24 and 0.0 <= res.metrics["accuracy"] <= 1.0


def test_lora_run_saves_a_merged_model(make_cfg):
    res = finetune(make_cfg(strategy=StrategyConfig(name="lora", lora_r=4)))
    model = AutoModelForSequenceClassification.from_pretrained(res.out_dir / "model")
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert res.trainable_params < sum(p.numel() for p in model.parameters())
    card = (res.out_dir / "model" / "README.md").read_text()
    assert "rank 4, alpha 16" in card and "merged into the weights" in card


def test_model_card_front_matter_and_tokenizer_length(make_cfg):
    import yaml

    cfg = make_cfg(model=ModelConfig(name="builtin:minilm"), tokenizer=None)
    cfg = cfg.model_copy(update={"task": cfg.task.model_copy(update={"max_length": 40}),
                                 "train": cfg.train.model_copy(update={"epochs": 0.2})})
    res = finetune(cfg)
    model_dir = res.out_dir / "model"
    card = (model_dir / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["rt.csv"]
    assert meta["pipeline_tag"] == "text-classification"
    assert "<this dir>" not in card and "example.invalid" not in card
    assert f'from_pretrained("{model_dir}")' in card
    assert AutoTokenizer.from_pretrained(model_dir).model_max_length == 40


def test_sklearn_probe_with_shared_feature_cache(make_cfg):
    cache: dict = {}
    cfg = make_cfg(strategy=StrategyConfig(name="linear-probe", sklearn=True))
    task = load_task(cfg.task)
    res = finetune(cfg, task=task, features_cache=cache)
    assert res.steps == 0 and res.trainable_params == 33 and "accuracy" in res.metrics
    (store,) = cache.values()
    n = len(store)
    assert n == len(task.train) + len(task.val) + len(task.test)
    small = cfg.model_copy(update={"task": cfg.task.model_copy(update={"budget": 20})})
    res2 = finetune(small, overwrite=True, task=task, features_cache=cache)
    assert res2.train_examples == 20 and len(store) == n  # budget applied, nothing recomputed


def test_sklearn_probe_leaves_a_model_predict_and_evaluate_use(make_cfg, rt_csv, tmp_path):
    import csv

    from transformers import AutoModel

    from pretune.finetune.predict import evaluate, predict

    cfg = make_cfg(strategy=StrategyConfig(name="linear-probe", sklearn=True))
    res = finetune(cfg.model_copy(update={"threshold": "off"}))
    model_dir = res.out_dir / "model"
    assert AutoModel.from_pretrained(model_dir).config.hidden_size == 32  # plain encoder
    assert (model_dir / "probe.safetensors").is_file()
    assert "mean pooling" in (model_dir / "README.md").read_text()
    metrics = evaluate(str(model_dir), str(rt_csv))  # the run's file: its test rows
    assert metrics["accuracy"] == pytest.approx(res.metrics["accuracy"])
    assert metrics["macro_f1"] == pytest.approx(res.metrics["macro_f1"])
    out = predict(str(model_dir), str(rt_csv), str(tmp_path / "p.csv"))
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 300 and {r["pred"] for r in rows} <= {"fresh", "rotten"}


def test_prompt_zero_shot_and_few_shot_on_a_tiny_mlm(make_cfg):
    zero = finetune(make_cfg(strategy=StrategyConfig(name="prompt"), name="zs"))
    assert zero.steps == 0 and zero.trainable_params == 0 and "accuracy" in zero.metrics
    few = finetune(make_cfg(strategy=StrategyConfig(name="prompt", few_shot=True), name="pet"))
    assert few.steps == 12 and few.trainable_params > 0
    assert (few.out_dir / "model" / "pretune_task.json").is_file()


def test_multi_label_and_regression_tasks(make_cfg, tmp_path, rt_rows):
    multi = [{"text": r["text"], "label": ["x|y", "y", "x", "z|x"][i % 4]}
             for i, r in enumerate(rt_rows[:160])]
    path = write_csv(tmp_path / "multi.csv", multi)
    res = finetune(make_cfg(name="m", task=TaskConfig(path=str(path), test_size=40, max_length=32),
                            class_weights=True))
    assert {"subset_accuracy", "hamming_loss", "micro_f1"} <= set(res.metrics)
    model = AutoModelForSequenceClassification.from_pretrained(res.out_dir / "model")
    assert model.config.problem_type == "multi_label_classification"
    reg = [{"text": r["text"], "score": len(r["text"]) / 100} for r in rt_rows[:160]]
    path = write_csv(tmp_path / "reg.csv", reg)
    res = finetune(make_cfg(name="r", task=TaskConfig(path=str(path), label_field="score",
                                                      test_size=40, max_length=32)))
    assert {"mse", "mae", "r2", "pearson"} <= set(res.metrics)
    saved = json.loads((res.out_dir / "metrics.json").read_text())
    assert saved["selection_metric"] == "r2" and saved["type"] == "regression"


def test_gpt_start_and_dropout_override(make_cfg, tiny_gpt, bpe_dir):
    cfg = make_cfg(model=tiny_gpt.model_copy(update={"dropout": 0.3}), tokenizer=str(bpe_dir))
    res = finetune(cfg)
    model = AutoModelForSequenceClassification.from_pretrained(res.out_dir / "model")
    assert model.config.resid_pdrop == pytest.approx(0.3) and model.config.pad_token_id is not None
    assert torch.isfinite(torch.tensor(res.metrics["accuracy"]))


def test_on_evaluate_sees_every_validation_and_can_stop_training(make_cfg):
    cfg = make_cfg(save_model=False).model_copy(update={"train": make_cfg().train.model_copy(
        update={"epochs": 2})})
    seen: list[tuple[int, float]] = []
    res = finetune(cfg, on_evaluate=lambda i, m: seen.append((i, m["macro_f1"])))
    assert [i for i, _ in seen] == [0, 1] and res.stopped_reason in ("epochs", "")
    assert all(0.0 <= f <= 1.0 for _, f in seen)

    class Prune(Exception):
        pass

    def prune(i: int, metrics: dict) -> None:
        raise Prune(i)

    with pytest.raises(Prune):  # a sweep's pruner raises from the hook; nothing swallows it
        finetune(cfg, overwrite=True, on_evaluate=prune)


def test_linear_probe_notes_a_pooler_the_checkpoint_never_trained(make_cfg, tiny_bert,
                                                                   wordpiece_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    from pretune.models.registry import load_model

    mlm_dir = tmp_path / "mlm"  # an MLM-only checkpoint: BertForMaskedLM has no pooler
    load_model(tiny_bert, "mlm", AutoTokenizer.from_pretrained(wordpiece_dir)).save_pretrained(
        mlm_dir)
    probe = make_cfg(model=tiny_bert.model_copy(update={"name": str(mlm_dir), "overrides": {}}),
                     strategy=StrategyConfig(name="linear-probe"), save_model=False)
    finetune(probe)
    assert "no trained pooler" in capsys.readouterr().err
    finetune(probe.model_copy(update={"strategy": StrategyConfig(name="full")}), overwrite=True)
    assert "no trained pooler" not in capsys.readouterr().err  # full training trains it


def test_final_table_without_progress_and_tensorboard_hparams(make_cfg, capsys, tb_events):
    cfg = make_cfg()  # progress=false
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={
        "report_to": ["tensorboard"]})})
    res = finetune(cfg)
    out = capsys.readouterr().out
    assert "| full | 192 train examples" in out and "accuracy" in out  # the metrics table
    events = tb_events(res.out_dir / "train" / "tensorboard")
    assert events["hparams"]["strategy.name"] == "full"
    assert events["hparams"]["train_examples"] == 192
    assert "test/accuracy" in events["hparam_metrics"]
    assert events["scalars"]["test/accuracy"][0][1] == pytest.approx(res.metrics["accuracy"])
    assert "train/grad_norm" in events["scalars"]
    assert not (res.out_dir / "train" / "checkpoints").exists()  # no save_every: none kept
