"""Word n-gram hashes, shared by the contamination check and by ``prepare``'s holdout: text is
lowercased and split with the regex ``\\w+`` (every CJK character a word of its own), each word
gets a stable 64-bit hash, and an n-gram's hash is a polynomial rolling combination of them,
computed with numpy per document."""

from __future__ import annotations

import hashlib
import re

import numpy as np

from pretune.data.cjk import CJK_CHARS

WORD_RE = re.compile(f"[{CJK_CHARS}]|[^\\W{CJK_CHARS}]+")  # a CJK character is a word of its own
_MULT = np.uint64(0x100000001B3)  # FNV-64 prime: odd, so the rolling combination mixes well


def words(text: str) -> list[str]:
    """Lowercased word tokens (regex ``\\w+``; each CJK character is one)."""
    return WORD_RE.findall(text.lower())


class WordHasher:
    """Stable 64-bit hash per word (blake2b, 8 bytes), cached: vocabularies are small."""

    max_cache = 2_000_000  # a huge corpus has a huge tail of rare words: bound the memory

    def __init__(self) -> None:
        self.cache: dict[str, int] = {}

    def __call__(self, toks: list[str]) -> np.ndarray:
        out = np.empty(len(toks), dtype=np.uint64)
        if len(self.cache) > self.max_cache:
            self.cache = {}
        cache = self.cache
        for i, w in enumerate(toks):
            h = cache.get(w)
            if h is None:
                h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                cache[w] = h
            out[i] = h
        return out


def ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of every n-gram: word_hashes [L] -> [L - n + 1] (empty when L < n).

    h = sum_k w[i+k] * M^(n-1-k) mod 2^64, i.e. a Horner loop over the n offsets; uint64
    arithmetic wraps, which is the intended modulus.
    """
    count = len(word_hashes) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    acc = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            acc = acc * _MULT + word_hashes[k : k + count]
    return acc


def contains_any(hashes: np.ndarray, table: np.ndarray) -> bool:
    """Does any of ``hashes`` occur in the sorted ``table``?"""
    if not len(hashes) or not len(table):
        return False
    pos = np.minimum(np.searchsorted(table, hashes), len(table) - 1)
    return bool((table[pos] == hashes).any())
