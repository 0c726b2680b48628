"""Backbone adapter: same API over BERT, GPT-2, classification wrappers and PEFT models."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_registry import TINY, bpe_tokenizer, wordpiece_tokenizer

from pretune.config import ModelConfig
from pretune.models.backbone import Backbone, pool
from pretune.models.registry import load_model


@pytest.fixture(scope="module")
def toks():
    bpe = bpe_tokenizer()
    bpe.pad_token = bpe.eos_token
    return {"bert": wordpiece_tokenizer(), "gpt": bpe}


def _model(family, kind, toks, layers=2):
    torch.manual_seed(0)
    overrides = {**TINY, "num_hidden_layers": layers}
    return load_model(ModelConfig(name=f"{family}-tiny", overrides=overrides, dropout=0.0), kind,
                      toks[family], num_labels=2 if kind == "classify" else None)


@pytest.mark.parametrize("family", ["bert", "gpt"])
@pytest.mark.parametrize("kind", ["classify", "base", "lm"])
def test_structure_and_groups_cover_every_param_once(family, kind, toks):
    kind = {"lm": "mlm" if family == "bert" else "clm"}.get(kind, kind)
    model = _model(family, kind, toks)
    bb = Backbone(model)
    assert bb.num_layers == 2 and bb.hidden_size == 32
    assert bb.is_decoder == (family == "gpt")
    groups = bb.layer_groups()
    assert len(groups) == 2 + 2  # embeddings, 2 layers, rest
    flat = [id(p) for g in groups for p in g]
    assert len(flat) == len(set(flat)) == len(list(model.parameters()))
    emb_ids = {id(p) for p in bb.embeddings().parameters()}
    assert {id(p) for p in groups[0]} == emb_ids
    assert model.get_input_embeddings().weight in list(bb.embeddings().parameters())
    head = bb.head()
    if kind == "base":
        assert head is None
    else:
        assert head is not None and any(True for _ in head.parameters())
        enc_ids = {id(p) for p in bb.encoder.parameters()}
        if kind == "classify":  # its own weights, outside the encoder
            assert any(id(p) not in enc_ids for p in head.parameters())


@pytest.mark.parametrize("family", ["bert", "gpt"])
def test_encode_pooling(family, toks):
    model = _model(family, "classify", toks)
    model.eval()
    bb = Backbone(model)
    enc = toks[family](["the cat sat on the mat", "a dog"], padding=True, return_tensors="pt")
    feats = bb.encode(enc["input_ids"], enc["attention_mask"])
    assert feats.shape == (2, 32)
    # The padded row's features must not depend on what sits in its padding.
    alone = toks[family](["a dog"], return_tensors="pt")
    single = bb.encode(alone["input_ids"], alone["attention_mask"])
    torch.testing.assert_close(feats[1], single[0], atol=1e-5, rtol=1e-4)
    for p in ("cls", "mean", "last"):
        assert bb.encode(enc["input_ids"], enc["attention_mask"], pooling=p).shape == (2, 32)


def test_pool_last_handles_left_padding():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])
    assert pool(hidden, mask, "last").flatten().tolist() == [3.0, 6.0]
    assert pool(hidden, mask, "mean").flatten().tolist() == [2.5, 5.0]
    assert pool(hidden, mask, "cls").flatten().tolist() == [0.0, 4.0]


@pytest.mark.parametrize("family", ["bert", "gpt"])
def test_lora_targets_work_with_peft(family, toks):
    model = _model(family, "classify", toks)
    bb = Backbone(model)
    targets = bb.lora_targets()
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=targets,
                                                  task_type="SEQ_CLS"))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable)
    wrapped = Backbone(peft_model)
    assert wrapped.num_layers == 2
    enc = toks[family](["the cat sat"], return_tensors="pt")
    assert wrapped.encode(enc["input_ids"], enc["attention_mask"]).shape == (1, 32)


def test_minilm_backbone():
    from pretune.models.registry import load_tokenizer_for

    spec = ModelConfig(name="builtin:minilm")
    model = load_model(spec, "base", load_tokenizer_for(spec, None))
    bb = Backbone(model)
    assert (bb.num_layers, bb.hidden_size, bb.pooling) == (6, 384, "mean")
    assert bb.head() is None and len(bb.layer_groups()) == 8
