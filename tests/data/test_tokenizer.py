"""Tokenizer training for each kind, HF-loadability, loading existing tokenizers."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from pretune.config import TokenizerConfig
from pretune.data.tokenizer import (
    BERT_SPECIALS,
    boundary_token_id,
    load_tokenizer,
    raw_encoder,
    special_token_ids,
    tokenizer_kind,
    train_tokenizer,
)
from pretune.errors import PretuneError

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Pre-training helps when labels are scarce, doesn't it?",
    "Tokenizers split words into sub-word pieces: un-believ-able!",
    "Numbers like 3.14 and 2025 appear too.\nNew lines as well.",
] * 25


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_train_save_and_load_with_plain_transformers(tmp_path, kind):
    cfg = TokenizerConfig(kind=kind, vocab_size=300, min_frequency=1, model_max_length=256)
    tok = train_tokenizer(iter(TEXTS), cfg, tmp_path / "tok")
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))  # no pretune code involved
    assert hf.model_max_length == 256
    assert tokenizer_kind(hf) == kind
    assert len(hf) == len(tok) <= 300
    assert hf(TEXTS[0])["input_ids"] == tok(TEXTS[0])["input_ids"]
    ids = special_token_ids(hf)
    if kind == "bpe":
        assert ids == {"bos": 0, "eos": 0, "unk": 0, "pad": 1}
        assert boundary_token_id(hf) == 0
        # No post-processor: nothing is added around the text.
        assert hf(TEXTS[0])["input_ids"] == hf(TEXTS[0], add_special_tokens=False)["input_ids"]
    else:
        assert ids == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
        assert boundary_token_id(hf) == 3
        single = hf.convert_ids_to_tokens(hf("a b")["input_ids"])
        assert single[0] == "[CLS]" and single[-1] == "[SEP]"
        pair = hf("first", "second")
        assert pair["input_ids"].count(3) == 2 and set(pair["token_type_ids"]) == {0, 1}


def test_bpe_round_trip_is_exact(tmp_path):
    tok = train_tokenizer(TEXTS, TokenizerConfig(kind="bpe", vocab_size=300, min_frequency=1), tmp_path)
    for text in TEXTS[:4] + ["Unseen Ünïcödé — text\twith tabs  and  spaces"]:
        ids = raw_encoder(tok).encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text


def test_wordpiece_round_trip_modulo_lowercase_and_spacing(tmp_path):
    tok = train_tokenizer(TEXTS, TokenizerConfig(kind="wordpiece", vocab_size=300, min_frequency=1), tmp_path)
    for text in TEXTS[:4]:
        decoded = tok.decode(tok(text, add_special_tokens=False)["input_ids"])
        assert "".join(decoded.split()) == "".join(text.lower().split())


def test_wordpiece_cased_keeps_case(tmp_path):
    cfg = TokenizerConfig(kind="wordpiece", vocab_size=300, min_frequency=1, lowercase=False)
    tok = train_tokenizer(TEXTS, cfg, tmp_path)
    assert "The" in tok.tokenize("The fox")


@pytest.mark.parametrize("kind,size", [("wordpiece", 40), ("unigram", 60), ("bpe", 200)])
def test_vocab_too_small(tmp_path, kind, size):
    with pytest.raises(PretuneError, match=r"tokenizer.vocab_size.*too small"):
        train_tokenizer(TEXTS, TokenizerConfig(kind=kind, vocab_size=size), tmp_path)


def test_load_builtin_minilm_and_hf_prefix(tmp_path):
    tok = load_tokenizer("builtin:minilm")
    assert tokenizer_kind(tok) == "wordpiece" and boundary_token_id(tok) == tok.sep_token_id
    # MiniLM's tokenizer.json enables truncation at 128; the raw encoder must not cut documents.
    long = "word " * 400
    assert len(raw_encoder(tok).encode(long, add_special_tokens=False).ids) == 400
    train_tokenizer(TEXTS, TokenizerConfig(kind="bpe", vocab_size=300), tmp_path / "mine")
    assert tokenizer_kind(load_tokenizer(f"hf:{tmp_path / 'mine'}")) == "bpe"
    assert tokenizer_kind(load_tokenizer(tmp_path / "mine")) == "bpe"


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(PretuneError, match="not found"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PretuneError, match="not a tokenizer directory"):
        load_tokenizer(tmp_path / "empty")


TRAIN_TWICE = """
import sys
from pathlib import Path
from pretune.config import TokenizerConfig
from pretune.data.tokenizer import train_tokenizer
from pretune.data.builtin_tasks import builtin_rows
rows, text_field, _ = builtin_rows("rotten-tomatoes")
texts = [r[text_field] for r in rows[:400]]
train_tokenizer(texts, TokenizerConfig(kind=sys.argv[2], vocab_size=1500), Path(sys.argv[1]))
"""


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_the_same_corpus_gives_the_same_tokenizer_in_every_process(tmp_path, kind):
    """The Rust WordPiece trainer numbered ``##c`` tokens in hash order (random per process)
    and broke ties between merges by those numbers: vocabularies differed run to run."""
    import subprocess
    import sys

    for i in (1, 2):
        subprocess.run([sys.executable, "-c", TRAIN_TWICE, str(tmp_path / str(i)), kind],
                       check=True, timeout=120)
    one, two = ((tmp_path / str(i) / "tokenizer.json").read_bytes() for i in (1, 2))
    assert one == two
    tok = AutoTokenizer.from_pretrained(tmp_path / "1")
    if kind == "wordpiece":  # the pinned ##c tokens are ordinary vocabulary, not specials
        assert set(tok.all_special_tokens) == set(BERT_SPECIALS)
        ids = tok("unbelievably fresh")["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == "unbelievably fresh"
