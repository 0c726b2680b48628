"""Cleaning transforms, length filters, exact and MinHash near-duplicate removal."""

from __future__ import annotations

import numpy as np

from pretune.config import CleanConfig
from pretune.data.clean import (
    Cleaner,
    CleanStats,
    clean_documents,
    everything_removed_message,
    minhash_signature,
    normalize_whitespace,
    strip_html,
)

OFF = dict(nfkc=False, strip_control=False, strip_html=False, normalize_whitespace=False,
           min_chars=0, exact_dedup=False, near_dedup=False)


def run(docs: list[str], **cfg) -> tuple[list[str], CleanStats]:
    stats = CleanStats()
    out = list(clean_documents(docs, CleanConfig(**{**OFF, **cfg}), stats))
    return out, stats


def test_html_tags_entities_scripts():
    text = "<p>Fish &amp; chips</p><script>var x = 1;</script><b>bold</b> &lt;3 a < b > c<br>end"
    assert strip_html(text) == "\nFish & chips\n bold <3 a < b > c\nend"
    out, st = run([text, "no markup"], strip_html=True)
    assert out[0].startswith("\nFish & chips") and st.changed == {"html": 1}


def test_nfkc():
    out, st = run(["ﬁnance ＡＢＣ ½"], nfkc=True)
    assert out == ["finance ABC 1⁄2"] and st.changed == {"nfkc": 1}


def test_control_and_zero_width_chars():
    out, st = run(["a\x00b\u200bc\ufeffd\u00ade\tf\ng"], strip_control=True)
    assert out == ["abcde\tf\ng"]  # tabs/newlines are whitespace, left to the next step
    assert st.changed == {"control": 1}


def test_whitespace_keeps_paragraphs():
    assert normalize_whitespace("  a \t b\u00a0c \r\n d\n\n\n\ne  ") == "a b c\nd\n\ne"
    out, st = run(["x  y", "clean text"], normalize_whitespace=True)
    assert out == ["x y", "clean text"] and st.changed == {"whitespace": 1}


def test_lowercase():
    out, _ = run(["Hello World"], lowercase=True)
    assert out == ["hello world"]


def test_all_transforms_together_in_order():
    # &nbsp; unescapes to U+00A0, which NFKC turns into a space, collapsed by whitespace.
    out, _ = run(["<i>Caf&eacute;</i>&nbsp;&nbsp;\u200bLATTE"], strip_html=True, nfkc=True,
                 strip_control=True, normalize_whitespace=True, lowercase=True)
    assert out == ["café latte"]


def test_length_filters_are_counted():
    docs = ["", "   ", "short", "a" * 50, "word " * 3, "one two three four five six", "b" * 500]
    out, st = run(docs, min_chars=6, max_chars=100, min_words=2)
    assert out == ["word word word ", "one two three four five six"]
    assert st.removed["empty"] == 2
    assert st.removed["min_chars"] == 1
    assert st.removed["max_chars"] == 1
    assert st.removed["min_words"] == 1
    assert st.docs_in == 7 and st.docs_out == 2
    assert st.words_out == 3 + 6


def test_exact_dedup_ignores_case_and_spacing():
    docs = ["The same text here.", "the  SAME text\nhere.", "Different text."]
    out, st = run(docs, exact_dedup=True)
    assert out == ["The same text here.", "Different text."]
    assert st.removed["exact_dup"] == 1


def _article(seed: int, n: int = 120) -> str:
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(2000)]
    return " ".join(rng.choice(vocab, n))


def test_near_dedup_keeps_one_of_two_near_identical_docs():
    a = _article(0, 300)
    words = a.split()
    words[150] = "CHANGED"  # one word differs: Jaccard of the 5-word shingles ~0.97
    b = " ".join(words)
    c = _article(1, 300)
    out, st = run([a, b, c], near_dedup=True, near_dedup_threshold=0.8, minhash_perm=128)
    assert out == [a, c]
    assert st.removed["near_dup"] == 1
    # With near-dedup off both survive (they are not exact duplicates).
    out, _ = run([a, b, c], exact_dedup=True)
    assert len(out) == 3


def test_minhash_signature_estimates_jaccard_and_is_deterministic():
    rng = np.random.default_rng(0)
    a_, b_ = (rng.integers(1, 2**63, 128, dtype=np.uint64) | np.uint64(1),
              rng.integers(0, 2**63, 128, dtype=np.uint64))
    x = _article(3, 300)
    y = _article(4, 300)
    sx, sx2 = minhash_signature(x, 5, a_, b_), minhash_signature(x, 5, a_, b_)
    assert sx.dtype == np.uint32 and sx.shape == (128,)
    assert np.array_equal(sx, sx2)
    assert (sx == minhash_signature(y, 5, a_, b_)).mean() < 0.1  # unrelated docs
    assert minhash_signature("two words", 5, a_, b_).shape == (128,)  # shorter than a shingle


def test_everything_removed_names_filter_and_setting():
    cfg = CleanConfig(min_chars=1000)
    st = CleanStats()
    assert list(Cleaner(cfg, st)(["short doc", "another short doc"])) == []
    msg = everything_removed_message(st, cfg)
    assert "min_chars" in msg and "clean.min_chars" in msg and "1000" in msg
