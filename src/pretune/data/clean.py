"""Cleaning: normalisation, length filters, exact and near-duplicate removal (streaming).

Every step is optional (``CleanConfig``) and counted: transforms count the documents they
changed, filters the documents they removed. Near-duplicate removal keeps a MinHash-LSH index
of the kept documents in memory (a few hundred bytes per document).
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from pretune.config import CleanConfig
from pretune.data.cjk import CJK_CHARS, has_cjk
from pretune.data.ngrams import WordHasher, contains_any, ngram_hashes, words
from pretune.errors import PretuneError

# Filter name -> the setting that controls it (for "everything was removed" errors).
FILTER_SETTINGS = {
    "empty": "the text column / clean.strip_html (documents were empty after cleaning)",
    "min_chars": "clean.min_chars",
    "max_chars": "clean.max_chars",
    "min_words": "clean.min_words",
    "exact_dup": "clean.exact_dedup",
    "near_dup": "clean.near_dedup_threshold",
    "held_out": "holdout (documents holding a task's test or validation text)",
}
# Where a document is cut into the sentences a held-out text is matched against.
_SENTENCE_END = re.compile(r"(?<=[。！？!?])|\n+")

# Non-whitespace C0/C1 controls, soft hyphen, zero-width and bidi-control characters.
# \t \n \r \x0b \x0c \x85 are whitespace and left to the whitespace step.
_CONTROL = re.compile(
    "[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064"
    "\u2066-\u2069\ufeff]"
)
_SCRIPT = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# Block-level tags become a line break (they separate text); inline tags vanish ("<b>x</b>").
_BLOCK_TAG = re.compile(
    r"</?(?:p|br|div|li|ul|ol|tr|td|th|table|h[1-6]|section|article|blockquote|pre|hr)\b[^<>]*>",
    re.IGNORECASE,
)
# A tag starts with a letter, "/" or "!" right after "<", so "a < b > c" is kept.
_TAG = re.compile(r"</?[A-Za-z!][^<>]*>")
# Only runs that need changing (2+ blanks, or a tab/NBSP...): single spaces are not rewritten.
_HSPACE = re.compile(r"[^\S\n]{2,}|[^\S\n ]")
_LINE_EDGES = re.compile(r" \n ?|\n ")
_MANY_NEWLINES = re.compile(r"\n{3,}")


@dataclass
class CleanStats:
    docs_in: int = 0
    docs_out: int = 0
    chars_out: int = 0
    words_out: int = 0
    changed: dict[str, int] = field(default_factory=dict)  # transform -> docs changed
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILTER_SETTINGS, 0))

    def as_dict(self) -> dict:
        return {
            "docs_in": self.docs_in, "docs_out": self.docs_out, "chars_out": self.chars_out,
            "words_out": self.words_out, "changed": dict(self.changed), "removed": dict(self.removed),
        }


def strip_html(text: str) -> str:
    """Drop script/style blocks, comments and tags; unescape entities (``&amp;`` -> ``&``)."""
    if "<" in text:
        text = _SCRIPT.sub(" ", text)
        text = _COMMENT.sub(" ", text)
        text = _BLOCK_TAG.sub("\n", text)
        text = _TAG.sub("", text)
    if "&" in text:
        text = html.unescape(text)
    return text


def normalize_whitespace(text: str) -> str:
    """Collapse runs of spaces/tabs, trim lines, keep at most one blank line (paragraphs)."""
    text = _HSPACE.sub(" ", text)
    text = _LINE_EDGES.sub("\n", text)
    text = _MANY_NEWLINES.sub("\n\n", text)
    return text.strip()


class Cleaner:
    """Stateful streaming cleaner: transforms + filters + dedup indexes for one corpus."""

    def __init__(self, cfg: CleanConfig, stats: CleanStats | None = None,
                 holdout: Iterable[str] = (), holdout_ngram: int = 0, part: str = "") -> None:
        self.cfg = cfg
        # A shared index's keys say which part (the artifact) and which attempt wrote them: a
        # retried part must not find its own earlier attempt's documents as duplicates.
        self._part, self._attempt = part or "-", uuid.uuid4().hex[:8]
        self.stats = stats if stats is not None else CleanStats()
        # Held-out texts, cleaned like the corpus (a test sentence matches its corpus copy);
        # with holdout_ngram, any shared word n-gram (what the contamination check counts).
        changed = dict(self.stats.changed)
        self._holdout = {t for t in (self.transform(h) for h in holdout) if t}
        self.stats.changed = changed
        self._ngram = holdout_ngram
        self._hasher = WordHasher()
        self._held_ngrams = np.unique(np.concatenate(
            [ngram_hashes(self._hasher(words(t)), holdout_ngram) for t in self._holdout]
            or [np.empty(0, np.uint64)])) if holdout_ngram else np.empty(0, np.uint64)
        self._seen: set[bytes] = set()  # 16-byte digests of kept docs (exact dedup)
        self._lsh = None
        self._redis = None
        if cfg.near_dedup:
            from datasketch import MinHash, MinHashLSH

            storage = self._storage(cfg.near_dedup_storage)
            self._lsh = MinHashLSH(threshold=cfg.near_dedup_threshold, num_perm=cfg.minhash_perm,
                                   **({"storage_config": storage} if storage else {}))
            # Fixed-seed hash family (deterministic across runs and processes).
            rng = np.random.default_rng(1)
            self._a = rng.integers(1, 2**63, cfg.minhash_perm, dtype=np.uint64) | np.uint64(1)
            self._b = rng.integers(0, 2**63, cfg.minhash_perm, dtype=np.uint64)
            # datasketch regenerates permutations per MinHash unless handed some; ours are
            # never used by it (we pass finished signatures), so a template's are reused.
            self._perm = MinHash(num_perm=cfg.minhash_perm, scheme="affine32").permutations

    def _storage(self, url: str | None) -> dict | None:
        """datasketch's storage config for a ``redis://host:port/db`` index (None: memory).
        Each cleaner writes under its own key prefix and removes its keys in ``close``."""
        if url is None:
            return None
        try:
            import redis
        except ImportError:
            raise PretuneError("clean.near_dedup_storage needs the redis package: pip install "
                               "'pretune[scale]' (or unset it to keep the index in memory)"
                               ) from None
        m = re.fullmatch(r"redis://([^/:]+)(?::(\d+))?(?:/(\d+))?", url)
        assert m is not None  # the config's pattern checked it
        params = {"host": m.group(1), "port": int(m.group(2) or 6379), "db": int(m.group(3) or 0)}
        self._redis = redis.Redis(**params, socket_connect_timeout=5)
        try:
            self._redis.ping()
        except redis.exceptions.RedisError as e:
            raise PretuneError(f"clean.near_dedup_storage: cannot reach Redis at {url} ({e}); "
                               "start redis-server there, or unset it to keep the index in "
                               "memory") from None
        shared = self.cfg.near_dedup_index
        self._basename = (f"pretune-lsh-shared-{shared}" if shared else
                          f"pretune-lsh-{uuid.uuid4().hex[:16]}").encode()
        return {"type": "redis", "basename": self._basename, "redis": params}

    def close(self) -> None:
        """Remove this cleaner's keys from an external index (nothing for the in-memory one),
        1,000 at a time while scanning: the key names never pile up in this process. A killed
        run leaves its keys under ``pretune-lsh-<id>``; ``redis-cli --scan --pattern
        'pretune-lsh-*' | xargs redis-cli unlink`` removes them (and a shared index's,
        ``pretune-lsh-shared-<name>*``, which every part leaves for the others)."""
        if self._redis is None or self.cfg.near_dedup_index:  # shared: the other parts' too
            return
        batch: list[bytes] = []
        for key in self._redis.scan_iter(match=self._basename + b"*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                self._redis.unlink(*batch)
                batch = []
        if batch:
            self._redis.unlink(*batch)

    def transform(self, text: str) -> str:
        """Apply the enabled transforms in a fixed order, counting documents each one changed."""
        cfg, changed = self.cfg, self.stats.changed
        steps = (
            ("html", cfg.strip_html, strip_html),
            ("nfkc", cfg.nfkc, _nfkc),
            ("control", cfg.strip_control, lambda t: _CONTROL.sub("", t)),
            ("whitespace", cfg.normalize_whitespace, normalize_whitespace),
            ("lowercase", cfg.lowercase, str.lower),
        )
        for name, enabled, fn in steps:
            if enabled:
                new = fn(text)
                if new != text:
                    changed[name] = changed.get(name, 0) + 1
                    text = new
        return text

    def reject_reason(self, text: str) -> str | None:
        """Name of the first length filter ``text`` fails, or None."""
        cfg = self.cfg
        if not text.strip():
            return "empty"
        if len(text) < cfg.min_chars:
            return "min_chars"
        if cfg.max_chars is not None and len(text) > cfg.max_chars:
            return "max_chars"
        if cfg.min_words and len(word_units(text)) < cfg.min_words:
            return "min_words"
        return None

    def is_held_out(self, text: str) -> bool:
        """True when the document is, holds a sentence that is, or (holdout_ngram) shares a
        word n-gram with a held-out text."""
        if text in self._holdout:
            return True
        if any(p.strip() in self._holdout for p in _SENTENCE_END.split(text)):
            return True
        return bool(self._ngram) and contains_any(
            ngram_hashes(self._hasher(words(text)), self._ngram), self._held_ngrams)

    def is_exact_dup(self, text: str) -> bool:
        # Key on case- and whitespace-insensitive text so trivially re-formatted copies match.
        key = hashlib.blake2b(" ".join(text.lower().split()).encode(), digest_size=16).digest()
        if key in self._seen:
            return True
        self._seen.add(key)
        return False

    def is_near_dup(self, text: str, key: int) -> bool:
        """MinHash over word shingles; a doc is a near-dup if LSH finds a kept candidate."""
        from datasketch import MinHash

        sig = minhash_signature(text, self.cfg.shingle_words, self._a, self._b)
        m = MinHash(hashvalues=sig, permutations=self._perm, scheme="affine32")
        if not self.cfg.near_dedup_index:  # an index of this run alone
            if self._lsh.query(m):
                return True
            self._lsh.insert(key, m, check_duplication=False)
            return False
        for found in self._lsh.query(m):
            part, attempt, _ = str(found).split("|", 2)
            if part != self._part or attempt == self._attempt:  # not an earlier try of ours
                return True
        self._lsh.insert(f"{self._part}|{self._attempt}|{key}", m, check_duplication=False)
        return False

    def __call__(self, docs: Iterable[str]) -> Iterator[str]:
        """Yield cleaned, filtered, de-duplicated documents (an external index's keys are
        removed when the stream ends, is closed, or fails)."""
        try:
            yield from self._clean(docs)
        finally:
            self.close()

    def _clean(self, docs: Iterable[str]) -> Iterator[str]:
        st = self.stats
        for doc in docs:
            st.docs_in += 1
            text = self.transform(doc)
            reason = self.reject_reason(text)
            if reason is None and self._holdout and self.is_held_out(text):
                reason = "held_out"
            if reason is None and self.cfg.exact_dedup and self.is_exact_dup(text):
                reason = "exact_dup"
            if reason is None and self._lsh is not None and self.is_near_dup(text, st.docs_in):
                reason = "near_dup"
            if reason is not None:
                st.removed[reason] += 1
                continue
            st.docs_out += 1
            st.chars_out += len(text)
            st.words_out += len(word_units(text))
            yield text


_SHINGLE_BASE = np.uint64(0x100000001B3)  # FNV prime: polynomial combination of word hashes
_UNITS = re.compile(f"[{CJK_CHARS}]|[^\\s{CJK_CHARS}]+")


def word_units(text: str) -> list[str]:
    """Words for counting and shingling: whitespace-separated words, and every CJK character
    on its own (Chinese has no spaces: its n-word shingles are character n-grams)."""
    if not has_cjk(text):
        return text.split()
    return _UNITS.findall(text)


def minhash_signature(text: str, n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash signature (uint32, shape [num_perm]) of the lowercased n-word shingles of ``text``
    (character n-grams where the text is CJK).

    Vectorised instead of hashing each shingle string: words are hashed once (crc32, in C),
    a shingle's hash is a polynomial of its word hashes (uint64 arithmetic wraps mod 2^64),
    and permutation j is the multiply-shift hash ``(a_j * h + b_j) >> 32``.
    """
    words = [w.encode() for w in word_units(text.lower())] if has_cjk(text) else \
        text.lower().encode().split()
    wh = np.fromiter(map(zlib.crc32, words), dtype=np.uint64, count=len(words))
    n = max(1, min(n, len(wh)))
    count = max(1, len(wh) - n + 1)
    h = np.zeros(count, dtype=np.uint64)  # [shingles]
    for k in range(n):
        h = h * _SHINGLE_BASE + wh[k : k + count]
    phv = (a[:, None] * h[None, :] + b[:, None]) >> np.uint64(32)  # [num_perm, shingles]
    return phv.min(axis=1).astype(np.uint32)


def _nfkc(text: str) -> str:
    # is_normalized is a fast check; most text is already NFKC and needs no copy.
    return text if unicodedata.is_normalized("NFKC", text) else unicodedata.normalize("NFKC", text)


def clean_documents(docs: Iterable[str], cfg: CleanConfig, stats: CleanStats,
                    holdout: Iterable[str] = (), holdout_ngram: int = 0, part: str = ""
                    ) -> Iterator[str]:
    """Stream ``docs`` through the transforms, filters and dedup of ``cfg``, filling ``stats``;
    documents holding a ``holdout`` text (a task's test sentences) — or sharing a word
    ``holdout_ngram``-gram with one — are dropped and counted."""
    return Cleaner(cfg, stats, holdout, holdout_ngram, part)(docs)


def everything_removed_message(stats: CleanStats, cfg: CleanConfig) -> str:
    """One-line explanation when no document survived cleaning: which filter, which setting."""
    removed = {k: v for k, v in stats.removed.items() if v}
    if not removed:
        return "no documents to clean"
    worst = max(removed, key=removed.get)
    setting = FILTER_SETTINGS[worst]
    current = getattr(cfg, setting.removeprefix("clean."), None) if setting.startswith("clean.") else None
    now = f" (now {current})" if current is not None else ""
    detail = ", ".join(f"{k}: {v}" for k, v in removed.items())
    return (
        f"all {stats.docs_in} documents were removed by cleaning ({detail}); "
        f"the '{worst}' filter removed the most: relax {setting}{now}"
    )
