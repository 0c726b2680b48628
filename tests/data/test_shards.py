"""Packing documents into memmap shards and reading them back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from pretune.config import TokenizerConfig
from pretune.data.shards import PackedTokens, is_val_doc, token_dtype, write_shards
from pretune.data.tokenizer import train_tokenizer, wrap_fast
from pretune.errors import PretuneError

DOCS = [f"Document number {i}: some text about topic {i % 7}, with punctuation!" for i in range(200)]


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    d = tmp_path_factory.mktemp("bpe")
    return train_tokenizer(DOCS, TokenizerConfig(kind="bpe", vocab_size=300, min_frequency=1), d)


def test_layout_index_and_exact_round_trip(tmp_path, bpe):
    meta = write_shards(DOCS, bpe, tmp_path, val_fraction=0.1, seed=0, batch_docs=16)
    assert json.loads((tmp_path / "meta.json").read_text()) == meta
    assert meta["dtype"] == "uint16" and meta["boundary_token_id"] == 0
    train, val = PackedTokens(tmp_path, "train"), PackedTokens(tmp_path, "val")
    assert train.num_docs + val.num_docs == len(DOCS) and val.num_docs > 0
    assert meta["splits"]["train"] == {"docs": train.num_docs, "tokens": len(train)}
    for split in (train, val):
        assert isinstance(split.tokens, np.memmap) and split.tokens.dtype == np.uint16
        assert split.doc_starts[0] == 0 and split.doc_starts[-1] == len(split)
        assert len(split.doc_starts) == split.num_docs + 1
        # Every document is followed by the boundary token.
        assert (split.tokens[split.doc_starts[1:] - 1] == 0).all()
    # Byte-level BPE decodes exactly; order within a split follows the input order.
    expect_val = [d for d in DOCS if is_val_doc(d, 0.1, 0)]
    expect_train = [d for d in DOCS if not is_val_doc(d, 0.1, 0)]
    assert [bpe.decode(train.doc(i)) for i in range(train.num_docs)] == expect_train
    assert [bpe.decode(val.doc(i)) for i in range(val.num_docs)] == expect_val
    assert bpe.decode(train.doc(-1)) == expect_train[-1]
    with pytest.raises(IndexError):
        train.doc(train.num_docs)


def test_val_split_is_deterministic_and_seeded(tmp_path, bpe):
    flags = [is_val_doc(d, 0.2, 0) for d in DOCS]
    assert flags == [is_val_doc(d, 0.2, 0) for d in DOCS]
    assert 10 < sum(flags) < 70
    assert flags != [is_val_doc(d, 0.2, 1) for d in DOCS]
    a = write_shards(DOCS, bpe, tmp_path / "a", val_fraction=0.2, batch_docs=7)
    b = write_shards(DOCS, bpe, tmp_path / "b", val_fraction=0.2, batch_docs=50)
    assert a == b  # batch size does not change the output
    assert (tmp_path / "a" / "train.bin").read_bytes() == (tmp_path / "b" / "train.bin").read_bytes()


def test_tiny_corpus_still_gets_a_val_doc(tmp_path, bpe):
    docs = DOCS[:3]
    assert not any(is_val_doc(d, 0.01, 0) for d in docs)
    meta = write_shards(docs, bpe, tmp_path, val_fraction=0.01)
    assert meta["splits"]["train"]["docs"] == 2 and meta["splits"]["val"]["docs"] == 1
    train, val = PackedTokens(tmp_path), PackedTokens(tmp_path, "val")
    assert bpe.decode(val.doc(0)) == docs[2]
    assert [bpe.decode(train.doc(i)) for i in range(2)] == docs[:2]
    assert len(train) == train.doc_starts[-1] and (tmp_path / "train.bin").stat().st_size == 2 * len(train)


def test_no_val_split_gives_empty_tokens(tmp_path, bpe):
    write_shards(DOCS[:10], bpe, tmp_path, val_fraction=0.0)
    val = PackedTokens(tmp_path, "val")
    assert len(val) == 0 and val.num_docs == 0


def test_dtype_choice():
    assert token_dtype(65535) == np.uint16
    assert token_dtype(65536) == np.uint32


def test_uint32_for_large_vocab(tmp_path):
    # A real 70k-entry word-level tokenizer (cheap to build, no training needed).
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    vocab.update({f"w{i}": i + 5 for i in range(70_000)})
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = wrap_fast(raw, "wordlevel", 128)
    meta = write_shards(["w1 w69999 w5", "w66000 nope"], tok, tmp_path)
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70_005
    train = PackedTokens(tmp_path)
    assert train.tokens.dtype == np.uint32
    assert train.doc(0).tolist() == [6, 70004, 10] and train.doc(1).tolist() == [66005, 1]


def test_empty_input_and_bad_dirs(tmp_path, bpe):
    with pytest.raises(PretuneError, match="no training documents"):
        write_shards([], bpe, tmp_path / "empty")
    with pytest.raises(PretuneError, match="not a prepared data artifact"):
        PackedTokens(tmp_path / "nowhere")
    with pytest.raises(PretuneError, match="split must be"):
        PackedTokens(tmp_path, "test")


def test_a_tampered_index_is_refused_not_unpickled(tmp_path, bpe):
    out = tmp_path / "a"
    write_shards(["one doc here", "and another one"] * 20, bpe, out)
    PackedTokens(out)  # fine as written
    np.save(out / "train.idx.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(PretuneError, match="train.idx.npy is not a prepared-artifact index"):
        PackedTokens(out)
    np.save(out / "train.idx.npy", np.array([0, 10**9]))
    with pytest.raises(PretuneError, match="shorter than its index says"):
        PackedTokens(out)
