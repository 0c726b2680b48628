"""Shared test fixtures. Tests run on CPU with tiny models and small slices of real data:
a slice of builtin:rotten-tomatoes as CSV files, tokenizers trained on it, and configs for tiny
random BERT/GPT models (hidden 32, one layer)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

from pretune.config import FinetuneConfig, LoopConfig, ModelConfig, TaskConfig
from pretune.data.builtin_tasks import builtin_rows

# Tests never reach the Hugging Face Hub: Hub ids resolve from (temporary) caches only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Two cores: keep intra-op threads modest so parallel helpers don't thrash.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _one_thread(request):
    """Fine-tuning and task tests run tiny models: one intra-op thread is fastest, and much
    faster when helpers share the 2 cores (threads of 32-wide matmuls mostly wait on each
    other). Restored afterwards."""
    if request.node.path.parent.name not in ("finetune", "tasks"):
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


TINY_BERT = ModelConfig(name="bert-tiny", overrides={
    "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 64})
TINY_GPT = ModelConfig(name="gpt-tiny", overrides={
    "n_embd": 32, "n_layer": 1, "n_head": 2, "n_inner": 64})


def rt_slice(n: int) -> list[dict[str, str]]:
    """The first ``n`` fresh/rotten reviews, shortened (keeps tokenization cheap)."""
    rows, text_f, label_f = builtin_rows("rotten-tomatoes")
    return [{"text": r[text_f][:300], "label": r[label_f]} for r in rows[:n]]


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_bert() -> ModelConfig:
    return TINY_BERT


@pytest.fixture(scope="session")
def tiny_gpt() -> ModelConfig:
    return TINY_GPT


@pytest.fixture(scope="session")
def rt_rows() -> list[dict[str, str]]:
    return rt_slice(300)


@pytest.fixture(scope="session")
def rt_csv(tmp_path_factory, rt_rows) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "rt.csv", rt_rows)


@pytest.fixture(scope="session")
def wordpiece_dir(tmp_path_factory, rt_rows) -> Path:
    """A BERT-style WordPiece tokenizer (vocab ~600) trained on the slice."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    words = [r["text"] for r in rt_rows] + ["great terrible it was n/a"] * 5
    tok.train_from_iterator(words, WordPieceTrainer(vocab_size=600, special_tokens=specials))
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


@pytest.fixture(scope="session")
def bpe_dir(tmp_path_factory, rt_rows) -> Path:
    """A GPT-style byte-level BPE tokenizer trained on the slice."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        [r["text"] for r in rt_rows],
        BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                   initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   model_max_length=1024)
    out = tmp_path_factory.mktemp("bpe")
    fast.save_pretrained(out)
    return out


@pytest.fixture()
def make_cfg(tmp_path, rt_csv, wordpiece_dir):
    """FinetuneConfig factory: tiny BERT on the 300-row slice, one short epoch, quiet."""

    def make(**updates) -> FinetuneConfig:
        base = FinetuneConfig(
            name="ft", output_dir=str(tmp_path / "runs"), model=TINY_BERT,
            tokenizer=str(wordpiece_dir),
            task=TaskConfig(path=str(rt_csv), test_size=60, val_fraction=0.2, max_length=48),
            train=LoopConfig(epochs=1, batch_size=16, progress=False, tensorboard=False,
                             log_every=5),
        )
        return base.model_copy(update=updates)

    return make


IMAGE_QUIET = ["train.progress=false", "train.tensorboard=false"]
IMAGE_SMALL = ["data.image_size=16", "data.channels=1"]


@pytest.fixture(scope="session")
def image_configs():
    """(pretrain, finetune) config factories for 16 px grayscale digits, quiet; fine-tuning is
    written as users of `finetune-images` write it: the task is `data`, its kind images."""
    from pretune.config import ImagePretrainConfig, load_config

    def pretrain(out: Path, *overrides: str) -> ImagePretrainConfig:
        return load_config(ImagePretrainConfig, None,
                           [f"output_dir={out}", *IMAGE_QUIET, *IMAGE_SMALL, *overrides])

    def finetune(out: Path, *overrides: str) -> FinetuneConfig:
        return load_config(FinetuneConfig, None, [
            f"output_dir={out}", *IMAGE_QUIET, *IMAGE_SMALL, "data.max_images=500",
            "data.budget=100", "train.epochs=null", "train.max_steps=40", "train.eval_every=20",
            *overrides], defaults={"task": {"kind": "image-classification"}})

    return pretrain, finetune


def read_tb_events(log_dir: Path) -> dict:
    """What a TensorBoard run dir holds, read with TensorBoard's own event reader: scalars
    ``{tag: [(step, value)]}``, the HParams summary's ``hparams`` and its metric tags."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    hparams: dict = {}
    metrics: list[str] = []
    tags = acc.PluginTagToContent("hparams") if _has_plugin(acc, "hparams") else {}
    for tag, content in tags.items():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if tag == "_hparams_/session_start_info":
            for k, v in data.session_start_info.hparams.items():
                kind = v.WhichOneof("kind")
                hparams[k] = getattr(v, kind)
        elif tag == "_hparams_/experiment":
            metrics = [m.name.tag for m in data.experiment.metric_infos]
    return {"scalars": scalars, "hparams": hparams, "hparam_metrics": metrics}


def _has_plugin(acc, name: str) -> bool:
    try:
        acc.PluginTagToContent(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def tb_events():
    return read_tb_events
