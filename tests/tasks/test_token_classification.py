"""The token-classification kind through the one fine-tuning path: sub-word alignment, training
that beats the all-O baseline, seqeval metrics in metrics.json, the saved model in plain
transformers and in `pipeline("token-classification")`, evaluate / predict round trips, LoRA,
and the tag-specific refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from pretune.config import FinetuneConfig, LoopConfig, OptimConfig, StrategyConfig, TagTaskConfig
from pretune.data.tags import TagSplit
from pretune.errors import PretuneError
from pretune.finetune.predict import evaluate, predict
from pretune.finetune.run import finetune
from pretune.tasks.token_classification import decode_entities, encode_tagged

CITIES = ["Paris", "London", "Berlin", "Rome", "Madrid", "Vienna", "Oslo", "Lisbon"]
NAMES = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi"]


def _sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Synthetic but learnable: '<name> Smith flew to <city> on Monday'."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        name, city = rng.choice(NAMES), rng.choice(CITIES)
        toks = [name, "Smith", "flew", "to", city, "on", "Monday", "."]
        tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "O", "O", "O"]
        if rng.random() < 0.5:
            toks, tags = toks[4:5] + ["is", "nice", "."], ["B-LOC", "O", "O", "O"]
        out.append((toks, tags))
    return out


@pytest.fixture()
def ner_cfg(tmp_path, wordpiece_dir, tiny_bert):
    path = tmp_path / "ner.conll"
    path.write_text("\n\n".join("\n".join(f"{t}\t{g}" for t, g in zip(*s, strict=True))
                                for s in _sentences(240, 0)) + "\n")
    return FinetuneConfig(
        name="ner", output_dir=str(tmp_path / "runs"), model=tiny_bert,
        tokenizer=str(wordpiece_dir),
        task=TagTaskConfig(path=str(path), test_size=40, val_fraction=0.1, max_length=32),
        optim=OptimConfig(lr=3e-3), train=LoopConfig(epochs=4, batch_size=16, progress=False,
                                                     tensorboard=False, log_every=5))


def test_first_subword_carries_the_tag(wordpiece_dir):
    tok = AutoTokenizer.from_pretrained(wordpiece_dir)
    split = TagSplit([["Blackburnshire", "rocks"]], [["B-LOC", "O"]])
    labels = ["O", "B-LOC", "I-LOC"]
    enc = encode_tagged(tok, split, labels, 32)
    words = tok(["Blackburnshire", "rocks"], is_split_into_words=True).word_ids()
    assert sum(w == 0 for w in words) > 1  # the word is split into several sub-words
    row = enc.labels[0]
    assert row[0] == -100 and row[-1] == -100  # [CLS], [SEP]
    scored = [(w, lab) for w, lab in zip(words, row, strict=True) if lab != -100]
    assert scored == [(0, 1), (1, 0)]  # one position per word: its first sub-word
    all_sub = encode_tagged(tok, split, labels, 32, label_all_subwords=True).labels[0]
    assert all_sub.count(2) == sum(w == 0 for w in words) - 1  # continuations are I-LOC
    short = encode_tagged(tok, TagSplit([["a"] * 50], [["O"] * 50]), labels, 8)
    assert short.truncated == 1 and short.first[0][-1] == -1


def test_finetune_beats_all_o_and_round_trips(ner_cfg, tmp_path):
    res = finetune(ner_cfg)
    assert res.metrics["f1"] > 0.5  # all-O scores 0 entity F1
    m = json.loads((res.out_dir / "metrics.json").read_text())
    assert m["kind"] == "token-classification" and m["selection_metric"] == "f1"
    assert set(m["test"]["per_class"]) == {"LOC", "PER"} and m["type"] == "token"
    model_dir = res.out_dir / "model"
    plain = AutoModelForTokenClassification.from_pretrained(model_dir)
    assert plain.config.id2label[0] == "O" and "B-PER" in plain.config.label2id
    # evaluate reproduces the run's test score on the same split
    again = evaluate(str(model_dir), ner_cfg.task.path)  # its own file: its test sentences
    assert again["f1"] == pytest.approx(res.metrics["f1"], abs=1e-9)
    assert (model_dir / "eval-ner.json").is_file()
    # predict: raw text lines -> entities with character offsets
    src = tmp_path / "in.txt"
    src.write_text("Carol Smith flew to Oslo on Monday .\nRome is nice .\n")
    out = predict(str(model_dir), str(src), str(tmp_path / "p.jsonl"))
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 2 and len(lines[0]["tags"]) == 8
    for line in lines:
        for e in line["entities"]:
            assert line["text"][e["start"]:e["end"]] == e["text"] and e["type"] in {"PER", "LOC"}
    assert any(e["text"] == "Oslo" and e["type"] == "LOC" for e in lines[0]["entities"])
    # plain transformers: the HF pipeline groups B-/I- into entities
    found = pipeline("token-classification", model=str(model_dir),
                     aggregation_strategy="simple")("Heidi Smith flew to Paris on Monday .")
    assert {g["entity_group"] for g in found} <= {"PER", "LOC"} and found


def test_lora_and_refusals(ner_cfg):
    lora = finetune(ner_cfg.model_copy(update={
        "name": "lora", "strategy": StrategyConfig(name="lora", lora_r=4)}))
    assert lora.trainable_params < 20_000 and (lora.out_dir / "model" / "config.json").is_file()
    with pytest.raises(ValueError, match="prompt does not apply to token-classification"):
        FinetuneConfig.model_validate({**ner_cfg.model_dump(), "strategy": {"name": "prompt"}})
    with pytest.raises(ValueError, match="token_delete_prob would shift tokens"):
        FinetuneConfig.model_validate({**ner_cfg.model_dump(),
                                       "augment": {"token_delete_prob": 0.1}})
    with pytest.raises(ValueError, match="scikit-learn probe.*not available for token-class"):
        FinetuneConfig.model_validate({**ner_cfg.model_dump(),
                                       "strategy": {"name": "linear-probe", "sklearn": True}})
    with pytest.raises(PretuneError, match="strategy.sklearn is not available"):
        finetune(ner_cfg.model_copy(update={
            "name": "sk", "strategy": StrategyConfig(name="linear-probe", sklearn=True)}))


def test_entities_from_tags():
    text = "Ann Lee met Bo"
    spans = [(0, 3), (4, 7), (8, 11), (12, 14)]
    ents = decode_entities(["B-PER", "I-PER", "O", "I-PER"], spans, text, [0.9, 0.7, 1.0, 0.5])
    assert [(e["text"], e["type"]) for e in ents] == [("Ann Lee", "PER"), ("Bo", "PER")]
    assert ents[0]["score"] == pytest.approx(0.8)


def test_split_json_and_split_from_for_tagged_sentences(ner_cfg, tmp_path):
    first = finetune(ner_cfg.model_copy(update={"train": ner_cfg.train.model_copy(
        update={"epochs": 1})}))
    rec = json.loads((first.out_dir / "split.json").read_text())
    assert len(rec["test_ids"]) == 40 and len(rec["train_ids"]) + len(rec["val_ids"]) == 200
    assert not set(rec["test_ids"]) & set(rec["train_ids"])
    # Another split seed, but split_from: the first run's sentences exactly
    other = ner_cfg.task.model_copy(update={"split_seed": 7, "split_from": str(first.out_dir)})
    second = finetune(ner_cfg.model_copy(update={
        "name": "ner2", "task": other,
        "train": ner_cfg.train.model_copy(update={"epochs": 1})}))
    rec2 = json.loads((second.out_dir / "split.json").read_text())
    assert {k: rec2[k] for k in ("train_ids", "val_ids", "test_ids")} == \
        {k: rec[k] for k in ("train_ids", "val_ids", "test_ids")}
    path = Path(ner_cfg.task.path)  # a changed sentence: refused, in one line
    path.write_text(path.read_text().replace("Smith", "Jones", 1))
    with pytest.raises(PretuneError, match="changed since that run"):
        finetune(ner_cfg.model_copy(update={"name": "ner3", "task": other}))
