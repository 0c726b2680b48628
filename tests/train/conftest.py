"""Fixtures for training tests: tiny prepared artifacts (tokenizer + packed shards) built with
the real data-pipeline functions on a small synthetic corpus."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from pretune.config import ModelConfig, TokenizerConfig
from pretune.data.shards import PackedTokens, write_shards
from pretune.data.tokenizer import train_tokenizer
from pretune.models.registry import load_model, load_tokenizer_for
from pretune.train.objectives import BlockBatches, MaskingSpec

SUBJECTS = ["the cat", "a dog", "my neighbour", "the old farmer", "our teacher", "the bird"]
VERBS = ["watched", "painted", "followed", "ignored", "remembered", "carried"]
OBJECTS = ["the river", "a red balloon", "the quiet station", "an unusual parcel", "the garden"]


def synthetic_docs(n: int, seed: int = 0) -> list[str]:
    """Documents from a tiny grammar: learnable structure, so the LM loss falls quickly."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        sents = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
                 for _ in range(rng.randint(3, 8))]
        docs.append(" ".join(sents).capitalize())
    return docs


def make_artifact(root: Path, kind: str, n_docs: int = 300, vocab: int = 120) -> Path:
    docs = synthetic_docs(n_docs)
    vocab = max(vocab, 300) if kind == "bpe" else vocab
    tok = train_tokenizer(docs, TokenizerConfig(kind=kind, vocab_size=vocab, min_frequency=1),
                          root / "tokenizer")
    write_shards(docs, tok, root, val_fraction=0.1, seed=0)
    return root


@pytest.fixture(scope="session")
def wp_artifact(tmp_path_factory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("wp-artifact"), "wordpiece")


@pytest.fixture(scope="session")
def bpe_artifact(tmp_path_factory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("bpe-artifact"), "bpe")


@pytest.fixture(scope="session")
def synthetic_corpus() -> list[str]:
    return synthetic_docs(200)


TINY_BERT_LOOP = ModelConfig(name="bert-tiny", dropout=0.0, overrides={
    "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 64})


@pytest.fixture(scope="module")
def tok(wp_artifact):
    return load_tokenizer_for(TINY_BERT_LOOP, wp_artifact / "tokenizer")


@pytest.fixture
def setup(wp_artifact, tok):
    """``make()`` -> (tiny BERT MLM, its training batches) on the wordpiece artifact."""
    def make(batch_size=8, split="train", shuffle=True, seed=0, n_tokens=None):
        torch.manual_seed(0)
        model = load_model(TINY_BERT_LOOP, "mlm", tok)
        spec = MaskingSpec.from_tokenizer(tok)
        tokens = PackedTokens(wp_artifact, split).tokens[:n_tokens]
        batches = BlockBatches(tokens, "mlm", 32, batch_size,
                               masking=spec, cls_id=tok.cls_token_id, shuffle=shuffle, seed=seed)
        return model, batches
    return make
