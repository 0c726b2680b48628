"""MLM/CLM batchers over packed shards (masking rules, determinism, resume, DDP sharding) and
the sparse MLM loss (equal to HF's dense loss)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pretune.config import ModelConfig
from pretune.data.shards import PackedTokens
from pretune.errors import PretuneError
from pretune.models.registry import load_model, load_tokenizer_for
from pretune.train.objectives import BlockBatches, MaskingSpec, clm_loss, mask_tokens, mlm_loss

# Tiny models (hidden 32, one layer): seconds per test on 2 CPU cores.
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64}
TINY_BERT = ModelConfig(name="bert-tiny", dropout=0.0, overrides=TINY)
TINY_GPT = ModelConfig(name="gpt-tiny", dropout=0.0, overrides=TINY)



@pytest.fixture(scope="module")
def wp(wp_artifact):
    return load_tokenizer_for(TINY_BERT, wp_artifact / "tokenizer")


def _mlm(wp_artifact, wp, **kw) -> BlockBatches:
    packed = PackedTokens(wp_artifact, "train")
    spec = MaskingSpec.from_tokenizer(wp, 0.15, kw.pop("whole_word", False))
    return BlockBatches(packed.tokens, "mlm", 32, 4, masking=spec, cls_id=wp.cls_token_id, **kw)


def test_mlm_blocks_masking_rules(wp_artifact, wp):
    b = _mlm(wp_artifact, wp, seed=3)
    batch = next(iter(b))
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.shape == labels.shape == (4, 32) and ids.dtype == torch.int64
    assert (ids[:, 0] == wp.cls_token_id).all() and (labels[:, 0] == -100).all()
    chosen = labels != -100
    specials = torch.tensor(wp.all_special_ids)
    assert not torch.isin(labels[chosen], specials).any()  # specials are never targets
    assert torch.equal(batch["masked_index"], chosen.flatten().nonzero().squeeze(1))
    # Statistics over many tokens: ~15% chosen; of those ~80% [MASK], ~10% kept.
    spec = MaskingSpec.from_tokenizer(wp, 0.15)
    flat = np.resize(np.asarray(PackedTokens(wp_artifact).tokens, dtype=np.int64), (500, 64))
    inp, lab, _ = mask_tokens(flat, spec, np.random.default_rng(0))
    sel = lab != -100
    cand = ~np.isin(flat, spec.special_ids)
    assert 0.13 < sel.sum() / cand.sum() < 0.17
    assert 0.77 < (inp[sel] == spec.mask_id).mean() < 0.83
    assert 0.07 < (inp[sel] == flat[sel]).mean() < 0.13
    assert (inp[~sel] == flat[~sel]).all()


def test_whole_word_masking_masks_entire_words(wp_artifact, wp):
    spec = MaskingSpec.from_tokenizer(wp, 0.3, whole_word=True)
    flat = np.asarray(PackedTokens(wp_artifact).tokens[: 64 * 50], dtype=np.int64).reshape(50, 64)
    _, lab, _ = mask_tokens(flat, spec, np.random.default_rng(1))
    cont = spec.continuation[flat]
    assert cont.any(), "fixture tokenizer should split some words into ## pieces"
    sel = lab != -100
    for r, c in zip(*np.nonzero(cont[:, 1:]), strict=True):  # a continuation is chosen iff its word start is
        assert sel[r, c + 1] == sel[r, c] or flat[r, c] in spec.special_ids


def test_stream_is_deterministic_resumable_and_reshuffled(wp_artifact, wp):
    a = _mlm(wp_artifact, wp, seed=1)
    ref = [b["input_ids"] for b in a]
    b = _mlm(wp_artifact, wp, seed=1)
    it = iter(b)
    first = [next(it)["input_ids"] for _ in range(3)]
    state = b.state_dict()
    c = _mlm(wp_artifact, wp, seed=1)
    c.load_state_dict(state)
    rest = [x["input_ids"] for x in c]
    assert all(torch.equal(x, y) for x, y in zip(first + rest, ref, strict=True))
    a.set_epoch(1)
    epoch1 = next(iter(a))["input_ids"]
    assert not torch.equal(epoch1, ref[0])  # a new permutation each epoch
    with pytest.raises(PretuneError, match="same data"):
        _mlm(wp_artifact, wp, seed=1, world_size=2).load_state_dict(state)


def test_ddp_ranks_get_disjoint_blocks(wp_artifact):
    tokens = np.arange(10_000, dtype=np.uint16)
    ranks = [BlockBatches(tokens, "clm", 16, 2, rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1])
    seen = [{int(x) for b in r for x in b["input_ids"][:, 0]} for r in ranks]
    assert not seen[0] & seen[1]
    assert len(seen[0]) + len(seen[1]) == 2 * len(ranks[0]) * 2


def test_too_little_data_is_a_clear_error():
    with pytest.raises(PretuneError, match="batch_size"):
        BlockBatches(np.arange(100, dtype=np.uint16), "clm", 64, 4)


def test_sparse_mlm_loss_equals_dense_hf_loss(wp_artifact, wp):
    torch.manual_seed(0)
    model = load_model(TINY_BERT, "mlm", wp)
    model.eval()
    batch = next(iter(_mlm(wp_artifact, wp)))
    sparse = mlm_loss(model, batch)
    dense = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-5)
    no_index = {k: v for k, v in batch.items() if k != "masked_index"}
    torch.testing.assert_close(mlm_loss(model, no_index), dense, atol=1e-5, rtol=1e-5)
    sparse.backward()
    assert model.bert.embeddings.word_embeddings.weight.grad is not None


def test_clm_blocks_and_loss(bpe_artifact):
    tok = load_tokenizer_for(TINY_GPT, bpe_artifact / "tokenizer")
    packed = PackedTokens(bpe_artifact, "train")
    b = BlockBatches(packed.tokens, "clm", 32, 4)
    batch = next(iter(b))
    assert batch["input_ids"].shape == (4, 32)
    flat = torch.cat([x["input_ids"].flatten() for x in b])
    assert (flat == tok.eos_token_id).any()  # document boundaries stay inside blocks
    torch.manual_seed(0)
    model = load_model(TINY_GPT, "clm", tok)
    loss = clm_loss(model, batch)
    assert torch.isfinite(loss) and abs(loss.item() - np.log(len(tok))) < 1.0
