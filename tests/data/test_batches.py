"""Length-grouped dynamic batches: seeded order, exact resume, less padding, augmentation."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoTokenizer

from pretune.config import AugmentConfig
from pretune.data.batches import LabeledBatches, encode
from pretune.tasks.text_classification import model_outputs


def _batches(wordpiece_dir, rt_rows, **kw) -> tuple[LabeledBatches, AutoTokenizer]:
    tok = AutoTokenizer.from_pretrained(wordpiece_dir)
    enc = encode(tok, [r["text"] for r in rt_rows], None, 64)
    labels = [int(r["label"] == "rotten") for r in rt_rows]
    kw.setdefault("special_ids", set(tok.all_special_ids))
    kw.setdefault("mask_id", tok.mask_token_id)
    return LabeledBatches(enc, labels, "single_label", 8, seed=1, **kw), tok


def test_order_is_seeded_covers_every_example_and_groups_lengths(wordpiece_dir, rt_rows):
    b, _ = _batches(wordpiece_dir, rt_rows)
    first = [x["input_ids"] for x in b]
    assert len(first) == len(b) == 38  # ceil(300 / 8)
    assert b.epoch == 1 and b.position == 0
    b2, _ = _batches(wordpiece_dir, rt_rows)
    assert all(torch.equal(x, y["input_ids"]) for x, y in zip(first, b2, strict=True))
    order = b.order(0)
    assert sorted(np.concatenate(order).tolist()) == list(range(300))
    assert [i.tolist() for i in b.order(1)] != [i.tolist() for i in order]  # reshuffled
    padded = sum(x.numel() for x in first)
    lengths = np.array([len(s) for s in b.enc.input_ids])
    rng = np.random.default_rng(0)
    random_pad = sum(lengths[c].max() * len(c) for c in np.array_split(rng.permutation(300), 38))
    assert padded < 0.8 * random_pad  # length grouping removes most of the padding


def test_resume_replays_the_same_remaining_batches(wordpiece_dir, rt_rows):
    b, _ = _batches(wordpiece_dir, rt_rows, augment=AugmentConfig(token_mask_prob=0.2))
    it = iter(b)
    for _ in range(5):
        next(it)
    state = b.state_dict()
    rest = [x["input_ids"] for x in it]
    b2, _ = _batches(wordpiece_dir, rt_rows, augment=AugmentConfig(token_mask_prob=0.2))
    b2.load_state_dict(state)
    b2.set_epoch(state["epoch"])
    assert all(torch.equal(x, y["input_ids"]) for x, y in zip(rest, b2, strict=True))


def test_augmentation_masks_and_deletes_but_never_special_tokens(wordpiece_dir, rt_rows):
    plain, tok = _batches(wordpiece_dir, rt_rows)
    masked, _ = _batches(wordpiece_dir, rt_rows, augment=AugmentConfig(token_mask_prob=0.3))
    dropped, _ = _batches(wordpiece_dir, rt_rows, augment=AugmentConfig(token_delete_prob=0.3))
    p, m, d = next(iter(plain)), next(iter(masked)), next(iter(dropped))
    share = (m["input_ids"] == tok.mask_token_id).sum() / m["attention_mask"].sum()
    assert 0.15 < share < 0.4
    assert (m["input_ids"][:, 0] == tok.cls_token_id).all()
    assert d["attention_mask"].sum() < 0.85 * p["attention_mask"].sum()
    ends = d["attention_mask"].sum(1) - 1
    assert (d["input_ids"][torch.arange(len(ends)), ends] == tok.sep_token_id).all()


def test_model_outputs_are_in_input_order(wordpiece_dir, rt_rows):
    tok = AutoTokenizer.from_pretrained(wordpiece_dir)
    texts = [r["text"] for r in rt_rows[:20]]
    enc = encode(tok, texts, None, 64)

    class Echo(torch.nn.Module):  # logits reveal each row's length: any order mix-up shows
        def __init__(self, width: int) -> None:
            super().__init__()
            self.width = width

        def forward(self, input_ids, attention_mask, **_):
            n = attention_mask.sum(1, keepdim=True).float()  # (B, 1)
            logits = torch.cat([n, torch.zeros_like(n)], 1)[:, : self.width]
            return type("Out", (), {"logits": logits})()

    lengths = np.array([len(s) for s in enc.input_ids])
    values = model_outputs(Echo(1), enc, "regression", batch_size=6)
    assert np.array_equal(values, lengths)
    probs = model_outputs(Echo(2), enc, "single_label", batch_size=6)
    assert np.allclose(probs[:, 0], 1 / (1 + np.exp(-lengths)))
