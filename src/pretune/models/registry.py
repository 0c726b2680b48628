"""Models by name: a small explicit registry of BERT/GPT sizes, plus any local HF checkpoint.

A *start* is either an architecture name (random init, needs a tokenizer for the vocabulary
and special ids) or a directory holding a Hugging Face checkpoint (``hf:<dir>``,
``builtin:minilm``, or a pretune checkpoint dir). Every model is a plain ``transformers``
model in float32 with SDPA attention, so a saved checkpoint loads without pretune.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    GPT2Config,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES,
)

from pretune.config import ModelConfig
from pretune.data.builtin import builtin_path
from pretune.data.hub import local_dir
from pretune.errors import PretuneError
from pretune.models.archs import ARCHS
from pretune.models.overrides import apply_overrides, quiet_transformers, set_dropout
from pretune.models.start import Start, resolve_start

log = logging.getLogger(__name__)

Head = Literal["mlm", "clm", "seq2seq", "classify", "token", "base"]


_AUTO = {
    "mlm": AutoModelForMaskedLM,
    "clm": AutoModelForCausalLM,
    "seq2seq": AutoModelForSeq2SeqLM,
    "classify": AutoModelForSequenceClassification,
    "token": AutoModelForTokenClassification,
    "base": AutoModel,
}
_SUPPORTED = {
    "mlm": MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    "clm": MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    "seq2seq": MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    "classify": MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    "token": MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES,
}


def build_config(
    name: str, tokenizer: PreTrainedTokenizerBase, overrides: dict[str, Any] | None = None,
    dropout: float | None = None,
) -> PretrainedConfig:
    """HF config for a registry architecture; vocabulary and special ids from ``tokenizer``."""
    if name not in ARCHS:
        raise PretuneError(f"unknown architecture '{name}'; choose one of: {', '.join(ARCHS)}")
    a = ARCHS[name]
    vocab = len(tokenizer)
    if a.family == "bert":
        config: PretrainedConfig = BertConfig(
            vocab_size=vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
            num_attention_heads=a.heads, intermediate_size=a.intermediate,
            max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id or 0,
        )
    elif a.family == "t5":
        eos, pad = _eos_pad(tokenizer, name)
        # Tied embeddings, as T5 v1.0: the decoder output is then scaled by d_model^-0.5, so a
        # random init starts near ln(vocab) loss (untied, T5's std-1 init starts near 70).
        config = T5Config(
            vocab_size=vocab, d_model=a.hidden, d_kv=a.hidden // a.heads, d_ff=a.intermediate,
            num_layers=a.layers, num_decoder_layers=a.layers, num_heads=a.heads,
            feed_forward_proj="gated-gelu", tie_word_embeddings=True, eos_token_id=eos,
            pad_token_id=pad, decoder_start_token_id=pad,
        )
    else:
        eos = tokenizer.eos_token_id
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        config = GPT2Config(
            vocab_size=vocab, n_embd=a.hidden, n_layer=a.layers, n_head=a.heads,
            n_inner=a.intermediate, n_positions=1024, bos_token_id=bos, eos_token_id=eos,
            pad_token_id=pad,
        )
    apply_overrides(config, dict(overrides or {}), name)
    set_dropout(config, dropout)
    if a.family != "t5" and config.hidden_size % config.num_attention_heads:
        raise PretuneError(
            f"model.overrides: hidden_size {config.hidden_size} is not divisible by "
            f"num_attention_heads {config.num_attention_heads}"
        )
    config._attn_implementation = "sdpa"
    return config


def _eos_pad(tokenizer: PreTrainedTokenizerBase, name: str) -> tuple[int, int]:
    """End-of-sequence and padding ids for a generator (pad falls back to eos)."""
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if eos is None:
        raise PretuneError(f"{name} generates text and needs a tokenizer with an end-of-sequence "
                           "token (eos_token or sep_token); use a GPT-style or BERT-style one")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return int(eos), int(pad)


def _has_safetensors(path: Path) -> bool:
    return any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file()


def load_model(
    spec: ModelConfig,
    head: Head,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    start: Start | None = None,
    num_labels: int | None = None,
    problem_type: str | None = None,
    id2label: dict | None = None,
) -> PreTrainedModel:
    """Random init from a registry name (needs ``tokenizer``) or ``from_pretrained`` of a dir,
    with the given ``head`` (mlm / clm / classify / token / base = no head).

    float32, SDPA, safetensors only. A dir without an MLM head loaded for "mlm" gets a new head
    tied to the input embeddings. Tokenizer vocab larger than the embedding is an error.
    ``start`` is ``spec.name`` already resolved (resolved here when not given)."""
    if head not in _AUTO:
        raise PretuneError(f"unknown model head '{head}'; choose one of: {', '.join(_AUTO)}")
    start = (start or resolve_start(spec.name)).require("text")
    extra: dict[str, Any] = {}
    if num_labels is not None:
        extra["num_labels"] = num_labels
    if id2label is not None:
        extra["id2label"] = {int(k): str(v) for k, v in id2label.items()}
        extra["label2id"] = {str(v): int(k) for k, v in id2label.items()}
    if problem_type is not None:
        extra["problem_type"] = problem_type

    if start.arch is not None:
        if tokenizer is None:
            raise PretuneError(
                f"model.name={spec.name} is a random-init architecture and needs a tokenizer "
                "(prepare a corpus first, or set the tokenizer path)"
            )
        config = build_config(start.arch, tokenizer, spec.overrides, spec.dropout)
        family = start.family
        if head in ("mlm", "clm", "seq2seq") and head != start.objective:
            what = {"gpt": "a decoder", "bert": "an encoder", "t5": "an encoder-decoder"}[family]
            raise PretuneError(f"model.name={spec.name} is {what}; it cannot train objective "
                               f"'{head}' (use {start.objective})")
        for key, value in extra.items():
            setattr(config, key, value)
        model = _AUTO[head].from_config(config, dtype=torch.float32)
    else:
        assert start.path is not None
        model = _load_dir(start.path, spec, head, extra)

    if tokenizer is not None:
        emb = model.get_input_embeddings().num_embeddings
        if len(tokenizer) > emb:
            raise PretuneError(
                f"tokenizer has {len(tokenizer)} tokens but model {spec.name} has only {emb} "
                "embeddings; use the tokenizer the model was trained with (or pre-train from "
                "scratch with this tokenizer)"
            )
        if head == "classify" and model.config.pad_token_id is None:
            # GPT-2 classification finds the last non-pad token: it needs pad_token_id.
            pad = tokenizer.pad_token_id
            model.config.pad_token_id = pad if pad is not None else tokenizer.eos_token_id
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def _load_dir(path: Path, spec: ModelConfig, head: Head, extra: dict[str, Any]) -> PreTrainedModel:
    trc = spec.trust_remote_code
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trc)
    except (OSError, ValueError, KeyError) as e:
        if "trust_remote_code" in str(e) and not trc:
            raise PretuneError(
                f"model.name={spec.name}: {path} needs its own Python code (config.json has "
                "auto_map); pretune does not run it unless you trust it: set "
                "model.trust_remote_code=true") from None
        raise PretuneError(
            f"model.name={spec.name}: {path} is not a loadable Hugging Face checkpoint "
            f"({type(e).__name__}: {str(e).splitlines()[0][:120]})"
        ) from None
    mt = config.model_type
    if head in _SUPPORTED and mt not in _SUPPORTED[head] and not trc:
        raise PretuneError(
            f"model.name={spec.name}: {path} holds a '{mt}' model, which has no {head} variant "
            "in transformers; choose a checkpoint of another architecture"
        )
    if not _has_safetensors(path):
        raise PretuneError(
            f"model.name={spec.name}: {path} has no .safetensors weights (pickle weights are not "
            "loaded for safety); convert it with save_pretrained(..., safe_serialization=True)"
        )
    apply_overrides(config, spec.overrides, str(path), pretrained=True)
    for key, value in extra.items():
        setattr(config, key, value)
    set_dropout(config, spec.dropout)
    config._attn_implementation = "sdpa"
    with quiet_transformers():
        model, info = _AUTO[head].from_pretrained(
            path, config=config, dtype=torch.float32, use_safetensors=True,
            trust_remote_code=trc, output_loading_info=True,
            # A checkpoint fine-tuned on another label set: re-initialise its classifier.
            ignore_mismatched_sizes=head in ("classify", "token"),
        )
    missing = info.get("missing_keys", [])
    if missing:
        log.info("%s: %d weights newly initialised (e.g. %s)", path, len(missing), sorted(missing)[0])
    if head == "mlm" and getattr(model.config, "tie_word_embeddings", False):
        # A plain encoder (e.g. MiniLM) gets a fresh MLM head: make sure the decoder is tied.
        out, inp = model.get_output_embeddings(), model.get_input_embeddings()
        if out is not None and out.weight is not inp.weight:
            model.tie_weights()
    return model


def load_tokenizer_for(spec: ModelConfig, fallback: str | Path | None, *,
                       start: Start | None = None) -> PreTrainedTokenizerBase:
    """A dir start brings its own tokenizer; an arch start uses ``fallback`` (a tokenizer dir)."""
    start = (start or resolve_start(spec.name)).require("text")
    source: Path | None = start.tokenizer_dir
    if source is None and fallback is not None:
        fb = str(fallback)
        source = builtin_path(fb) if fb.startswith("builtin:") else local_dir(fb, "tokenizer")
    if source is None:
        raise PretuneError(
            f"model.name={spec.name} has no tokenizer; give a tokenizer directory (e.g. the "
            "<artifact>/tokenizer of a prepared corpus)"
        )
    if not source.is_dir():
        raise PretuneError(f"tokenizer directory {source} not found")
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as e:
        raise PretuneError(f"cannot load a tokenizer from {source}: {str(e).splitlines()[0][:160]}") from None
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token  # GPT-style: pad with <|endoftext|> (masked out anyway)
    return tok


def count_params(model: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def _intermediate(config: PretrainedConfig) -> int:
    inner = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
    return int(inner or 4 * config.hidden_size)


def non_embedding_params(config: PretrainedConfig) -> int:
    """Transformer-block parameters: attention (4 d^2 + 4 d), MLP (2 d i + i + d), 2 LayerNorms."""
    d, n_layers, i = config.hidden_size, config.num_hidden_layers, _intermediate(config)
    per_layer = (4 * d * d + 4 * d) + (2 * d * i + i + d) + 4 * d
    return n_layers * per_layer


def flops_per_token(config: PretrainedConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 N + 12 L d T (N = non-embedding params; PaLM appendix B)."""
    d, n_layers = config.hidden_size, config.num_hidden_layers
    return float(6 * non_embedding_params(config) + 12 * n_layers * d * seq_len)


def training_flops(model: Any, tokens: int, seq_len: int | None) -> float | None:
    """≈ FLOPs of training a text transformer on ``tokens``: ``flops_per_token`` x tokens — an
    upper bound for strategies that freeze weights (no weight gradients there). None without
    tokens or a transformer config (a PEFT model forwards ``config`` to its base's)."""
    config = getattr(model, "config", None)
    if not tokens or config is None:
        return None
    try:
        return float(flops_per_token(config, int(seq_len or 128)) * tokens)
    except (AttributeError, TypeError, KeyError):
        return None
