"""The pre-training objectives beyond plain MLM/CLM: ELECTRA replaced-token detection,
SimCSE (alone and added to MLM), the word-vector warm start, and higher masking rates. Each:
the loss falls, resume is exact, and the exported model loads with plain transformers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
)

from pretune.config import LoopConfig, ModelConfig, OptimConfig, PretrainConfig
from pretune.data.shards import PackedTokens
from pretune.errors import PretuneError
from pretune.models.registry import flops_per_token
from pretune.models.start import resolve_start
from pretune.train.pretrain import pretrain
from pretune.train.wordvec import cooccurrence, word_vectors

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64}


def _cfg(tmp_path: Path, artifact: Path, *, name: str = "obj", dropout: float = 0.0,
         steps: int = 20, **extra) -> PretrainConfig:
    train = LoopConfig(max_steps=steps, batch_size=8, eval_every=10, save_every=10,
                       log_every=5, progress=False, tensorboard=False)
    return PretrainConfig(name=name, output_dir=str(tmp_path / "runs"), data=str(artifact),
                          model=ModelConfig(name="bert-tiny", dropout=dropout, overrides=TINY),
                          seq_len=32, optim=OptimConfig(lr=3e-3, warmup_steps=2), train=train,
                          val_batches=2, **extra)


def _evals(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["val_loss"] for r in rows if r["kind"] == "eval"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_electra_trains_exports_the_discriminator_and_resumes_exactly(wp_artifact, tmp_path):
    cfg = _cfg(tmp_path, wp_artifact, objective="electra")
    final = pretrain(cfg)
    losses = _evals(final.parent)
    assert losses[-1] < losses[0]
    config = AutoConfig.from_pretrained(final)
    assert config.model_type == "electra" and config.pretune_objective == "electra"
    assert config.pretune_pooling == "mean"
    assert config.hidden_size == 32 and config.embedding_size == 32  # same shape as bert-tiny
    disc = AutoModelForPreTraining.from_pretrained(final)
    assert type(disc).__name__ == "ElectraForPreTraining"
    assert not any(k.startswith("generator") for k in _weights(final))  # exported: discriminator
    clf = AutoModelForSequenceClassification.from_pretrained(final, num_labels=3)
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    assert clf(input_ids=ids).logits.shape == (1, 3)
    assert AutoModel.from_pretrained(final)(input_ids=ids).last_hidden_state.shape == (1, 5, 32)
    assert "AutoModelForPreTraining" in (final / "README.md").read_text()
    start = resolve_start(str(final))  # pretune reads it as an encoder without an MLM head
    assert start.objective == "mlm" and not start.has_mlm_head
    # compute counts the generator too
    summary = json.loads((final.parent / "summary.json").read_text())
    assert summary["flops_per_token"] > flops_per_token(config, 32)
    # the checkpoint carries the generator too (beside the discriminator's HF files)
    step10 = final.parent / "checkpoints" / "step-10"
    assert any(k.startswith("generator.") for k in load_file(str(step10 / "trainable.safetensors")))

    assert_exact_resume(cfg, final, tmp_path)


def assert_exact_resume(cfg: PretrainConfig, final: Path, tmp_path: Path) -> None:
    """Cut the finished run back to its step-10 checkpoint (as a kill would), resume it:
    the exported weights equal the uninterrupted run's bit for bit."""
    cut = tmp_path / f"cut-{cfg.name}"
    shutil.copytree(final.parent, cut / cfg.name)
    shutil.rmtree(cut / cfg.name / "checkpoints" / "step-20")
    shutil.rmtree(cut / cfg.name / "final")
    (cut / cfg.name / "checkpoints" / "latest").write_text("step-10\n")
    resumed = pretrain(cfg.model_copy(update={"output_dir": str(cut)}), resume=True)
    a, b = _weights(final), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.parametrize("extra", [
    {"objective": "simcse", "simcse_window": 8},
    {"simcse_weight": 0.5, "simcse_window": 8, "embedding_init": "wordvec",
     "mlm_probability": 0.4},
], ids=["simcse", "wordvec+mlm40+simcse"])
def test_resume_is_exact(wp_artifact, tmp_path, extra):
    cfg = _cfg(tmp_path, wp_artifact, name="r", dropout=0.1, **extra)
    assert_exact_resume(cfg, pretrain(cfg), tmp_path)


def test_simcse_alone_and_added_to_mlm(wp_artifact, tmp_path):
    final = pretrain(_cfg(tmp_path, wp_artifact, name="simcse", objective="simcse",
                          dropout=0.1, simcse_window=8, simcse_windows=2))
    # validation runs in eval mode (no dropout): both views agree, the loss is the uniformity
    # part alone; it must fall as the spans spread apart
    losses = _evals(final.parent)
    assert losses[-1] < losses[0]
    assert AutoConfig.from_pretrained(final).pretune_objective == "simcse"
    assert AutoModelForMaskedLM.from_pretrained(final) is not None

    both = pretrain(_cfg(tmp_path, wp_artifact, name="mlm-simcse", dropout=0.1,
                         simcse_weight=0.5, simcse_window=8))
    mlm = pretrain(_cfg(tmp_path, wp_artifact, name="mlm", dropout=0.1))
    a, b = _evals(both.parent), _evals(mlm.parent)
    assert a[-1] < a[0] and a != b  # the contrastive term changes the trajectory


def test_simcse_errors(wp_artifact, tmp_path, capsys):
    with pytest.raises(PretuneError, match="simcse_window x simcse_windows"):
        pretrain(_cfg(tmp_path, wp_artifact, name="big", objective="simcse", dropout=0.1,
                      simcse_window=16, simcse_windows=4))
    with pytest.raises(PretuneError, match="encoder"):
        pretrain(_cfg(tmp_path, wp_artifact, name="gpt", objective="simcse").model_copy(
            update={"model": ModelConfig(name="gpt-tiny", overrides=TINY)}))
    pretrain(_cfg(tmp_path, wp_artifact, name="nodrop", objective="simcse", dropout=0.0,
                  simcse_window=8, steps=2))
    assert "dropout" in capsys.readouterr().err


def test_electra_needs_a_registry_encoder(wp_artifact, tmp_path):
    final = pretrain(_cfg(tmp_path, wp_artifact, name="base", steps=2))
    cfg = _cfg(tmp_path, wp_artifact, name="e", objective="electra")
    with pytest.raises(PretuneError, match="registry encoder"):
        pretrain(cfg.model_copy(update={"model": ModelConfig(name=str(final))}))


def test_word_vectors_capture_cooccurrence():
    # two "topics": tokens 4-7 always together, tokens 8-11 always together
    rng = np.random.default_rng(0)
    docs = [rng.choice([4, 5, 6, 7] if i % 2 else [8, 9, 10, 11], size=20) for i in range(400)]
    tokens = np.concatenate([np.r_[d, 1] for d in docs])  # 1 = a separator, skipped
    counts = cooccurrence(tokens, 12, window=3, skip_ids=(1,))
    dense = counts.to_dense()
    torch.testing.assert_close(dense, dense.T)
    assert dense[1].sum() == 0
    vectors, seen = word_vectors(tokens, 12, 4, window=3, skip_ids=(1,))
    assert seen[4:].all() and not seen[:4].any()
    v = torch.nn.functional.normalize(vectors, dim=1)
    same, other = float(v[4] @ v[5]), float(v[4] @ v[9])
    assert same > 0.9 and same - other > 0.5


def test_wordvec_objective_and_warm_start(wp_artifact, tmp_path, capsys):
    final = pretrain(_cfg(tmp_path, wp_artifact, name="wv", objective="wordvec"))
    summary = json.loads((final.parent / "summary.json").read_text())
    assert summary["steps"] == 0 and summary["objective"] == "wordvec"
    assert summary["flops"] == 0 and summary["seconds"] > 0
    assert summary["tokens"] == len(PackedTokens(wp_artifact, "train"))
    emb = AutoModelForMaskedLM.from_pretrained(final).get_input_embeddings().weight.detach()
    tokens = PackedTokens(wp_artifact, "train").tokens
    vectors, seen = word_vectors(tokens, emb.shape[0], emb.shape[1], skip_ids=tuple(range(5)))
    # the exported rows are the corpus vectors (same directions), at the init scale
    cos = torch.nn.functional.cosine_similarity(emb[seen], vectors[seen], dim=1)
    assert float(cos.min()) > 0.999
    assert abs(float(emb[seen].std()) - 0.02) < 0.005
    assert "word vectors" in capsys.readouterr().out
    # as a warm start: MLM from those embeddings
    warm = pretrain(_cfg(tmp_path, wp_artifact, name="warm", embedding_init="wordvec"))
    losses = _evals(warm.parent)
    assert losses[-1] < losses[0]
    with pytest.raises(PretuneError, match="random-init"):
        pretrain(_cfg(tmp_path, wp_artifact, name="wv2", objective="wordvec").model_copy(
            update={"model": ModelConfig(name=str(final))}))


def test_high_masking_rate_masks_more(wp_artifact, tmp_path):
    from transformers import AutoTokenizer

    from pretune.train.objectives import BlockBatches, MaskingSpec

    tok = AutoTokenizer.from_pretrained(wp_artifact / "tokenizer")
    tokens = PackedTokens(wp_artifact, "train").tokens
    rates = {}
    for p in (0.15, 0.4):
        spec = MaskingSpec.from_tokenizer(tok, p)
        batch = BlockBatches(tokens, "mlm", 32, 8, masking=spec, cls_id=tok.cls_token_id).fixed(4)
        labels = torch.cat([b["labels"] for b in batch])
        rates[p] = float((labels != -100).float().mean())
    assert abs(rates[0.15] - 0.15) < 0.04 and abs(rates[0.4] - 0.4) < 0.05
    final = pretrain(_cfg(tmp_path, wp_artifact, name="m40", mlm_probability=0.4, steps=10))
    assert AutoConfig.from_pretrained(final).pretune_objective == "mlm"
