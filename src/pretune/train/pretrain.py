"""``pretune pretrain``: masked-LM or causal-LM pre-training on packed shards.

From scratch (a registry architecture, vocabulary from the artifact's tokenizer) or continued
pre-training of a local HF checkpoint (then the data must be tokenized with the model's own
tokenizer). Output ``runs/<name>/``: ``checkpoints/step-N/`` and ``final/`` (HF dirs with the
tokenizer and a model card), ``metrics.jsonl``, TensorBoard events and ``summary.json``.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pretune.config import PrepareConfig, PretrainConfig, dump_yaml
from pretune.data.cjk import has_cjk
from pretune.data.pipeline import prepare
from pretune.data.shards import PackedTokens
from pretune.data.tokenizer import stamp_model_max_length
from pretune.errors import PretuneError
from pretune.models.card import lineage, model_card
from pretune.models.registry import (
    build_config,
    count_params,
    flops_per_token,
    load_model,
    load_tokenizer_for,
)
from pretune.models.start import Start, resolve_start
from pretune.train import checkpoint as ckpt
from pretune.train.electra import ElectraPair, check_electra_start, electra_configs
from pretune.train.loop import Evaluation, fit
from pretune.train.objectives import BlockBatches, MaskingSpec, recipe
from pretune.train.rundir import mark_run, remove_run, run_lock
from pretune.train.runtime import default_save, distributed
from pretune.train.state import FitResult
from pretune.train.trackers import RunInfo, Trackers, run_trackers
from pretune.train.wordvec import init_embeddings, word_vectors

_AUTO_CLASS = {"mlm": "AutoModelForMaskedLM", "simcse": "AutoModelForMaskedLM",
               "wordvec": "AutoModelForMaskedLM", "clm": "AutoModelForCausalLM",
               "electra": "AutoModelForPreTraining"}
_OBJECTIVE_WORDS = {
    "electra": "ELECTRA replaced-token detection; this is the discriminator",
    "simcse": "unsupervised SimCSE, a contrastive sentence objective",
    "wordvec": "corpus word vectors (PPMI + SVD) in the embeddings; the transformer is "
               "untrained",
}
POOLING_NOTE = ("Sentence features: mean-pool `last_hidden_state` over the real tokens; the "
                "[CLS] pooler was never trained (`config.pretune_pooling` says so too).")


def _artifact(data: str | PrepareConfig) -> Path:
    if isinstance(data, PrepareConfig):
        return Path(prepare(data))  # cached: a second call reuses the artifact
    path = Path(data).expanduser()
    if not path.is_dir():
        raise PretuneError(f"data={data}: shard directory not found; run `pretune prepare` first")
    return path


def _check_same_tokenizer(model_tok: Any, data_tok_dir: Path, model_name: str) -> None:
    """Continued pre-training: the shards must hold ids of the model's own tokenizer."""
    from transformers import AutoTokenizer

    data_tok = AutoTokenizer.from_pretrained(data_tok_dir)
    if data_tok.get_vocab() != model_tok.get_vocab():
        raise PretuneError(
            f"the data in {data_tok_dir.parent} was tokenized with a different tokenizer "
            f"({len(data_tok)} tokens) than model {model_name} ({len(model_tok)} tokens); prepare "
            f"the corpus with tokenizer.path={model_name}"
        )


def pretrain_card(*, name: str, corpus: str, objective: str, model: nn.Module, steps: int,
                  tokens: int, train_loss: float | None, val_loss: float | None, path: Path,
                  base: tuple[str | None, str | None] = (None, None),
                  seq_len: int | None = None) -> str:
    """The card of a pre-trained dir (``path``: where it ends up); ``base``: the start's
    (Hub id, license) when it continued a public checkpoint."""
    fmt = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
    ppl = "n/a" if val_loss is None else f"{math.exp(min(val_loss, 50)):.2f}"
    cfg = model.config
    return model_card(
        title=name, tags=("pretune", objective), path=path, base_model=base[0], license=base[1],
        datasets=[c.strip() for c in corpus.split(",")],
        summary=f"Pre-trained with pretune "
                f"({_OBJECTIVE_WORDS.get(objective, objective.upper() + ' objective')})"
                + (f"; sequence length {seq_len} (the tokenizer's model_max_length)."
                   if seq_len else "."),
        facts=[("architecture", f"{cfg.model_type}, {cfg.num_hidden_layers} layers, hidden "
                                f"{cfg.hidden_size}, {count_params(model):,} parameters"),
               ("corpus", corpus), ("objective", objective),
               ("steps / tokens", f"{steps:,} / {tokens:,}"),
               ("final train loss", fmt(train_loss)),
               ("final validation loss (perplexity)", f"{fmt(val_loss)} ({ppl})")
               if objective in ("mlm", "clm") else ("final validation loss", fmt(val_loss))],
        auto_class=_AUTO_CLASS.get(objective, "AutoModel"),
        footer="" if objective == "clm" else POOLING_NOTE)


def _objective(cfg: PretrainConfig, start: Start) -> str:
    """The objective to train, checked against the start: the LM objectives need their family,
    ELECTRA and the word-vector warm start a random-init architecture."""
    objective = start.objective if cfg.objective == "auto" else cfg.objective
    if objective is None or objective == "seq2seq":
        raise PretuneError(f"model.name={cfg.model.name} ({start.model_type or start.arch}) "
                           "is not pre-trained by pretune (masked or causal LM only); choose an "
                           "encoder (bert-*) or a decoder (gpt-*), or fine-tune it directly")
    if objective in ("electra", "simcse") and start.objective != "mlm":
        raise PretuneError(f"objective={objective} trains an encoder; model.name={cfg.model.name}"
                           " is a decoder: choose a bert-* architecture or objective=clm")
    if objective == "electra":
        check_electra_start(start.random_init, start.family, cfg.model.name)
    if (objective == "wordvec" or cfg.embedding_init == "wordvec") and not start.random_init:
        raise PretuneError(f"word vectors initialise a random-init architecture; model.name="
                           f"{cfg.model.name} already has trained embeddings: drop "
                           "embedding_init=wordvec / objective=wordvec, or pick a bert-*/gpt-*")
    return objective


def _build_model(cfg: PretrainConfig, objective: str, start: Start, tokenizer) -> nn.Module:
    if objective == "electra":
        bert = build_config(start.arch, tokenizer, cfg.model.overrides, cfg.model.dropout)
        return ElectraPair(*electra_configs(bert, cfg.electra_generator_size))
    # mlm / clm name their head (a mismatch with the architecture fails in load_model);
    # simcse and wordvec keep the architecture's own LM head
    head = objective if objective in ("mlm", "clm") else (start.objective or "mlm")
    return load_model(cfg.model, head, tokenizer, start=start)


def _warm_start(cfg: PretrainConfig, model: nn.Module, tokenizer, tokens) -> float:
    """Corpus word vectors into ``model``'s embeddings; returns the seconds it took."""
    t0 = time.perf_counter()
    emb = model.get_input_embeddings()
    vectors, seen = word_vectors(tokens, emb.num_embeddings, emb.embedding_dim,
                                 window=cfg.wordvec_window,
                                 skip_ids=tuple(tokenizer.all_special_ids), seed=cfg.train.seed)
    rows = init_embeddings(emb, vectors, seen, float(model.config.initializer_range))
    print(f"word vectors: {rows:,} of {emb.num_embeddings:,} embeddings from {len(tokens):,} "
          f"corpus tokens (PPMI + SVD, window {cfg.wordvec_window}) in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    return time.perf_counter() - t0


def _save_model(m: nn.Module, path: Path, objective: str, tokenizer, seq_len: int) -> None:
    """The HF dir of a pre-trained model (ELECTRA: the discriminator; its generator goes
    beside it in checkpoints, not in it), with config.json recording how the model was made
    and how to pool it, and the tokenizer (its model_max_length: the trained ``seq_len``)."""
    m = getattr(m, "discriminator", m)
    m.config.pretune_objective = objective
    m.config.pretune_pooling = "last" if objective == "clm" else "mean"
    default_save(m, path)
    tokenizer.save_pretrained(path)
    stamp_model_max_length(path, seq_len)


def _corpus(cfg: PretrainConfig) -> str:
    return str(cfg.data) if isinstance(cfg.data, str) else ", ".join(s.path for s in cfg.data.sources)


def _write_wordvec(cfg: PretrainConfig, run_dir: Path, model: nn.Module, tokenizer,
                   artifact: Path, train_tokens: PackedTokens, seconds: float,
                   base: tuple[str | None, str | None]) -> Path:
    """objective=wordvec: the architecture with its corpus word vectors, no training steps."""
    if distributed()[0] != 0:
        return run_dir / "final"
    mark_run(run_dir)
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    def save(m: nn.Module, path: Path) -> None:
        _save_model(m, path, "wordvec", tokenizer, cfg.seq_len)

    result = FitResult(steps=0, tokens=len(train_tokens), seconds=seconds, stopped_reason="wordvec")
    final = run_dir / "final"
    _write_final(final, model, save, result, cfg, "wordvec", _corpus(cfg), artifact, seconds,
                 None, None, base=base)
    print(f"word vectors from {len(train_tokens):,} tokens into {cfg.model.name}; model: {final}")
    return final


def pretrain(cfg: PretrainConfig, resume: bool = False, overwrite: bool = False,
             run_info: RunInfo | None = None) -> Path:
    """Pre-train ``cfg.model`` on ``cfg.data``; returns ``runs/<name>/final``. ``run_info``:
    how the trackers name the run (a study's phase)."""
    run_dir = Path(cfg.output_dir) / cfg.name
    # rank 0 holds the run; the other torchrun ranks train into it with rank 0
    if distributed()[0] != 0:
        return _pretrain(cfg, run_dir, resume, overwrite, None)
    trackers = run_trackers(cfg, run_dir, run_info)
    with run_lock(run_dir), contextlib.closing(trackers):  # finished by _pretrain on success
        return _pretrain(cfg, run_dir, resume, overwrite, trackers)


def _pretrain(cfg: PretrainConfig, run_dir: Path, resume: bool, overwrite: bool,
              trackers: Trackers | None) -> Path:
    rank, world, _ = distributed()
    # Rank 0 decides about the run dir (the others would see the dir rank 0 has just made).
    if rank == 0 and run_dir.exists() and not resume and not overwrite \
            and any(run_dir.iterdir()):
        raise PretuneError(
            f"{run_dir} already exists; pass --resume to continue it or --overwrite to replace it")
    if resume and ckpt.latest_checkpoint(run_dir / "checkpoints") is None:
        raise PretuneError(f"--resume: no checkpoint under {run_dir / 'checkpoints'} to resume from")
    if overwrite and not resume and rank == 0:
        remove_run(run_dir)

    start = resolve_start(cfg.model.name)  # before any data work: a wrong model fails now
    if start.modality == "image":
        raise PretuneError(f"model.name={cfg.model.name} is an image model; pre-train it with "
                           f"`pretune pretrain-images model.name={cfg.model.name}`, or choose "
                           "a text architecture (bert-*, gpt-*)")
    objective = _objective(cfg, start.require("text"))
    artifact = _artifact(cfg.data)
    train_tokens = PackedTokens(artifact, "train")
    val_tokens = PackedTokens(artifact, "val")
    tok_dir = artifact / "tokenizer"
    if not tok_dir.is_dir():
        raise PretuneError(f"{artifact} has no tokenizer/ directory; re-run `pretune prepare`")
    start = start.require("text")
    tokenizer = load_tokenizer_for(cfg.model, tok_dir, start=start)
    if not start.random_init:
        _check_same_tokenizer(tokenizer, tok_dir, cfg.model.name)

    torch.manual_seed(cfg.train.seed)  # model init
    model = _build_model(cfg, objective, start, tokenizer)
    if cfg.seq_len > model.config.max_position_embeddings:
        raise PretuneError(
            f"seq_len={cfg.seq_len} exceeds the model's {model.config.max_position_embeddings} "
            "positions; lower seq_len")
    if cfg.simcse_weight > 0 or objective == "simcse":
        dropout = getattr(model.config, "hidden_dropout_prob", None)
        if dropout == 0:
            print("note: SimCSE's two views differ only by dropout, and model.dropout=0 turns it "
                  "off: the contrastive loss learns nothing; keep dropout > 0", file=sys.stderr)

    masking = cls_id = None
    lm_blocks = "clm" if objective == "clm" or (objective == "wordvec" and start.objective == "clm") \
        else "mlm"
    if lm_blocks == "mlm":
        masking = MaskingSpec.from_tokenizer(tokenizer, cfg.mlm_probability, cfg.whole_word_mask)
        cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    vector_seconds = 0.0
    if (objective == "wordvec" or cfg.embedding_init == "wordvec") and not resume:
        vector_seconds = _warm_start(cfg, model, tokenizer, train_tokens.tokens)
    parts = recipe(cfg, objective, model, cls_id)
    base = lineage(cfg.model.name, start.path)  # the card's base_model and license
    if objective == "wordvec":
        return _write_wordvec(cfg, run_dir, parts.export, tokenizer, artifact, train_tokens,
                              vector_seconds, base)
    common = dict(masking=masking, cls_id=cls_id, seed=cfg.train.seed)
    if masking is not None and masking.whole_word and train_tokens.word_starts is None \
            and has_cjk(tokenizer.decode(train_tokens.tokens[:2000].tolist())):
        print("note: whole_word_mask on Chinese text whose artifact has no word boundaries masks "
              "single characters; prepare it with word_boundaries=auto for whole-word masking",
              file=sys.stderr)
    batches = BlockBatches(train_tokens.tokens, lm_blocks, cfg.seq_len, cfg.train.batch_size,
                           rank=rank, world_size=world, word_starts=train_tokens.word_starts,
                           **common)
    val: list[dict] = []
    if len(val_tokens) >= cfg.seq_len * cfg.train.batch_size:
        val = BlockBatches(val_tokens.tokens, lm_blocks, cfg.seq_len, cfg.train.batch_size,
                           shuffle=False, name="val", word_starts=val_tokens.word_starts,
                           **common).fixed(cfg.val_batches)
    last: dict[str, float | None] = {"val_loss": None}

    def evaluate(m: nn.Module) -> dict[str, float]:
        device = next(m.parameters()).device
        losses = [parts.val_loss(m, {k: v.to(device) for k, v in b.items()}, i).float()
                  for i, b in enumerate(val)]
        value = float(torch.stack(losses).mean())
        last["val_loss"] = value
        return {"val_loss": value, "val_ppl": math.exp(min(value, 50.0))}

    corpus = _corpus(cfg)

    def last_train_loss() -> float | None:
        path = run_dir / "metrics.jsonl"
        if not path.is_file():
            return None
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        train = [r for r in rows if r.get("kind") == "train"]
        return train[-1]["loss"] if train else None

    def save_fn(m: nn.Module, path: Path) -> None:
        _save_model(m, path, objective, tokenizer, cfg.seq_len)
        m = getattr(m, "discriminator", m)
        found = re.search(r"step-(\d+)", path.name)  # a checkpoint's temp dir .tmp-step-N-pid
        steps = int(found.group(1)) if found else 0
        (path / "README.md").write_text(pretrain_card(
            name=cfg.name, corpus=corpus, objective=objective, model=m, steps=steps,
            tokens=steps * cfg.train.batch_size * cfg.train.grad_accum * cfg.seq_len * world,
            train_loss=last_train_loss(), val_loss=last["val_loss"], base=base,
            path=run_dir / ("checkpoints/" + f"step-{steps}" if found else "final"),
            seq_len=cfg.seq_len))

    if rank == 0:
        mark_run(run_dir)
        (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    t0 = time.perf_counter()
    result = fit(model, parts.loss, batches, cfg.train, cfg.optim, run_dir,
                 evaluate=Evaluation(evaluate, metric="val_loss") if val else None,
                 save_fn=save_fn, resume=resume, trackers=trackers)
    seconds = time.perf_counter() - t0
    if result.stopped_reason == "interrupted":
        if rank == 0:
            print(f"interrupted at step {result.steps}; checkpoint {result.last_checkpoint}; "
                  "continue with --resume")
        return result.last_checkpoint or run_dir
    final = run_dir / "final"
    if result.already_finished and (final / "config.json").is_file():
        if rank == 0:
            print(f"{run_dir} already finished at step {result.steps:,} "
                  f"({result.stopped_reason}); nothing to do: {final}")
        return final
    if rank == 0:
        _write_final(final, parts.export, save_fn, result, cfg, objective, corpus, artifact, seconds,
                     last_train_loss(), last["val_loss"], trained=parts.model, base=base)
        trackers.finish({f"final/{k}": v for k, v in (("train_loss", last_train_loss()),
                                                       ("val_loss", last["val_loss"]))
                         if v is not None}, {"tokens": result.tokens}, step=result.steps)
        val = "" if last["val_loss"] is None else f", val loss {last['val_loss']:.4f}"
        print(f"pre-trained {result.steps:,} steps / {result.tokens:,} tokens in "
              f"{result.seconds:.0f} s ({result.stopped_reason}{val}); model: {final}")
    return final


def _flops_per_token(cfg: PretrainConfig, objective: str, trained: nn.Module) -> float:
    """Training FLOPs per stream token of each objective: ELECTRA adds its generator, SimCSE
    its two views of the spans; word vectors train no transformer (0)."""
    if objective == "wordvec":
        return 0.0
    per = flops_per_token(trained.config, cfg.seq_len)
    generator = getattr(trained, "generator", None)
    if generator is not None:
        per += flops_per_token(generator.config, cfg.seq_len)
    weight = 1.0 if objective == "simcse" else cfg.simcse_weight
    if weight > 0:
        views = 2 * cfg.simcse_windows * (cfg.simcse_window + 1) / cfg.seq_len
        per = per * (views if objective == "simcse" else 1 + views)
    return per


def _write_final(final: Path, model: nn.Module, save_fn, result, cfg: PretrainConfig,
                 objective: str, corpus: str, artifact: Path, seconds: float,
                 train_loss: float | None, val_loss: float | None,
                 trained: nn.Module | None = None,
                 base: tuple[str | None, str | None] = (None, None)) -> None:
    """The exported model, its card and summary.json. ``trained``: the module the loop
    stepped (ELECTRA's generator + discriminator), for the FLOPs."""
    per_token = _flops_per_token(cfg, objective, trained or model)
    tmp = final.with_name(".final-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_fn(model, tmp)
    (tmp / "README.md").write_text(pretrain_card(
        name=cfg.name, corpus=corpus, objective=objective, model=model, steps=result.steps,
        tokens=result.tokens, train_loss=train_loss, val_loss=val_loss, path=final,
        base=base, seq_len=cfg.seq_len))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    root = final.parent / "checkpoints"
    summary = {
        "name": cfg.name, "objective": objective, "model": cfg.model.name, "corpus": corpus,
        "artifact": str(artifact), "parameters": count_params(model),
        "steps": result.steps, "tokens": result.tokens,
        "wall_seconds": round(seconds, 3), "train_seconds": round(result.seconds, 3),
        "seconds": round(result.seconds, 3),  # cumulative training time (across resumes)
        "tokens_per_second": result.tokens / max(result.seconds, 1e-9),
        "flops_per_token": per_token,
        "estimated_flops": per_token * result.tokens,
        "flops": per_token * result.tokens,
        "final_train_loss": train_loss, "final_val_loss": val_loss,
        "final_val_ppl": None if val_loss is None else math.exp(min(val_loss, 50.0)),
        "stopped_reason": result.stopped_reason,
        "checkpoints": [{"step": s, "path": str(p)} for s, p in ckpt.step_dirs(root)],
        "final": str(final),
    }
    (final.parent / "summary.json").write_text(json.dumps(summary, indent=2))
