"""pretrain(): tiny BERT MLM / GPT CLM end to end on a tiny artifact: falling validation loss,
final HF dir loadable with plain transformers, model card, summary, resume/overwrite rules,
and the one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from pretune.config import LoopConfig, ModelConfig, OptimConfig, PretrainConfig
from pretune.errors import PretuneError
from pretune.train.pretrain import pretrain

# Tiny models (hidden 32, one layer): seconds per test on 2 CPU cores.
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64}
TINY_BERT = ModelConfig(name="bert-tiny", dropout=0.0, overrides=TINY)
TINY_GPT = ModelConfig(name="gpt-tiny", dropout=0.0, overrides=TINY)



def _cfg(tmp_path: Path, artifact: Path, model: ModelConfig, **loop) -> PretrainConfig:
    train = LoopConfig(**{"max_steps": 20, "batch_size": 8, "eval_every": 10, "save_every": 10,
                          "log_every": 5, "progress": False, **loop})
    return PretrainConfig(name="tiny", output_dir=str(tmp_path / "runs"), data=str(artifact),
                          model=model, seq_len=32, optim=OptimConfig(lr=3e-3, warmup_steps=2),
                          train=train, val_batches=2)


def test_bert_mlm_end_to_end(wp_artifact, tmp_path: Path, capsys):
    cfg = _cfg(tmp_path, wp_artifact, TINY_BERT)
    final = pretrain(cfg)
    run = final.parent
    assert final == run / "final"
    model = AutoModelForMaskedLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    enc = tok(["the cat watched the [MASK]."], return_tensors="pt")
    with torch.no_grad():
        assert model(**enc).logits.shape[-1] == len(tok)
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["kind"] == "eval"]
    assert [e["step"] for e in evals] == [10, 20]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["objective"] == "mlm" and summary["steps"] == 20
    assert summary["tokens"] == 20 * 8 * 32
    assert summary["estimated_flops"] == pytest.approx(summary["flops_per_token"] * summary["tokens"])
    # Falling validation loss, well below the uniform-guess loss ln(vocab).
    assert summary["final_val_loss"] == evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert summary["final_val_loss"] < math.log(len(tok)) - 0.5
    assert [c["step"] for c in summary["checkpoints"]] == [10, 20]
    card = (final / "README.md").read_text()
    assert "AutoModelForMaskedLM" in card and "mlm" in card
    assert f'from_pretrained("{final}")' in card and "license: other" in card
    assert f"datasets:\n- {wp_artifact}" in card
    assert tok.model_max_length == 32  # the sequence length it was trained with
    step10 = (run / "checkpoints" / "step-10" / "README.md").read_text()
    assert "| 10 / 2,560 |" in step10 and str(run / "checkpoints" / "step-10") in step10
    assert (run / "checkpoints" / "step-10" / "tokenizer.json").is_file()
    # Existing run without --resume/--overwrite: error; --overwrite replaces it.
    with pytest.raises(PretuneError, match="--resume"):
        pretrain(cfg)
    # --resume of the finished run: a no-op that says so (no extra step, final/ untouched)
    mtime = (final / "model.safetensors").stat().st_mtime_ns
    pretrain(cfg, resume=True)
    assert "already finished at step 20" in capsys.readouterr().out
    assert (final / "model.safetensors").stat().st_mtime_ns == mtime
    assert json.loads((run / "summary.json").read_text())["steps"] == 20
    # --resume with a longer budget continues from step 20.
    longer = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": 25})})
    pretrain(longer, resume=True)
    assert json.loads((run / "summary.json").read_text())["steps"] == 25


def test_gpt_clm_and_continued_pretraining_checks(bpe_artifact, wp_artifact, tmp_path: Path):
    cfg = _cfg(tmp_path, bpe_artifact, TINY_GPT, max_steps=6, eval_every=3, save_every=None)
    final = pretrain(cfg)
    assert isinstance(AutoModelForCausalLM.from_pretrained(final), torch.nn.Module)
    assert json.loads((final.parent / "summary.json").read_text())["objective"] == "clm"
    # Continue pre-training that checkpoint on the same data: its tokenizer matches.
    cont = _cfg(tmp_path, bpe_artifact, ModelConfig(name=str(final)), max_steps=2,
                eval_every=None, save_every=None).model_copy(update={"name": "cont"})
    assert pretrain(cont).is_dir()
    # ... but not on shards made with another tokenizer.
    bad = cont.model_copy(update={"name": "bad", "data": str(wp_artifact)})
    with pytest.raises(PretuneError, match="different tokenizer"):
        pretrain(bad)


def test_errors(wp_artifact, tmp_path: Path):
    with pytest.raises(PretuneError, match="not found"):
        pretrain(_cfg(tmp_path, tmp_path / "nope", TINY_BERT))
    with pytest.raises(PretuneError, match="no checkpoint"):
        pretrain(_cfg(tmp_path, wp_artifact, TINY_BERT), resume=True)
    with pytest.raises(PretuneError, match="cannot train objective"):
        pretrain(_cfg(tmp_path, wp_artifact, TINY_BERT).model_copy(update={"objective": "clm"}))


def test_inline_prepare_config_runs_the_pipeline_first(synthetic_corpus, tmp_path: Path):
    from pretune.config import PrepareConfig

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(synthetic_corpus), encoding="utf-8")
    data = PrepareConfig(
        name="c", sources=[{"path": str(corpus), "txt_mode": "line"}], output_dir=str(tmp_path / "data"),
        tokenizer={"vocab_size": 120, "min_frequency": 1}, val_fraction=0.1, progress=False,
        clean={"near_dedup": False, "exact_dedup": False}, num_workers=1)
    cfg = _cfg(tmp_path, tmp_path, TINY_BERT, max_steps=3, eval_every=None, save_every=None)
    final = pretrain(cfg.model_copy(update={"data": data}))
    summary = json.loads((final.parent / "summary.json").read_text())
    assert summary["steps"] == 3 and Path(summary["artifact"]).parent == tmp_path / "data"


def test_pretraining_reports_to_mlflow_with_its_final_losses(wp_artifact, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = _cfg(tmp_path, wp_artifact, TINY_BERT, max_steps=10, report_to=["mlflow"])
    pretrain(cfg)
    client = MlflowClient(tracking_uri=(tmp_path / "runs" / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("pretune").experiment_id])
    assert run.info.run_name == "tiny" and run.data.params["objective"] == "auto"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/val_loss")] == [10]
    assert run.data.metrics["final/val_loss"] == pytest.approx(
        json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())["final_val_loss"])
