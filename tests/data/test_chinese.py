"""Chinese text end to end in the data layer: the People's Daily builtins (person-name merging,
sentences, NFKC), the deduplicated sentiment builtin, CJK-aware cleaning and near-dedup, the
dictionary segmenter, word-start flags in the shards, whole-word masking over them, and a
task's test sentences held out of the corpus."""

from __future__ import annotations

import json

import numpy as np

from pretune.config import CleanConfig, PrepareConfig, SourceConfig, TokenizerConfig
from pretune.data import peoples_daily
from pretune.data.builtin import builtin_path, same_source
from pretune.data.builtin_tasks import chn_sentiment
from pretune.data.clean import CleanStats, clean_documents, word_units
from pretune.data.pipeline import prepare
from pretune.data.segment import forward_max_match, make_segmenter, word_start_offsets
from pretune.data.shards import PackedTokens
from pretune.train.objectives import MaskingSpec, mask_tokens


def test_person_names_merge_surname_and_given_name_only():
    words = tuple(peoples_daily.parse_line("江/nr  泽民/nr  李/nr  鹏/nr  乔/nr  石/nr  在/p  "
                                           "北京/ns  会见/v  克林顿/nr  和/c  欧阳/nr  修/nr"))
    ents = [(w, k) for w, k in peoples_daily._entities(words) if k]
    assert ents == [("江泽民", "PER"), ("李鹏", "PER"), ("乔石", "PER"), ("北京", "LOC"),
                    ("克林顿", "PER"), ("欧阳修", "PER")]


def test_ner_builtin_sentences_and_corpus():
    sents = peoples_daily.ner_sentences()
    assert len(sents) > 40_000
    chars, tags = sents[0]
    assert len(chars) == len(tags) and all(len(c) == 1 for c in chars)
    texts = ["".join(c) for c, _ in sents]
    assert len(set(texts)) == len(texts)  # repeats dropped: none can straddle train/test
    assert not any("１" in t for t in texts[:2000])  # full-width digits normalised (NFKC)
    doc = next(peoples_daily.corpus_docs())
    assert doc.startswith("迈向充满希望的新世纪") and " " not in doc
    assert same_source("builtin:peoples-daily", "builtin:peoples-daily-ner")
    assert not same_source("builtin:peoples-daily", "builtin:chn-sentiment")


def test_sentiment_builtin_dedups_and_drops_conflicts():
    rows, counts = chn_sentiment(builtin_path("chn-sentiment"))
    assert counts["neg_lines"] > counts["neg_unique"] > 8_000
    assert counts["in_both_dropped"] > 0 and counts["rows"] == len(rows)
    assert len({r["text"] for r in rows}) == len(rows)


def test_cjk_units_and_near_dedup():
    assert word_units("我们去北京 ok") == ["我", "们", "去", "北", "京", "ok"]
    base = ("今天的天气非常好，我们一起去公园散步，看到了很多美丽的花和高大的树木，心情愉快。"
            "下午我们去图书馆看书，借了三本关于历史和地理的书，晚上回家做饭，吃完饭后看电视。"
            "第二天早上六点起床跑步，然后坐地铁去公司上班，开了两个会，写完了一份很长的报告。")
    docs = [base, base.replace("三本", "四本"), "完全不同的一段文字，讲述一个关于学习和工作的故事。"]
    stats = CleanStats()
    kept = list(clean_documents(docs, CleanConfig(min_chars=5), stats))
    assert len(kept) == 2 and stats.removed["near_dup"] == 1  # one-character edit: near-dup


def test_dictionary_segmenter_and_word_starts():
    seg = forward_max_match(frozenset({"北京", "天安门", "广场"}))
    assert seg("北京天安门广场很大") == ["北京", "天安门", "广场", "很", "大"]
    starts = word_start_offsets("在北京ok好", seg)
    assert starts == {0, 1, 3, 5}  # 在 | 北京 | ok | 好
    pd_seg = make_segmenter("dictionary")
    assert pd_seg("中共中央总书记") == ["中共中央", "总书记"]


def test_prepare_records_word_starts_and_holds_out_test_sentences(tmp_path):
    corpus = tmp_path / "zh.txt"
    paras = ["北京是中国的首都。上海是一个大城市。", "我们在北京天安门广场看升旗。",
             "人民日报发表了新年社论。全国人民欢度新年。"] * 4
    corpus.write_text("\n".join(f"{p}第{i}段。" for i, p in enumerate(paras)))
    holdout = tmp_path / "holdout.jsonl"
    holdout.write_text(json.dumps("我们在北京天安门广场看升旗。", ensure_ascii=False) + "\n")
    cfg = PrepareConfig(
        name="zh", output_dir=str(tmp_path / "data"), progress=False, val_fraction=0.0,
        sources=[SourceConfig(path=str(corpus), txt_mode="line")],
        clean=CleanConfig(min_chars=5, near_dedup=False),
        tokenizer=TokenizerConfig(vocab_size=200, min_frequency=1),
        word_boundaries="dictionary", holdout=str(holdout))
    art = prepare(cfg)
    meta = json.loads((art / "meta.json").read_text())
    assert meta["stats"]["clean"]["removed"]["held_out"] == 4  # the 4 docs with that sentence
    assert meta["word_starts"] and 0.9 < meta["stats"]["tokens_per_char"] < 1.1
    packed = PackedTokens(art, "train")
    assert packed.word_starts is not None and len(packed.word_starts) == len(packed.tokens)
    assert 0.3 < packed.word_starts.mean() < 0.95  # multi-character words: not every char
    # whole-word masking over those flags masks words, never half of one
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(art / "tokenizer")
    spec = MaskingSpec.from_tokenizer(tok, probability=0.3, whole_word=True)
    ids = np.asarray(packed.tokens[:64], np.int64)[None]
    ws = np.asarray(packed.word_starts[:64])[None]
    _, labels, _ = mask_tokens(ids, spec, np.random.default_rng(0), ws)
    chosen = labels[0] != -100
    word = np.cumsum(ws[0]) - 1
    for w in np.unique(word[chosen]):
        members = word == w
        special = np.isin(ids[0], spec.special_ids)
        assert chosen[members & ~special].all()
