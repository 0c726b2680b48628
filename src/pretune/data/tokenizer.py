"""Train or load tokenizers (HF ``tokenizers``), saved as plain HF tokenizer directories.

Three kinds:
- ``wordpiece``: BERT-style (BertNormalizer, BertPreTokenizer, ``[CLS] $A [SEP]``).
- ``bpe``: GPT-style byte-level BPE (``<|endoftext|>`` is bos/eos/unk, ``<|pad|>``), no template.
- ``unigram``: SentencePiece-style pieces with the BERT specials and template (so it can do MLM).

A saved directory loads with ``transformers.AutoTokenizer.from_pretrained(dir)``, no pretune code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from pretune.config import TokenizerConfig
from pretune.data.builtin import builtin_path, is_builtin
from pretune.data.hub import local_dir
from pretune.errors import PretuneError

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4
GPT_SPECIALS = ["<|endoftext|>", "<|pad|>"]  # ids 0, 1
# Smallest useful vocabularies: the specials plus a minimal alphabet (byte-level BPE needs
# all 256 bytes; WordPiece/Unigram need room for the characters of ordinary text).
MIN_ALPHABET = {"wordpiece": 64, "unigram": 64, "bpe": 256}


def min_vocab_size(kind: str) -> int:
    return MIN_ALPHABET[kind] + len(GPT_SPECIALS if kind == "bpe" else BERT_SPECIALS)


def _bert_normalizer(lowercase: bool) -> normalizers.Normalizer:
    # strip_accents=None follows `lowercase`, like BERT uncased/cased.
    return normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )


def _bert_template() -> processors.TemplateProcessing:
    cls_id, sep_id = BERT_SPECIALS.index("[CLS]"), BERT_SPECIALS.index("[SEP]")
    return processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )


def build_untrained(cfg: TokenizerConfig) -> tuple[Tokenizer, trainers.Trainer]:
    """The empty tokenizer pipeline and its trainer for ``cfg.kind``."""
    if cfg.vocab_size < min_vocab_size(cfg.kind):
        raise PretuneError(
            f"tokenizer.vocab_size={cfg.vocab_size} is too small for a {cfg.kind} tokenizer: it "
            f"needs the special tokens plus a minimal alphabet (>= {min_vocab_size(cfg.kind)}); "
            f"raise tokenizer.vocab_size (thousands for real use)"
        )
    if cfg.kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
        tok.normalizer = _bert_normalizer(cfg.lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.post_processor = _bert_template()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(
            vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
            special_tokens=BERT_SPECIALS, continuing_subword_prefix="##", show_progress=False,
        )
    elif cfg.kind == "bpe":
        tok = Tokenizer(models.BPE())  # byte-level: every byte is in the vocab, no unk needed
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=GPT_SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
    elif cfg.kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = _bert_normalizer(cfg.lowercase)
        # Metaspace keeps word boundaries as "▁" so decoding restores the spaces.
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.post_processor = _bert_template()
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(
            vocab_size=cfg.vocab_size, special_tokens=BERT_SPECIALS, unk_token="[UNK]",
            show_progress=False,
        )
    else:  # pragma: no cover - pydantic restricts kind
        raise PretuneError(f"unknown tokenizer.kind '{cfg.kind}'")
    return tok, trainer


def wrap_fast(tok: Tokenizer, kind: str, model_max_length: int) -> PreTrainedTokenizerFast:
    """Wrap a raw tokenizer as a transformers fast tokenizer with its special tokens set."""
    if kind == "bpe":
        specials = dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                        unk_token="<|endoftext|>", pad_token="<|pad|>")
    else:
        # token_type_ids: BERT-style models take segment ids for sentence pairs.
        specials = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                        sep_token="[SEP]", mask_token="[MASK]",
                        model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=model_max_length,
        # Byte-level decoding is exact; HF's "clean up" would alter " ," and " 's".
        clean_up_tokenization_spaces=False, **specials,
    )


def _batches(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def continuation_alphabet(tok: Tokenizer, texts: Iterable[str], prefix: str = "##") -> list[str]:
    """The ``##c`` tokens the WordPiece trainer will create: every character after the first
    of a pre-tokenized word, sorted."""
    chars: set[str] = set()
    for text in texts:
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)):
            chars.update(word[1:])
    return [prefix + c for c in sorted(chars)]


def _deterministic_wordpiece(tok: Tokenizer, cfg: TokenizerConfig, texts: Iterable[str]
                             ) -> tuple[trainers.Trainer, list[str]]:
    """The Rust WordPiece trainer numbers the ``##c`` tokens in hash-map order, which is
    random per process, and breaks ties between equally frequent merges by those numbers: the
    same corpus gave another vocabulary in every run. Registering them up front, sorted, as
    trainer specials fixes their ids (they are made ordinary tokens again afterwards)."""
    pinned = continuation_alphabet(tok, texts)
    trainer = trainers.WordPieceTrainer(
        vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
        special_tokens=BERT_SPECIALS + pinned, continuing_subword_prefix="##",
        show_progress=False)
    return trainer, pinned


def _unpin(tok: Tokenizer, pinned: list[str]) -> Tokenizer:
    """The pinned ``##c`` tokens back as ordinary vocabulary (not added special tokens)."""
    drop = set(pinned)
    data = json.loads(tok.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in drop]
    return Tokenizer.from_str(json.dumps(data))


def _rounded_scores(tok: Tokenizer, digits: int = 9) -> Tokenizer:
    """Unigram piece scores rounded and ties ordered: the trainer sums scores in hash-map
    order, so their last bits (and the order of equal ones) differed between processes."""
    data = json.loads(tok.to_str())
    vocab = [[piece, round(score, digits)] for piece, score in data["model"]["vocab"]]
    n = len(BERT_SPECIALS)  # ids 0..4 stay; equal scores are ordered by piece, not by hash
    data["model"]["vocab"] = vocab[:n] + sorted(vocab[n:], key=lambda v: (-v[1], v[0]))
    return Tokenizer.from_str(json.dumps(data))


def train_tokenizer(texts: Iterable[str] | Callable[[], Iterable[str]], cfg: TokenizerConfig,
                    out_dir: Path) -> PreTrainedTokenizerFast:
    """Train a ``cfg.kind`` tokenizer on ``texts`` and save it to ``out_dir``; the same texts
    give the same tokenizer in every process. ``texts``: a sequence, or a function returning a
    fresh stream (WordPiece reads the corpus twice)."""
    tok, trainer = build_untrained(cfg)
    stream = texts if callable(texts) else (lambda: texts)
    pinned: list[str] = []
    if cfg.kind == "wordpiece":
        if not callable(texts) and iter(texts) is texts:  # a one-shot iterator: keep it
            texts = list(texts)
            stream = lambda: texts  # noqa: E731
        trainer, pinned = _deterministic_wordpiece(tok, cfg, stream())
    try:
        # Batches let the Rust trainer count words in parallel.
        tok.train_from_iterator(_batches(stream()), trainer=trainer)
    except Exception as e:  # the Rust trainer reports e.g. "vocabulary is not large enough"
        raise PretuneError(
            f"training the {cfg.kind} tokenizer failed ({str(e).splitlines()[0]}); "
            f"check tokenizer.vocab_size={cfg.vocab_size} against the corpus size"
        ) from None
    if tok.get_vocab_size() <= len(GPT_SPECIALS if cfg.kind == "bpe" else BERT_SPECIALS) \
            + len(pinned):
        raise PretuneError("the tokenizer learned no vocabulary: the corpus is empty")
    if pinned:
        tok = _unpin(tok, pinned)
    if cfg.kind == "unigram":
        tok = _rounded_scores(tok)
    fast = wrap_fast(tok, cfg.kind, cfg.model_max_length)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast


def stamp_model_max_length(path: Path, length: int | None) -> None:
    """Set a saved tokenizer's ``model_max_length`` to the length its model was trained with
    (HF pipelines truncate to it); a dir without a tokenizer config is left alone."""
    cfg_file = Path(path) / "tokenizer_config.json"
    if length is None or not cfg_file.is_file():
        return
    data = json.loads(cfg_file.read_text(encoding="utf-8"))
    data["model_max_length"] = int(length)
    cfg_file.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def resolve_tokenizer_dir(spec: str | Path) -> Path:
    """``builtin:minilm`` / ``hf:<dir>`` / a dir / a prepared artifact dir -> tokenizer dir."""
    s = str(spec)
    if is_builtin(s):
        return builtin_path(s)
    path = local_dir(s, "tokenizer")  # a dir, or a Hub id's snapshot in the HF cache
    if (path / "tokenizer" / "tokenizer.json").is_file() or (path / "tokenizer" / "tokenizer_config.json").is_file():
        return path / "tokenizer"  # a prepared artifact (or a run dir) with a tokenizer/ subdir
    if not path.is_dir():
        raise PretuneError(f"tokenizer '{s}' not found: expected an HF tokenizer directory")
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        raise PretuneError(
            f"{path} is not a tokenizer directory (no tokenizer.json / tokenizer_config.json)"
        )
    return path


def load_tokenizer(spec: str | Path) -> PreTrainedTokenizerFast:
    """Load a fast tokenizer from ``builtin:minilm``, ``hf:<dir>``, a dir or an artifact dir."""
    path = resolve_tokenizer_dir(spec)
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:
        raise PretuneError(f"could not load the tokenizer in {path}: {str(e).splitlines()[0]}") from None
    if not hasattr(tok, "backend_tokenizer"):
        raise PretuneError(f"the tokenizer in {path} has no fast (Rust) version; add a tokenizer.json")
    return tok


def boundary_token_id(tok: PreTrainedTokenizerFast) -> int:
    """Token that ends each packed document: [SEP] for BERT-style, eos for GPT-style."""
    if tok.sep_token_id is not None:
        return int(tok.sep_token_id)
    if tok.eos_token_id is not None:
        return int(tok.eos_token_id)
    raise PretuneError(
        f"tokenizer {tok.name_or_path!r} has neither a sep nor an eos token to separate documents"
    )


def tokenizer_kind(tok: PreTrainedTokenizerFast) -> str:
    """``wordpiece`` / ``bpe`` / ``unigram`` / ``wordlevel`` from the Rust model type."""
    model_type = json.loads(tok.backend_tokenizer.to_str())["model"]["type"]
    return {"WordPiece": "wordpiece", "BPE": "bpe", "Unigram": "unigram"}.get(model_type, model_type.lower())


def special_token_ids(tok: PreTrainedTokenizerFast) -> dict[str, int]:
    """Ids of the special tokens that exist (pad/cls/sep/mask/bos/eos/unk)."""
    out = {}
    for name in ("pad", "cls", "sep", "mask", "bos", "eos", "unk"):
        value = getattr(tok, f"{name}_token_id", None)
        if value is not None:
            out[name] = int(value)
    return out


def raw_encoder(tok: PreTrainedTokenizerFast) -> Tokenizer:
    """A private copy of the Rust tokenizer with truncation and padding off (some saved
    tokenizers, e.g. MiniLM's, enable both, which would silently cut documents)."""
    raw = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    raw.no_truncation()
    raw.no_padding()
    return raw
