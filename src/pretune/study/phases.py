"""The text study's phases before the matrix: prepare, pre-train, continued pre-training, probes
on intermediate checkpoints, and the contamination check. Each is cached or resumable on rerun.
``text_setup`` runs them and hands the matrix its ``Setup``."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from pretune.config import FinetuneConfig, PretrainConfig, StrategyConfig, StudyConfig
from pretune.data.builtin import is_builtin, same_source
from pretune.data.pipeline import prepare
from pretune.data.shards import PackedTokens
from pretune.errors import PretuneError
from pretune.finetune.run import finetune
from pretune.study.contamination import ngram_overlap
from pretune.study.identity import (
    config_identity,
    digest,
    plan_phase,
    source_identity,
    task_identity,
)
from pretune.study.matrix import Phase, Setup, StartSpec, task_label
from pretune.tasks import get_kind
from pretune.train.pretrain import pretrain
from pretune.train.trackers import RunInfo, flat_params


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def loop_history(path: Path) -> list[dict]:
    """The loop's metrics.jsonl as the report's curve points {step, tokens, train_loss,
    val_loss}: train records carry ``loss``, eval records ``val_loss``."""
    out = []
    for r in _read_jsonl(path):
        point = {"step": r.get("step"), "tokens": r.get("tokens")}
        if r.get("kind") == "train" and r.get("loss") is not None:
            out.append(point | {"train_loss": r["loss"]})
        elif r.get("kind") == "eval" and r.get("val_loss") is not None:
            out.append(point | {"val_loss": r["val_loss"]})
    return out


def _pretrain_phase(pcfg: PretrainConfig, out: Path, label: str, phases: list[Phase]) -> Path:
    """Run, resume or reuse a pre-training phase. Reused only when its inputs (the config and
    the prepared data's or starting checkpoint's content) are the ones it ran with; otherwise
    it starts over, and the probes and cells that read its checkpoints follow (their own
    fingerprints hash those weights)."""
    run_dir = Path(pcfg.output_dir) / pcfg.name
    final = run_dir / "final"
    fingerprint = digest(config_identity(pcfg), source_identity(pcfg.model.name),
                         source_identity(pcfg.data) if isinstance(pcfg.data, str)
                         else [source_identity(s.path) for s in pcfg.data.sources])
    plan = plan_phase(run_dir, fingerprint, (final / "config.json").exists(),
                      run_dir / "checkpoints", label)
    if plan is not None:
        print(f"== {label}: {plan} ({pcfg.model.name}) ==", flush=True)
        pretrain(pcfg, resume=plan == "resume", overwrite=plan == "start",
                 run_info=RunInfo(label, out.name, out, flat_params(pcfg)))
        if not (final / "config.json").exists():  # SIGINT/SIGTERM: checkpointed, not finished
            print(f"{label} interrupted; run the same study command again to resume it")
            raise KeyboardInterrupt
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    phases.append(Phase(label, summary.get("tokens"), float(summary.get("seconds", 0.0)), summary.get("flops")))
    return final


def task_texts(task: Any, split: Any) -> list[str]:
    """The texts of a split of any text kind (a tagged sentence's tokens joined back; a
    generation example's input, or its chat turns)."""
    if hasattr(split, "texts"):
        return list(split.texts)
    if hasattr(split, "sources"):
        return [s if isinstance(s, str) else "\n".join(m["content"] for m in s)
                for s in split.sources]
    sep = "" if getattr(task, "char_level", False) else " "
    return [sep.join(toks) for toks in split.tokens]


def _shares_source(task_path: str | list[str], source_path: str) -> bool:
    if isinstance(task_path, list):  # one file per class
        return any(_shares_source(p, source_path) for p in task_path)
    if is_builtin(task_path) and is_builtin(source_path):
        return same_source(task_path, source_path)
    a, b = Path(task_path).expanduser(), Path(source_path).expanduser()
    return a.is_file() and b.is_file() and a.resolve() == b.resolve()


def write_holdout(cfg: StudyConfig, out: Path, loaded: dict) -> tuple[Path | None, list[str]]:
    """The test and validation texts of every task made from the corpus's own source (People's
    Daily NER from People's Daily, a CSV that is also a corpus file), as the prepare step's
    holdout file; returns it and the names of those tasks."""
    if cfg.prepare is None:
        return None, []
    texts, names = [], []
    for t in cfg.tasks:
        if any(_shares_source(t.path, s.path) for s in cfg.prepare.sources):
            task = loaded[task_label(t)]
            names.append(task_label(t))
            texts += task_texts(task, task.test) + task_texts(task, task.val)
    if not texts:
        return None, []
    path = out / "holdout.jsonl"
    body = "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in dict.fromkeys(texts))
    if not path.is_file() or path.read_text(encoding="utf-8") != body:
        path.write_text(body, encoding="utf-8")
    return path, names


def run_pretraining(cfg: StudyConfig, out: Path, phases: list[Phase], holdout: Path | None = None
                    ) -> tuple[dict[str, Path], dict | None, Path | None]:
    """Prepare the corpus (``holdout`` texts kept out of it) and (continue to) pre-train.
    Returns (named checkpoints, pre-training curves for the report, prepared artifact dir)."""
    checkpoints: dict[str, Path] = {}
    prep_dir: Path | None = None
    pretrain_info: dict | None = None
    if cfg.prepare is not None:
        t0 = time.perf_counter()
        print("== prepare ==", flush=True)
        prep = cfg.prepare if holdout is None else cfg.prepare.model_copy(update={
            "holdout": str(holdout), "holdout_ngram": cfg.contamination_ngram})
        prep_dir = prepare(prep)
        meta = json.loads((prep_dir / "meta.json").read_text())
        tokens = sum(s.get("tokens", 0) for s in meta.get("splits", {}).values()) or None
        built = meta.get("stats", {}).get("wall_seconds")
        phases.append(Phase("prepare", tokens, float(built or (time.perf_counter() - t0)), None))
        checkpoints["tokenizer"] = prep_dir / "tokenizer"
    if cfg.pretrain is not None and prep_dir is not None:
        pcfg = cfg.pretrain.model_copy(update={
            "name": "pretrain", "output_dir": str(out), "data": str(prep_dir),
            # probes need the intermediate checkpoints: keep them all
            "train": cfg.pretrain.train.model_copy(update={"keep_last": 10_000}),
        })
        checkpoints["pretrained"] = _pretrain_phase(pcfg, out, "pre-training", phases)
        history = loop_history(out / "pretrain" / "metrics.jsonl")
        summary_path = out / "pretrain" / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        corpus = ", ".join(s.path.removeprefix("builtin:") for s in cfg.prepare.sources)
        pretrain_info = {**summary, "history": history, "corpus": corpus,
                         "model": cfg.pretrain.model.name, "objective": summary.get("objective")}
        for key in cfg.pretrain_variants:  # other recipes, each a start of its own
            vcfg = cfg.variant(key)
            vcfg = vcfg.model_copy(update={"name": f"pretrain-{key}", "output_dir": str(out),
                                           "data": str(prep_dir)})
            checkpoints[f"pretrained-{key}"] = _pretrain_phase(
                vcfg, out, f"pre-training ({key})", phases)
    if cfg.continued is not None:
        ccfg = cfg.continued
        data = ccfg.data
        if not isinstance(data, str) and data.tokenizer.path is None:
            # continued pre-training must keep the checkpoint's own tokenizer
            data = data.model_copy(update={"tokenizer": data.tokenizer.model_copy(update={"path": ccfg.model.name})})
        ccfg = ccfg.model_copy(update={
            "name": "continued", "output_dir": str(out), "data": data,
        })
        checkpoints["continued"] = _pretrain_phase(ccfg, out, "continued pre-training", phases)
    return checkpoints, pretrain_info, prep_dir


_STEP = re.compile(r"step-(\d+)$")


def probe_budget(cfg: StudyConfig) -> int | None:
    ints = [b for b in cfg.budgets if b != "all"]
    return max(ints) if ints else None


def run_probes(cfg: StudyConfig, out: Path, checkpoints: dict[str, Path], loaded: dict,
               phases: list[Phase]) -> list[dict] | None:
    """Linear probe (scikit-learn on frozen features) on each intermediate checkpoint: when did
    more pre-training stop paying off? Step 0 is the random-init model of the same shape."""
    if cfg.pretrain is None or "pretrained" not in checkpoints:
        return None
    cache = out / "probes.json"
    done = {(r["task"], r["step"]): r for r in (json.loads(cache.read_text()) if cache.exists() else [])}
    ckpt_root = out / "pretrain" / "checkpoints"
    steps = sorted(
        (int(m.group(1)), p) for p in ckpt_root.glob("step-*") if (m := _STEP.search(p.name)) and (p / "config.json").exists()
    )
    loop = cfg.pretrain.train
    tokens_per_step = loop.batch_size * loop.grad_accum * cfg.pretrain.seq_len
    targets: list[tuple[int, str, str | None]] = [(0, cfg.pretrain.model.name, str(checkpoints["tokenizer"]))]
    targets += [(s, str(p), None) for s, p in steps]
    probe = StrategyConfig(name="linear-probe", sklearn=True)
    metric = "macro_f1" if cfg.finetune.metric == "auto" else cfg.finetune.metric
    t0 = time.perf_counter()
    rows = []
    for tname, task in loaded.items():
        task_cfg = next(t for t in cfg.tasks if task_label(t) == tname)
        if task_cfg.kind != "text-classification":  # the scikit-learn probe is per example
            print(f"probes: {tname} is {task_cfg.kind}; probes run on classification tasks only",
                  flush=True)
            continue
        for step, model_name, tok in targets:
            # a cached probe is reused only for the same task data, checkpoint and settings
            fp = digest(task_identity(task_cfg), config_identity(task_cfg), metric,
                        source_identity(model_name), source_identity(tok),
                        config_identity(cfg.finetune.train), config_identity(cfg.pretrain.model),
                        probe_budget(cfg))
            if done.get((tname, step), {}).get("fingerprint") == fp:
                rows.append(done[(tname, step)])
                continue
            ft = FinetuneConfig(
                name=f"probe-{tname}-{step}", output_dir=str(out / "probes"),
                # step 0 is the random-init architecture (overrides apply); checkpoints carry
                # their own shape
                model=cfg.pretrain.model.model_copy(
                    update={"name": model_name} if step == 0 else {"name": model_name, "overrides": {}}),
                tokenizer=tok,
                task=task_cfg.model_copy(update={"budget": probe_budget(cfg)}), strategy=probe,
                train=cfg.finetune.train.model_copy(update={"seed": 0, "progress": False,
                                                            "report_to": []}),
                save_model=False,
            )
            res = finetune(ft, overwrite=True, task=task, quiet=True)
            rows.append({"task": tname, "step": step, "checkpoint": model_name,
                         "tokens": step * tokens_per_step, "score": res.metrics.get(metric),
                         "metric": metric, "seconds": round(res.seconds, 2),
                         "fingerprint": fp})
            print(f"probe {tname} @ step {step}: {metric}={rows[-1]['score']:.3f}", flush=True)
            cache.write_text(json.dumps(rows + [r for k, r in done.items() if r not in rows], indent=1))
    cache.write_text(json.dumps(rows, indent=1))
    spent = sum(float(r.get("seconds") or 0.0) for r in rows)  # recorded per probe: rerun-proof
    phases.append(Phase("probes", None, spent or time.perf_counter() - t0, None))
    return rows


def contamination_for_tasks(cfg: StudyConfig, prep_dir: Path, loaded: dict,
                            held_out_tasks: list[str] = ()) -> list[dict]:
    """n-gram overlap between the pre-training corpus (decoded from the shards, so exactly what
    the model saw) and each task's test split; for tasks whose texts were held out of the
    corpus, how many corpus documents that removed."""
    meta = json.loads((prep_dir / "meta.json").read_text())
    held = int(meta.get("stats", {}).get("clean", {}).get("removed", {}).get("held_out", 0))
    tok = AutoTokenizer.from_pretrained(str(prep_dir / "tokenizer"))
    packed = PackedTokens(prep_dir, "train")
    n_docs = len(packed.doc_starts) - 1

    def corpus():  # streamed, decoded in batches; one fresh pass per task
        for lo in range(0, n_docs, 256):
            batch = [packed.doc(i).tolist() for i in range(lo, min(n_docs, lo + 256))]
            yield from tok.batch_decode(batch, skip_special_tokens=True)

    results = []
    for tname, task in loaded.items():
        res = ngram_overlap(corpus(), task_texts(task, task.test), n=cfg.contamination_ngram)
        results.append({"task": tname, **res,
                        "held_out_docs": held if tname in held_out_tasks else None})
    return results


def _start_spec(cfg: StudyConfig, start: str, checkpoints: dict[str, Path]) -> StartSpec:
    """scratch: the pre-training architecture at random init; pretrained / continued: their
    checkpoints; anything else is a model name (hf:<dir>, builtin:minilm, a checkpoint dir)."""
    if start == "scratch":
        if cfg.pretrain is None:
            raise PretuneError("start 'scratch' needs a `pretrain:` section (its architecture); "
                               "add one or drop the start")
        return StartSpec(cfg.pretrain.model.name, dict(cfg.pretrain.model.overrides),
                         str(checkpoints["tokenizer"]))
    if start in ("pretrained", "continued"):
        if start not in checkpoints:
            section = "pretrain" if start == "pretrained" else "continued"
            raise PretuneError(f"start '{start}' needs a `{section}:` section in the study config")
        return StartSpec(str(checkpoints[start]))
    if start.startswith("pretrained-") and not Path(start).is_dir():
        if start not in checkpoints:
            key = start.removeprefix("pretrained-")
            raise PretuneError(f"start '{start}' needs pretrain_variants.{key} in the study "
                               f"config (variants: {', '.join(cfg.pretrain_variants) or 'none'})")
        return StartSpec(str(checkpoints[start]))
    return StartSpec(start)


def text_setup(cfg: StudyConfig, out: Path, phases: list[Phase]) -> Setup:
    """Load the tasks once, prepare (their test texts held out where a task comes from the
    corpus), pre-train, probes and contamination."""
    tasks = {task_label(t): t for t in cfg.tasks}
    loaded = {name: get_kind(t.kind).load(cfg.finetune.model_copy(update={"task": t}))
              for name, t in tasks.items()}
    holdout, held_tasks = write_holdout(cfg, out, loaded)
    checkpoints, pretrain_info, prep_dir = run_pretraining(cfg, out, phases, holdout)
    starts = {s: _start_spec(cfg, s, checkpoints) for s in cfg.starts}  # bad starts fail here
    contamination = contamination_for_tasks(cfg, prep_dir, loaded, held_tasks) \
        if prep_dir else None
    probes = run_probes(cfg, out, checkpoints, loaded, phases) if cfg.probes else None
    return Setup(starts, tasks, loaded, pretrain_info, probes, contamination)
