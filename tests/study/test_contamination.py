"""n-gram overlap between a pre-training corpus and a test split, on made-up corpora."""

from __future__ import annotations

import numpy as np
import pytest

from pretune.study.contamination import ngram_hashes, ngram_overlap, words

LEAKED = ("The quiet harbour town woke slowly as fishing boats drifted back past the old "
          "lighthouse under a pale morning sky")  # 20 words


def corpus(extra: str = ""):
    # A generator: the check must work on a stream it sees once.
    docs = [
        "Stock markets rallied on Tuesday after the central bank held rates steady.",
        f"Travel notes. {LEAKED.upper()}!!! Then we had breakfast.{extra}",
        "A completely different story about football, weather and elections in spring.",
    ]
    yield from docs


def test_exact_overlap_detected_despite_case_and_punctuation():
    tests = [
        "An unrelated review: the acting was wooden and the plot went nowhere at all, sadly.",
        # Same 20 words as the corpus doc, different punctuation/case: overlap.
        "the quiet harbour town, woke slowly; as fishing boats drifted back past the old "
        "lighthouse under a pale morning sky",
        "too short to check",
    ]
    res = ngram_overlap(corpus(), tests, n=13, test_ids=["a", "b", "c"])
    assert res["affected"] == 1 and res["ids"] == ["b"]
    assert res["short"] == 1 and res["checked"] == 2 and res["test_examples"] == 3
    assert res["fraction"] == pytest.approx(0.5) and res["fraction_of_all"] == pytest.approx(1 / 3)
    assert res["flag"] is True
    assert res["examples"][0]["ngram"] == " ".join(words(LEAKED)[:13])
    assert res["corpus_docs"] == 3 and res["corpus_docs_matched"] == 1
    # corpus n-grams: 12 words -> 0, 2 + 20 + 4 = 26 words -> 14, 11 words -> 0
    assert res["corpus_ngrams"] == 14


def test_near_miss_is_not_overlap():
    words_ = words(LEAKED)
    # Change one word in every 13-word window: the 8th word sits in all 8 windows of 20 words.
    near = words_.copy()
    near[7] = "swiftly"
    # Only 12 consecutive original words: one short of an n-gram.
    twelve = " ".join(words_[:12]) + " and then something else entirely happened here today"
    res = ngram_overlap(corpus(), [" ".join(near), twelve], n=13)
    assert res["affected"] == 0 and res["ids"] == [] and res["flag"] is False
    assert res["checked"] == 2


def test_short_examples_counted_separately_and_small_n():
    res = ngram_overlap(corpus(), ["one two", "", "harbour town woke"], n=3)
    assert res["short"] == 2 and res["checked"] == 1
    assert res["affected"] == 1 and res["ids"] == [2]


def test_empty_inputs_and_flag_threshold():
    res = ngram_overlap(iter([]), ["a b c d e"], n=3)
    assert res["affected"] == 0 and res["corpus_docs"] == 0 and res["flag"] is False
    res = ngram_overlap(corpus(), [], n=13)
    assert res["test_examples"] == 0 and res["fraction"] == 0.0 and res["flag"] is False
    # 1 of 100 checked (exactly 1%) is not flagged; the flag needs more than 1%.
    tests = [LEAKED] + [f"unique sample number {i} with words that appear nowhere else" for i in range(99)]
    res = ngram_overlap(corpus(), tests, n=5)
    assert res["affected"] == 1 and res["fraction"] == pytest.approx(0.01) and res["flag"] is False


def test_ngram_hashes_shape_and_order_sensitivity():
    w = np.array([11, 22, 33, 44], dtype=np.uint64)
    h = ngram_hashes(w, 2)
    assert h.shape == (3,) and h.dtype == np.uint64 and len(set(h.tolist())) == 3
    assert ngram_hashes(w[::-1].copy(), 4)[0] != ngram_hashes(w, 4)[0]
    assert ngram_hashes(w, 5).shape == (0,)


def test_bad_arguments():
    with pytest.raises(ValueError):
        ngram_overlap(corpus(), ["x"], n=0)
    with pytest.raises(ValueError):
        ngram_overlap(corpus(), ["x", "y"], test_ids=["only-one"])


def test_image_overlap_finds_pixel_identical_test_images():
    import torch

    from pretune.study.contamination import image_overlap

    seen = torch.rand(50, 1, 8, 8)
    test = torch.rand(20, 1, 8, 8)
    test[3] = seen[7]
    test[9] = seen[7]
    test[11] = seen[12]
    test[11, 0, 0, 0] = (seen[12, 0, 0, 0] + 0.5) % 1.0  # one pixel differs: not a duplicate
    res = image_overlap(seen, test)
    assert res["kind"] == "image" and res["test_examples"] == 20
    assert res["affected"] == 2 and res["flag"] and res["fraction"] == pytest.approx(0.1)
    assert res["examples"] == [{"id": 3, "match": 7}, {"id": 9, "match": 7}]
    assert image_overlap(seen, torch.rand(5, 1, 8, 8))["affected"] == 0
