"""Token-tagging data: CoNLL / jsonl tokens+tags / jsonl text+spans, BIO checks and repair, the
builtins, splits and budgets, and one-line errors for bad files and encodings."""

from __future__ import annotations

import json

import pytest

from pretune.config import TagTaskConfig
from pretune.data.tags import load_tag_task, read_tags, text_tokens
from pretune.errors import PretuneError

CONLL = """-DOCSTART- O

EU\tB-ORG
rejects\tO
German\tB-MISC
call\tO

Peter B-PER
Blackburn I-PER

I-LOC O
x\tI-LOC
"""


def test_conll_columns_blank_lines_and_bio_repair(tmp_path):
    p = tmp_path / "a.conll"
    p.write_text(CONLL)
    with pytest.warns(UserWarning, match="repaired 1 I- tags"):
        split = read_tags(str(p), TagTaskConfig(path=str(p)))
        assert split.tokens == [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"],
                                ["I-LOC", "x"]]
        assert split.tags[2] == ["O", "B-LOC"]  # an I- after O starts the entity
        load_tag_task(TagTaskConfig(path=str(p), val_fraction=0, test_size=1))
    with pytest.raises(PretuneError, match=r"a.conll line 11: I-LOC follows O.*invalid_bio"):
        read_tags(str(p), TagTaskConfig(path=str(p), invalid_bio="error"))


def test_jsonl_tokens_and_spans(tmp_path):
    p = tmp_path / "t.jsonl"
    rows = [{"tokens": ["Paris", "is", "big"], "tags": ["B-LOC", "O", "O"]},
            {"text": "Bob met Ann Lee.", "spans": [[8, 15, "PER"], {"start": 0, "end": 3,
                                                                    "label": "PER"}]},
            {"text": "我在北京工作", "spans": [[2, 4, "LOC"]]}]
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    split = read_tags(str(p), TagTaskConfig(path=str(p)))
    assert split.tags[1] == ["B-PER", "O", "B-PER", "I-PER", "O"]
    assert split.tokens[2] == list("我在北京工作")  # Chinese: one token per character
    assert split.tags[2] == ["O", "O", "B-LOC", "I-LOC", "O", "O"]


def test_bad_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.conll"
    bad.write_text("EU B-ORG\nlonely\n")
    with pytest.raises(PretuneError, match="bad.conll line 2: expected a token and its tag"):
        read_tags(str(bad), TagTaskConfig(path=str(bad)))
    odd = tmp_path / "odd.conll"
    odd.write_text("EU PERSON\n")
    with pytest.raises(PretuneError, match="tag 'PERSON' is not BIO"):
        read_tags(str(odd), TagTaskConfig(path=str(odd)))
    mism = tmp_path / "m.jsonl"
    mism.write_text(json.dumps({"tokens": ["a", "b"], "tags": ["O"]}) + "\n")
    with pytest.raises(PretuneError, match="m.jsonl line 1: 2 tokens but 1 tags"):
        read_tags(str(mism), TagTaskConfig(path=str(mism)))
    gbk = tmp_path / "gbk.conll"
    gbk.write_bytes("北京\tB-LOC\n人民\tO\n".encode("gb18030"))
    with pytest.raises(PretuneError, match="not utf-8 text.*set task.encoding=gb18030"):
        read_tags(str(gbk), TagTaskConfig(path=str(gbk)))
    assert read_tags(str(gbk), TagTaskConfig(path=str(gbk), encoding="gb18030")).tokens == \
        [["北京", "人民"]]
    train = tmp_path / "train.conll"
    train.write_text("Paris B-LOC\n\nRome B-LOC\n")
    test = tmp_path / "test.conll"
    test.write_text("Bob B-PER\n")
    with pytest.raises(PretuneError, match="entity types never seen in training.*PER"):
        load_tag_task(TagTaskConfig(path=str(train), test=str(test)))
    with pytest.raises(PretuneError, match="not found"):
        read_tags(str(tmp_path / "nope.conll"), TagTaskConfig())


def test_builtins_splits_and_budget():
    cfg = TagTaskConfig(path="builtin:wnut16", test_size=300, val_fraction=0.1, budget=50)
    task = load_tag_task(cfg, seed=1)
    assert len(task.train) == 50 and len(task.test) == 300 and not task.char_level
    assert "B-person" in task.labels and task.labels[0] == "O"
    # the budget holds every entity type at least once
    seen = {t[2:] for seq in task.train.tags for t in seq if t != "O"}
    assert seen == set(task.entity_types)
    again = load_tag_task(cfg, seed=1)
    assert again.train.tokens == task.train.tokens and again.test.tokens == task.test.tokens
    assert load_tag_task(cfg, seed=2).test.tokens == task.test.tokens  # test fixed by split_seed
    zh = load_tag_task(TagTaskConfig(path="builtin:peoples-daily-ner", test_size=200,
                                     val_fraction=0.01, budget=20))
    assert zh.char_level and set(zh.entity_types) == {"LOC", "ORG", "PER"}
    assert 0.8 < zh.majority_baseline < 1.0  # most characters are O
    with pytest.raises(PretuneError, match="not a token-tagging task"):
        read_tags("builtin:rotten-tomatoes", TagTaskConfig())


def test_text_tokens_for_predict():
    assert text_tokens("Hi, Bob!", False) == (["Hi", ",", "Bob", "!"],
                                              [(0, 2), (2, 3), (4, 7), (7, 8)])
    assert text_tokens("北京 欢迎", True)[0] == ["北", "京", "欢", "迎"]
