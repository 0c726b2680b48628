"""Hub ids resolve through a real Hugging Face cache layout (models--org--name/snapshots/<rev>,
refs/main) in a temporary HF_HOME: loading by id, by revision, offline failure in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from pretune.config import ModelConfig
from pretune.data.hub import is_hub_id, split_id
from pretune.errors import PretuneError
from pretune.models.registry import load_model, load_tokenizer_for
from pretune.models.start import resolve_start

REV = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(home: Path, repo: str, saved: Path, rev: str = REV) -> Path:
    """The layout huggingface_hub writes: blobs are files, snapshots/<rev>/ and refs/main."""
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / rev
    snap.mkdir(parents=True)
    (root / "blobs").mkdir()
    for f in saved.iterdir():
        blob = root / "blobs" / f"blob-{f.name}"
        shutil.copy(f, blob)
        (snap / f.name).symlink_to(Path("../../blobs") / blob.name)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(rev)
    return snap


@pytest.fixture()
def hub_home(tmp_path, monkeypatch, wordpiece_dir):
    saved = tmp_path / "saved"
    tok = AutoTokenizer.from_pretrained(wordpiece_dir)
    BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64)).save_pretrained(saved)
    tok.save_pretrained(saved)
    home = tmp_path / "hf"
    hub_cache(home, "acme/tiny-bert", saved)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_hub_id_syntax():
    assert is_hub_id("acme/tiny-bert") and is_hub_id("hf:acme/tiny-bert@v1.0")
    assert is_hub_id("bert-base-uncased")
    assert not is_hub_id("./runs/x") and not is_hub_id("/abs/dir") and not is_hub_id("a/b/c")
    assert split_id("hf:acme/x@main") == ("acme/x", "main")


@pytest.mark.parametrize("name", ["acme/tiny-bert", "hf:acme/tiny-bert",
                                  f"acme/tiny-bert@{REV}", "acme/tiny-bert@main"])
def test_cached_hub_id_loads_offline(hub_home, name):
    start = resolve_start(name)
    assert start.path is not None and start.path.name == REV
    assert start.objective == "mlm" and start.has_mlm_head and start.tokenizer_dir == start.path
    spec = ModelConfig(name=name)
    tok = load_tokenizer_for(spec, None, start=start)
    model = load_model(spec, "classify", tok, start=start, num_labels=2)
    assert model.config.num_labels == 2 and model.bert.config.hidden_size == 32


def test_hub_id_as_a_tokenizer_source(hub_home):
    from pretune.data.tokenizer import load_tokenizer

    assert load_tokenizer("acme/tiny-bert").vocab_size > 100


def test_uncached_hub_id_offline_fails_in_one_line(hub_home):
    with pytest.raises(PretuneError) as e:
        resolve_start("acme/not-there")
    msg = str(e.value)
    assert "not in the Hugging Face cache" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "hf download acme/not-there" in msg and "\n" not in msg
    with pytest.raises(PretuneError, match="at revision v9"):
        resolve_start("acme/tiny-bert@v9")  # a revision the cache does not hold
    with pytest.raises(PretuneError, match="not a registry name"):
        resolve_start("bert-huge")  # a bare word: most likely a typo of a registry name


def test_pickle_only_hub_snapshot_is_refused(hub_home, tmp_path):
    saved = tmp_path / "pickled"
    saved.mkdir()
    (saved / "config.json").write_text(json.dumps({"model_type": "bert",
                                                   "architectures": ["BertForMaskedLM"]}))
    (saved / "pytorch_model.bin").write_bytes(b"not loaded")
    hub_cache(hub_home, "acme/pickled", saved)
    with pytest.raises(PretuneError, match="pickle weights are not loaded"):
        resolve_start("acme/pickled")


def test_finetune_by_hub_id(hub_home, make_cfg):
    from pretune.finetune.run import finetune

    cfg = make_cfg(model=ModelConfig(name="acme/tiny-bert"), tokenizer=None)
    res = finetune(cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 0.3})}))
    assert res.steps >= 1 and 0.0 <= res.metrics["accuracy"] <= 1.0
    saved = json.loads((res.out_dir / "metrics.json").read_text())
    assert saved["config"]["model"]["name"] == "acme/tiny-bert"
    assert "base_model: acme/tiny-bert" in (res.out_dir / "model" / "README.md").read_text()


def test_missing_data_files_are_paths_not_hub_ids():
    assert not is_hub_id("data/train.csv") and not is_hub_id("corpus/part.jsonl.gz")
    assert is_hub_id("Qwen/Qwen2.5-0.5B")  # dots in a name are fine
