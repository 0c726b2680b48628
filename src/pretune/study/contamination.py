"""Contamination check: does the pre-training corpus contain the task's test examples?

A test example counts as contaminated when any of its word n-grams (default 13, as in the
GPT-3 paper's overlap analysis) also occurs in the corpus. Text is lowercased and split with
the regex ``\\w+``, so punctuation and spacing differences do not hide an overlap; Chinese and
Japanese characters are words of their own (their n-grams are character n-grams).

Images (``image_overlap``): a test image counts when it is pixel-identical, in 8-bit, to a
pre-training image in the same format.

Memory: the corpus is streamed once and never stored. We hash the (small) test side's
n-grams into a sorted uint64 array and look every corpus n-gram up in it, which gives the
same answer as hashing the corpus into a set but needs memory only for the test split, so a
corpus of any size (~10M n-grams and far beyond) is fine. N-gram hashes are 64-bit: a
polynomial rolling combination of per-word blake2b hashes, computed with numpy per document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from pretune.data.ngrams import WordHasher, ngram_hashes, words

FLAG_FRACTION = 0.01  # more than 1% of checkable test examples affected -> flag


def ngram_overlap(corpus_docs: Iterable[str], test_texts: list[str], n: int = 13,
                  test_ids: list[Any] | None = None, max_examples: int = 5) -> dict:
    """Fraction of test examples sharing at least one word n-gram with the corpus.

    ``corpus_docs`` is streamed (any iterable of strings, e.g. a prepared artifact's docs).
    Returns ``n``, ``test_examples``, ``checked`` (examples with >= n words), ``short``
    (fewer than n words: cannot be checked, counted separately), ``affected``, ``fraction``
    (affected / checked), ``fraction_of_all`` (affected / test_examples), ``ids`` (the first
    ``max_examples`` affected ids: ``test_ids`` entries or indices), ``examples`` (id and one
    overlapping n-gram each), ``corpus_docs``, ``corpus_ngrams``, ``corpus_docs_matched`` and
    ``flag`` (True when more than 1% of checked examples are affected).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if test_ids is not None and len(test_ids) != len(test_texts):
        raise ValueError("test_ids must have one id per test text")
    hasher = WordHasher()
    # Test side: every n-gram hash with the example it came from.
    per_example: list[np.ndarray] = []
    tokens: list[list[str]] = []
    short = 0
    for text in test_texts:
        toks = words(text or "")
        tokens.append(toks)
        if len(toks) < n:
            short += 1
        per_example.append(ngram_hashes(hasher(toks), n))
    test_table = np.unique(np.concatenate(per_example)) if per_example else np.empty(0, np.uint64)

    matched: set[int] = set()
    docs = docs_matched = corpus_ngrams = 0
    for doc in corpus_docs:
        if not isinstance(doc, str):
            continue
        docs += 1
        h = ngram_hashes(hasher(words(doc)), n)
        corpus_ngrams += len(h)
        if len(h) == 0 or len(test_table) == 0:
            continue
        pos = np.minimum(np.searchsorted(test_table, h), len(test_table) - 1)
        hits = h[test_table[pos] == h]
        if len(hits):
            docs_matched += 1
            matched.update(int(x) for x in np.unique(hits))

    hit_table = np.array(sorted(matched), dtype=np.uint64)
    ids, examples = [], []
    affected = 0
    for i, h in enumerate(per_example):
        if len(h) == 0 or len(hit_table) == 0:
            continue
        is_hit = np.isin(h, hit_table)
        if not is_hit.any():
            continue
        affected += 1
        if len(ids) < max_examples:
            ex_id = test_ids[i] if test_ids is not None else i
            first = int(np.argmax(is_hit))  # start word of the first overlapping n-gram
            ids.append(ex_id)
            examples.append({"id": ex_id, "ngram": " ".join(tokens[i][first : first + n])})
    checked = len(test_texts) - short
    fraction = affected / checked if checked else 0.0
    return {
        "n": n, "test_examples": len(test_texts), "checked": checked, "short": short,
        "affected": affected, "fraction": fraction,
        "fraction_of_all": affected / len(test_texts) if test_texts else 0.0,
        "ids": ids, "examples": examples, "corpus_docs": docs, "corpus_ngrams": corpus_ngrams,
        "corpus_docs_matched": docs_matched, "flag": fraction > FLAG_FRACTION,
    }


def image_overlap(seen: Any, test: Any, max_examples: int = 5) -> dict[str, Any]:
    """Test images pixel-identical (8-bit) to a pre-training image. ``seen`` / ``test``: float
    tensors (N, C, S, S) in [0, 1], already in the same format (size, border, channels)."""

    def digests(x: Any) -> list[bytes]:
        u8 = (x.clamp(0, 1) * 255).round().byte().numpy()
        return [hashlib.blake2b(img.tobytes(), digest_size=16).digest() for img in u8]

    first: dict[bytes, int] = {}
    for i, d in enumerate(digests(seen)):
        first.setdefault(d, i)
    hits = [(i, first[d]) for i, d in enumerate(digests(test)) if d in first]
    n = len(test)
    fraction = len(hits) / n if n else 0.0
    return {
        "kind": "image", "test_examples": n, "checked": n, "short": 0, "affected": len(hits),
        "fraction": fraction, "flag": fraction > FLAG_FRACTION,
        "examples": [{"id": i, "match": j} for i, j in hits[:max_examples]],
    }
