"""Registry: every registered model builds, runs forward/backward, and round-trips through
save_pretrained -> AutoModel*; directory starts, vocab checks and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from pretune.config import ModelConfig
from pretune.errors import PretuneError
from pretune.models.archs import ARCHS, objective_for
from pretune.models.registry import (
    build_config,
    count_params,
    flops_per_token,
    load_model,
    load_tokenizer_for,
    non_embedding_params,
)
from pretune.models.start import resolve_start

TEXT = [f"the {w} sat on the mat number {i} while it rained" for i in range(50)
        for w in ("cat", "dog", "bird")]
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64}


def wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(TEXT, trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


@pytest.fixture(scope="module")
def wp():
    return wordpiece_tokenizer()


@pytest.fixture(scope="module")
def bpe():
    t = bpe_tokenizer()
    t.pad_token = t.eos_token
    return t


@pytest.mark.parametrize("name", list(ARCHS))
def test_every_arch_config_matches_registry(name, wp, bpe):
    tok = wp if name.startswith("bert") else bpe
    cfg = build_config(name, tok, {}, None)
    a = ARCHS[name]
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (
        a.layers, a.hidden, a.heads)
    assert cfg.vocab_size == len(tok)
    assert cfg._attn_implementation == "sdpa"
    if a.family != "t5":  # T5: relative position buckets, no position table
        assert cfg.max_position_embeddings == (512 if a.family == "bert" else 1024)


@pytest.mark.parametrize("name,kind", [("bert-tiny", "mlm"), ("gpt-tiny", "clm"),
                                       ("bert-mini", "classify"), ("gpt-mini", "classify")])
def test_tiny_models_forward_backward_roundtrip(name, kind, wp, bpe, tmp_path: Path):
    tok = wp if name.startswith("bert") else bpe
    torch.manual_seed(0)
    model = load_model(ModelConfig(name=name, overrides=TINY, dropout=0.0), kind, tok,
                       num_labels=3 if kind == "classify" else None)
    assert next(model.parameters()).dtype == torch.float32
    enc = tok(["the cat sat", "a dog sat on the mat"], padding=True, return_tensors="pt")
    labels = torch.tensor([0, 2]) if kind == "classify" else enc["input_ids"].masked_fill(
        enc["attention_mask"] == 0, -100)
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model.eval()
    again = load_model(ModelConfig(name=str(tmp_path)), kind, tok)
    again.eval()
    with torch.no_grad():
        a = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        b = again(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    torch.testing.assert_close(a, b)
    assert objective_for(again) == ("clm" if name.startswith("gpt") else "mlm")
    if kind == "classify" and name.startswith("gpt"):
        assert again.config.pad_token_id == tok.pad_token_id


def test_plain_encoder_dir_gets_tied_fresh_mlm_head():
    spec = ModelConfig(name="builtin:minilm")
    tok = load_tokenizer_for(spec, None)
    model = load_model(spec, "mlm", tok)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    enc = tok(["the capital of france is [MASK]."], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()


def test_checkpoint_dir_reloads_with_plain_transformers(wp, tmp_path: Path):
    model = load_model(ModelConfig(name="bert-tiny", overrides=TINY), "mlm", wp)
    model.save_pretrained(tmp_path)
    assert isinstance(AutoModelForMaskedLM.from_pretrained(tmp_path), type(model))
    start = resolve_start(str(tmp_path))
    assert (start.path, start.arch, start.modality) == (tmp_path, None, "text")
    assert start.objective == "mlm" and start.has_mlm_head and not start.random_init
    assert resolve_start(f"hf:{tmp_path}").path == tmp_path
    arch = resolve_start("bert-mini")
    assert (arch.arch, arch.family, arch.objective, arch.random_init) == (
        "bert-mini", "bert", "mlm", True)
    assert resolve_start("gpt-tiny").objective == "clm"


def test_errors(wp, bpe, tmp_path: Path):
    with pytest.raises(PretuneError, match="bert-mini"):
        resolve_start("bert-huge")
    with pytest.raises(PretuneError, match="needs a tokenizer"):
        load_model(ModelConfig(name="bert-tiny"), "mlm", None)
    with pytest.raises(PretuneError, match="config.json"):
        resolve_start(str(tmp_path))  # empty dir: not an HF checkpoint
    with pytest.raises(PretuneError, match="not a field"):
        build_config("bert-tiny", wp, {"hiden_size": 32}, None)
    with pytest.raises(PretuneError, match="cannot train objective"):
        load_model(ModelConfig(name="gpt-tiny", overrides=TINY), "mlm", bpe)
    # A tokenizer with more tokens than the model's embedding table: error naming both sizes.
    with pytest.raises(PretuneError, match=rf"{len(bpe)} tokens.*only 50"):
        load_model(ModelConfig(name="gpt-tiny", overrides={**TINY, "vocab_size": 50}), "clm", bpe)
    small = GPT2LMHeadModel(build_config("gpt-tiny", bpe, {**TINY, "vocab_size": 50}, None))
    d = tmp_path / "small"
    small.save_pretrained(d)
    with pytest.raises(PretuneError, match=rf"{len(bpe)} tokens.*only 50"):
        load_model(ModelConfig(name=str(d)), "clm", bpe)
    # A decoder checkpoint cannot be loaded as a masked LM.
    with pytest.raises(PretuneError, match="no mlm variant"):
        load_model(ModelConfig(name=str(d)), "mlm", None)
    assert isinstance(AutoModelForCausalLM.from_pretrained(d), type(small))


def test_image_models_are_routed_to_the_image_commands(wp, tmp_path: Path):
    from pretune.models.vision import build_image_model, save_image_model

    assert resolve_start("resnet-tiny").modality == "image"
    with pytest.raises(PretuneError, match="resnet-tiny is an image model.*finetune-images"):
        resolve_start("resnet-tiny").require("text")
    with pytest.raises(PretuneError, match="vit-mini is an image model"):
        load_model(ModelConfig(name="vit-mini"), "classify", wp)
    path = save_image_model(build_image_model("resnet-tiny", 2, 16, 1), tmp_path / "img", 16, 1,
                            {})
    assert resolve_start(str(path)).modality == "image"
    with pytest.raises(PretuneError, match="is an image model.*modality: image"):
        load_model(ModelConfig(name=str(path)), "classify", wp)
    with pytest.raises(PretuneError, match="bert-mini is a text model"):
        resolve_start("bert-mini").require("image")
    from pretune.config import PretrainConfig
    from pretune.train.pretrain import pretrain

    with pytest.raises(PretuneError, match=r"is an image model; pre-train it with `pretune "
                                           "pretrain-images"):
        pretrain(PretrainConfig(model=ModelConfig(name=str(path)), data=str(tmp_path / "none"),
                                output_dir=str(tmp_path / "runs")))


def test_remote_code_checkpoints_name_the_flag(wp, tmp_path: Path):
    import json

    d = tmp_path / "remote"
    load_model(ModelConfig(name="bert-tiny", overrides={
        "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64}), "classify", wp, num_labels=2).save_pretrained(d)
    config = json.loads((d / "config.json").read_text())
    config.update(model_type="evilbert", auto_map={"AutoConfig": "evil.EvilConfig"})
    (d / "config.json").write_text(json.dumps(config))
    (d / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(PretuneError, match="set model.trust_remote_code=true"):
        load_model(ModelConfig(name=str(d)), "classify", wp, num_labels=2)


def test_arch_start_tokenizer_fallback(wp, tmp_path: Path):
    wp.save_pretrained(tmp_path)
    tok = load_tokenizer_for(ModelConfig(name="bert-tiny"), tmp_path)
    assert len(tok) == len(wp)
    with pytest.raises(PretuneError, match="no tokenizer"):
        load_tokenizer_for(ModelConfig(name="bert-tiny"), None)


def test_param_count_and_flops(wp):
    model = load_model(ModelConfig(name="bert-mini"), "base", wp)
    cfg = model.config
    n_layers = sum(p.numel() for p in model.encoder.layer.parameters())
    assert non_embedding_params(cfg) == n_layers
    assert count_params(model) > n_layers
    assert flops_per_token(cfg, 128) == 6 * n_layers + 12 * 4 * 256 * 128
