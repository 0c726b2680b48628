"""Prompt learning: template filling, scorers per model kind, calibration, zero-shot quality."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from pretune.config import ModelConfig, StrategyConfig, TaskConfig
from pretune.data.builtin import builtin_path
from pretune.data.labeled import LabeledTask, Split, load_task
from pretune.errors import PretuneError
from pretune.finetune.prompt import (
    PromptScorer,
    check_prompt_task,
    descriptions,
    encode_prompts,
    pet_loss_fn,
    prompt_mode,
    verbalizer,
)
from pretune.models.registry import load_model
from pretune.models.start import resolve_start


def _task(name: str, labels: list[str], texts: list[str], y: list[int]) -> LabeledTask:
    split = Split(texts, y)
    return LabeledTask(name, "single_label", labels, split, split, split, 0.5)


def test_template_truncates_the_text_not_the_template(wordpiece_dir):
    tok = AutoTokenizer.from_pretrained(wordpiece_dir)
    long_text = "a great film " * 50
    inp = encode_prompts(tok, [long_text, "short"], "{text} It was [MASK].", "cloze", 24)
    seq = inp.enc.input_ids[0]
    assert len(seq) == 24 and seq[0] == tok.cls_token_id and seq[-1] == tok.sep_token_id
    assert seq[inp.positions[0]] == tok.mask_token_id
    assert tok.decode(seq[-5:]) == "it was [MASK]. [SEP]"  # the template survived intact
    assert inp.enc.input_ids[1][inp.positions[1]] == tok.mask_token_id
    clm = encode_prompts(tok, ["short text"], "{text} It was [MASK].", "clm", 24)
    assert tok.decode(clm.enc.input_ids[0][clm.positions[0]]) == "was"  # label word goes next
    with pytest.raises(PretuneError, match="must contain"):
        encode_prompts(tok, ["x"], "no slot", "cloze", 24)


def test_mode_detection_and_defaults(wordpiece_dir, tiny_bert, tiny_gpt):
    minilm = builtin_path("minilm")
    assert resolve_start(str(minilm)).has_mlm_head is False  # plain BertModel: random MLM head
    tok = AutoTokenizer.from_pretrained(minilm)
    assert prompt_mode(resolve_start("builtin:minilm"), tok) == "similarity"
    assert prompt_mode(resolve_start(tiny_bert.name), tok) == "cloze"
    assert prompt_mode(resolve_start(tiny_gpt.name), tok) == "clm"
    rt = _task("rotten-tomatoes", ["fresh", "rotten"], ["x"], [0])
    assert verbalizer(rt, StrategyConfig(name="prompt")) == {"fresh": ["great"], "rotten": ["terrible"]}
    topics = _task("topics", ["Arts", "Physical sciences"], ["x"], [0])
    assert verbalizer(topics, StrategyConfig(name="prompt")) == {"Arts": ["arts"],
                                                                 "Physical sciences": ["physical"]}
    assert descriptions(topics, StrategyConfig(name="prompt"))["Arts"] == "This is about arts."
    with pytest.raises(PretuneError, match="no word for label 'rotten'"):
        verbalizer(rt, StrategyConfig(name="prompt", verbalizer={"fresh": "good"}))


@pytest.mark.parametrize("spec_fixture,tok_fixture,mode,kind", [
    ("tiny_bert", "wordpiece_dir", "cloze", "mlm"), ("tiny_gpt", "bpe_dir", "clm", "clm")])
def test_lm_scorers_and_calibration(spec_fixture, tok_fixture, mode, kind, request, rt_rows):
    tok = AutoTokenizer.from_pretrained(request.getfixturevalue(tok_fixture))
    torch.manual_seed(0)
    model = load_model(request.getfixturevalue(spec_fixture), kind, tok)
    rows = rt_rows[:40]
    task = _task("rotten-tomatoes", ["fresh", "rotten"], [r["text"] for r in rows],
                 [int(r["label"] == "rotten") for r in rows])
    scorer = PromptScorer(model, tok, mode, task, StrategyConfig(name="prompt"), 48)
    raw = scorer.probs(task.test)
    assert raw.shape == (40, 2) and np.allclose(raw.sum(1), 1)
    scorer.calibrate("content-free")
    assert scorer.prior.shape == (2,)
    cal = scorer.probs(task.test)
    assert np.allclose(cal.sum(1), 1) and not np.allclose(cal, raw)
    scorer.calibrate("train")  # mean over training texts: calibrated mean is near uniform
    assert np.allclose(scorer.probs(task.train).mean(0), 0.5, atol=0.1)
    if mode == "cloze":  # PET loss: differentiable, over the verbalizer logits at the mask
        inp = encode_prompts(tok, task.train.texts[:4], "{text} It was [MASK].", mode, 48)
        from pretune.data.batches import collate

        batch = {**collate(inp.enc, range(4)), "labels": torch.tensor([0, 1, 0, 1])}
        loss = pet_loss_fn(scorer.ids, tok.mask_token_id)(model, batch)
        loss.backward()
        assert torch.isfinite(loss) and model.get_input_embeddings().weight.grad is not None


def test_zero_shot_minilm_beats_majority_on_rotten_tomatoes(rt_csv):
    """Label-description similarity with the builtin MiniLM (no MLM head), 100 test rows."""
    task = load_task(TaskConfig(path=str(rt_csv), test_size=100, val_fraction=0.0))
    task.name = "rotten-tomatoes"  # the builtin's default descriptions
    spec = ModelConfig(name="builtin:minilm")
    tok = AutoTokenizer.from_pretrained(builtin_path("minilm"))
    model = load_model(spec, "base", tok)
    scorer = PromptScorer(model, tok, "similarity", task, StrategyConfig(name="prompt"), 64)
    scorer.calibrate("content-free")
    acc = float(np.mean(scorer.probs(task.test).argmax(1) == np.asarray(task.test.labels)))
    assert acc > task.majority_baseline + 0.05, (acc, task.majority_baseline)


def test_prompt_rejects_what_it_cannot_do():
    multi = LabeledTask("m", "multi_label", ["a", "b"], Split([], []), Split([], []),
                        Split([], []), 0.0)
    with pytest.raises(PretuneError, match="single-label"):
        check_prompt_task(multi, StrategyConfig(name="prompt"), "cloze", "x")
    single = _task("t", ["a", "b"], ["x"], [0])
    with pytest.raises(PretuneError, match="few_shot needs a masked LM.*no trained MLM head"):
        check_prompt_task(single, StrategyConfig(name="prompt", few_shot=True), "similarity",
                          "builtin:minilm")


@pytest.mark.parametrize("start, strategy", [
    ("tiny-bert", {"name": "prompt", "calibrate": True}),  # cloze, calibrated prior
    ("tiny-bert", {"name": "prompt", "few_shot": True}),  # PET-trained MLM
    ("tiny-gpt", {"name": "prompt", "calibrate": True}),  # label-word likelihood
    ("builtin:minilm", {"name": "prompt", "calibrate": True}),  # label-description similarity
])
def test_every_prompt_run_saves_a_model_predict_and_evaluate_use(
        start, strategy, make_cfg, tiny_bert, tiny_gpt, bpe_dir, tmp_path):
    """A prompt run's model dir: the LM (loads with plain transformers) + the prompt; evaluate
    on the run's source scores its test rows with the run's own probabilities."""
    import csv
    import json

    import transformers

    from pretune.finetune.predict import evaluate, predict
    from pretune.finetune.run import finetune

    updates: dict = {"strategy": StrategyConfig(**strategy)}
    if start == "tiny-gpt":
        updates.update(model=tiny_gpt, tokenizer=str(bpe_dir))
    elif start == "builtin:minilm":
        updates.update(model=ModelConfig(name="builtin:minilm"), tokenizer=None)
    cfg = make_cfg(**updates)
    res = finetune(cfg)
    model_dir = res.out_dir / "model"
    info = json.loads((model_dir / "pretune_task.json").read_text())
    auto = {"cloze": "AutoModelForMaskedLM", "clm": "AutoModelForCausalLM",
            "similarity": "AutoModel"}[info["prompt"]["mode"]]
    getattr(transformers, auto).from_pretrained(model_dir)  # plain transformers
    again = evaluate(str(model_dir), cfg.task.path)
    assert again["accuracy"] == pytest.approx(res.metrics["accuracy"], abs=1e-9)
    assert again["macro_f1"] == pytest.approx(res.metrics["macro_f1"], abs=1e-6)
    runs = [json.loads(x) for x in (res.out_dir / "predictions.jsonl").read_text().splitlines()]
    out = predict(str(model_dir), cfg.task.path, str(tmp_path / "p.csv"))
    rows = {i: r for i, r in enumerate(csv.DictReader(out.open()))}
    for r in runs[:20]:  # the run's own probabilities for its test rows (its `pred` column
        row = rows[r["id"]]  # may differ: predict applies the tuned binary threshold)
        assert float(row[f"prob_{r['pred']}"]) == pytest.approx(r["p"], abs=1e-4)
