"""Fixtures for sweep tests: 200 rows of builtin:rotten-tomatoes as CSV, a WordPiece tokenizer
trained on them, and a tiny random BERT (hidden 32, one layer) fine-tuned for one short epoch."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pretune.config import FinetuneConfig, LoopConfig, ModelConfig, SweepConfig, TaskConfig
from pretune.data.labeled import _builtin_rows

TINY_BERT = ModelConfig(name="bert-tiny", overrides={
    "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 64})


@pytest.fixture(scope="session")
def rt_rows() -> list[dict[str, str]]:
    rows, text_f, label_f = _builtin_rows("rotten-tomatoes")
    return [{"text": r[text_f][:200], "label": r[label_f]} for r in rows[:200]]


@pytest.fixture(scope="session")
def rt_csv(tmp_path_factory, rt_rows) -> Path:
    path = tmp_path_factory.mktemp("data") / "rt.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(rt_rows)
    return path


@pytest.fixture(scope="session")
def wordpiece_dir(tmp_path_factory, rt_rows) -> Path:
    """A BERT-style WordPiece tokenizer (vocab ~500) trained on the slice."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator([r["text"] for r in rt_rows],
                            WordPieceTrainer(vocab_size=500, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)
    out = tmp_path_factory.mktemp("wordpiece")
    fast.save_pretrained(out)
    return out


@pytest.fixture()
def base_cfg(tmp_path, rt_csv, wordpiece_dir) -> FinetuneConfig:
    """Tiny BERT on the 200-row slice (120 train / 40 val / 40 test), one epoch, quiet."""
    return FinetuneConfig(
        name="ft", output_dir=str(tmp_path / "ft-runs"), model=TINY_BERT,
        tokenizer=str(wordpiece_dir), save_model=False,
        task=TaskConfig(path=str(rt_csv), test_size=40, val_fraction=0.25, max_length=32),
        train=LoopConfig(epochs=1, batch_size=16, progress=False, tensorboard=False,
                         log_every=5),
    )


@pytest.fixture()
def make_sweep(tmp_path, base_cfg):
    """SweepConfig factory over ``base_cfg`` writing to tmp_path/runs/<name>."""

    def make(**kw) -> SweepConfig:
        data = {"name": "sw", "output_dir": str(tmp_path / "runs"),
                "base": base_cfg.model_dump(mode="json"),
                "space": {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}}}
        data.update(kw)
        return SweepConfig.model_validate(data)

    return make
