"""``pretune finetune``: adapt a starting model to a labeled task of any kind with one strategy.

The one fine-tuning path. Flow: resolve the start -> the task (splits + budget) -> the
strategy: train with the one loop (selection on validation, best restored), fit scikit-learn
on frozen features, or score prompts -> test metrics -> ``runs/<name>/metrics.json`` and
(``save_model``) ``runs/<name>/model``, a plain Hugging Face directory with a model card.
What differs between text, images and tags is asked of the task kind (``pretune.tasks``).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pretune.config import FinetuneConfig, dump_yaml, load_yaml
from pretune.data.split_ids import write_split
from pretune.data.tokenizer import stamp_model_max_length
from pretune.errors import PretuneError
from pretune.evaluate import threshold
from pretune.evaluate.examples import PREDICTIONS, write_predictions
from pretune.evaluate.metrics import format_table, metric_mode
from pretune.finetune import recipe
from pretune.finetune.probe import run_probe
from pretune.finetune.prompt import run_prompt
from pretune.finetune.result import FinetuneResult, Trained
from pretune.finetune.strategies import apply_strategy, export_model
from pretune.models.card import lineage, model_card
from pretune.models.overrides import quiet_transformers
from pretune.models.probe_head import CARD_NOTE as PROBE_CARD
from pretune.models.registry import training_flops
from pretune.models.start import Start, resolve_start
from pretune.tasks import get_kind
from pretune.tasks.base import TASK_FILE, TaskKind
from pretune.train import checkpoint as ckpt
from pretune.train import parallel
from pretune.train.loop import Evaluation, Hooks, fit
from pretune.train.rundir import prepare_run_dir, run_lock
from pretune.train.runtime import distributed, resolve_device
from pretune.train.trackers import RunInfo, Trackers, run_trackers

CKPTS = Path("train") / "checkpoints"  # the loop's checkpoints inside a run dir


def selection_metric(cfg: FinetuneConfig, kind: TaskKind, task: Any) -> str:
    return kind.default_metric(task) if cfg.metric == "auto" else cfg.metric


def prepare_task(cfg: FinetuneConfig, task: Any | None, kind: TaskKind | None = None,
                 start: Start | None = None) -> Any:
    """The run's task: loaded from ``cfg.task``, or a pre-loaded one (a study's, a fold) that
    gets this run's budget if it has none yet, drawn with the run's seed."""
    kind = kind or get_kind(cfg.task.kind)
    if task is None:
        return kind.load(cfg, start)
    if task.budget is None and cfg.task.budget is not None:
        return kind.with_budget(task, cfg.task.budget, cfg.train.seed)
    return task


def finetune(cfg: FinetuneConfig, overwrite: bool = False, *, task: Any | None = None,
             features_cache: dict | None = None,
             on_evaluate: Callable[[int, dict[str, float]], None] | None = None,
             resume: bool = False, run_info: RunInfo | None = None,
             quiet: bool = False) -> FinetuneResult:
    """Fine-tune ``cfg.model`` on ``cfg.task`` with ``cfg.strategy``; evaluate on the test split.

    ``task``: a pre-loaded task (studies and folds load once). ``features_cache``: shared by
    the scikit-learn probes of one study or sweep. ``on_evaluate(i, val_metrics)`` runs after
    the i-th (0-based) validation of the loop; it may raise (a sweep prunes a trial so).
    ``resume``: continue an interrupted run exactly from its last checkpoint (bitwise on CPU);
    a finished run is left as it is. ``run_info``: how the trackers name the run (a study
    cell, a sweep trial); ``quiet``: no final metrics table (a study prints one line)."""
    out = Path(cfg.output_dir) / cfg.name
    if distributed()[0] != 0:  # torchrun: rank 0 holds the run; the others train into it
        finished = _finished(out) if resume else None  # rank 0 returns it too: no one trains
        return finished or _finetune(cfg, overwrite, task, features_cache, on_evaluate, resume,
                                     None)
    with run_lock(out):
        if resume:
            finished = _finished(out)
            if finished is not None:
                return finished
            _check_resumable(cfg, out)
        trackers = run_trackers(cfg, out / "train", run_info)
        try:
            result = _finetune(cfg, overwrite, task, features_cache, on_evaluate, resume,
                               trackers)
        except BaseException:
            trackers.close(failed=True)
            raise
        trackers.finish({**{f"test/{k}": v for k, v in result.metrics.items()},
                         **{f"val/{k}": v for k, v in result.val_metrics.items()}},
                        {"train_examples": result.train_examples,
                         "trainable_params": result.trainable_params}, step=result.steps)
        if not quiet:
            print(f"{result.task_line}\n{format_table(result.metrics)}")
        return result


def _finished(out: Path) -> FinetuneResult | None:
    """A run whose metrics are written and whose checkpoints are gone is done."""
    if not (out / "metrics.json").is_file() or ckpt.latest_checkpoint(out / CKPTS) is not None:
        return None
    m = json.loads((out / "metrics.json").read_text())
    t = m.get("timing", {})
    print(f"{out} already finished (metrics.json); nothing to do")
    try:
        config = FinetuneConfig.model_validate(m["config"])
    except (KeyError, ValueError):  # metrics from an older pretune
        config = None
    return FinetuneResult(m.get("test", {}), m.get("val", {}), out, float(t.get("seconds", 0)),
                          int(t.get("train_examples", 0)), int(t.get("trainable_params", 0)),
                          int(t.get("steps", 0)), "already finished",
                          collapsed=m.get("collapsed"), tokens=int(t.get("tokens") or 0),
                          flops=t.get("flops"), config=config)


def _check_resumable(cfg: FinetuneConfig, out: Path) -> None:
    if ckpt.latest_checkpoint(out / CKPTS) is None:
        raise PretuneError(f"nothing to resume: no checkpoint under {out / CKPTS} (fine-tuning "
                           "checkpoints with train.save_every=N); run without --resume")
    saved = out / "config.yaml"
    if saved.is_file():  # what the loop's own hash does not cover: model, task, strategy ...
        old = load_yaml(saved)
        new = cfg.model_dump(mode="json")
        free = {"name", "output_dir", "train", "optim", "save_model"}
        differ = sorted(k for k in set(old) | set(new) if k not in free and old.get(k) != new.get(k))
        if differ:
            raise PretuneError(f"cannot resume {out}: its {', '.join(differ)} settings differ "
                               f"from the run's ({saved}); use the same config, or --overwrite")


def _finetune(cfg: FinetuneConfig, overwrite: bool, task: Any | None,
              features_cache: dict | None,
              on_evaluate: Callable[[int, dict[str, float]], None] | None,
              resume: bool, trackers: Trackers | None) -> FinetuneResult:
    t0 = time.perf_counter()
    kind = get_kind(cfg.task.kind)
    start = resolve_start(cfg.model.name).require(kind.modality)
    main = distributed()[0] == 0  # under torchrun only rank 0 writes
    out = prepare_run_dir(cfg.output_dir, cfg.name, overwrite, resume) if main else \
        Path(cfg.output_dir) / cfg.name
    if main:
        (out / "config.yaml").write_text(dump_yaml(cfg))
    task = prepare_task(cfg, task, kind, start)
    if not len(task.test):
        raise PretuneError(f"the task has no test {kind.example_word}; set task.test or "
                           "task.test_fraction > 0")
    if main:
        write_split(out, cfg.task, task)  # the row numbers of train / validation / test
    cfg, notes = recipe.resolve(cfg, kind.name, task, start)  # the `auto` settings, decided
    for note in notes if cfg.train.progress else ():
        print(f"note: {note}", file=sys.stderr)
    device = resolve_device(cfg.train.device)
    metric = selection_metric(cfg, kind, task)
    _check_distributed(cfg, kind)
    if cfg.strategy.name == "prompt" and kind.name == "text-classification":
        trained = run_prompt(cfg, task, start, out, device, metric, trackers)
    elif cfg.strategy.name == "prompt":  # the kind prompts by itself (generation)
        test_out, params = kind.prompt_outputs(cfg, task, start, device)
        trained = Trained(test_out, None, params)
    elif cfg.strategy.name == "linear-probe" and cfg.strategy.sklearn:
        trained = run_probe(kind, cfg, task, start, device, features_cache)
    else:
        trained = _run_loop(kind, cfg, task, start, out, device, metric, on_evaluate, resume,
                            trackers)
    test_m = kind.metrics(task, task.test, trained.test_outputs)
    val_m = kind.metrics(task, task.val, trained.val_outputs) \
        if len(task.val) and trained.val_outputs is not None else {}
    cut = _threshold(cfg, kind, task, trained, test_m)
    collapsed = recipe.collapse(task, trained.val_outputs, val_m, metric) \
        if cfg.strategy.name != "prompt" else None
    if collapsed:
        print(f"warning: {cfg.name}: {collapsed}", file=sys.stderr)
    try:  # per test example: what error analysis (and the study report) reads
        records = kind.example_records(task, task.test, trained.test_outputs)
    except Exception as e:  # noqa: BLE001 - the trained model and its metrics still count
        records = []
        print(f"warning: {cfg.name}: no predictions.jsonl ({type(e).__name__}: {e})",
              file=sys.stderr)
    if records and main:
        write_predictions(out / PREDICTIONS, records, getattr(task.test, "ids", None))
    result = FinetuneResult(test_m, val_m, out, time.perf_counter() - t0, len(task.train),
                            trained.trainable_params, trained.steps, trained.stopped_reason,
                            collapsed=collapsed, tokens=trained.tokens, flops=trained.flops,
                            config=cfg)
    if cfg.save_model and trained.export is not None and main:
        save_model_dir(out / "model", trained.export,
                       _card(cfg, kind, task, test_m, trained.auto_class or kind.auto_class,
                             trained.pipeline_tag or kind.pipeline_tag, start, out / "model"),
                       max_length=getattr(cfg.task, "max_length", None), extra_info=cut)
    if main:
        _write_metrics(cfg, kind, task, result, metric, notes)
    result.task_line = (f"{task.name} | {cfg.model.name} | {cfg.strategy.name} | "
                        f"{len(task.train)} train {kind.example_word} | test (majority baseline "
                        f"{task.majority_baseline:.4f})")
    return result


def _threshold(cfg: FinetuneConfig, kind: TaskKind, task: Any, trained: Trained,
               test_m: dict[str, Any]) -> dict[str, Any] | None:
    """A binary task's decision threshold (``threshold``: auto = F1-optimal on validation):
    the tuned test metrics join ``test_m`` as tuned_*; returns what the model dir saves."""
    if not threshold.applies(task, cfg.threshold) or trained.val_outputs is None \
            and cfg.threshold == "auto":
        return None
    pos = threshold.positive_class(task.train.labels)
    cut = threshold.tune(trained.val_outputs, task.val.labels, pos) \
        if cfg.threshold == "auto" else float(cfg.threshold)
    tuned = kind.metrics(task, task.test, threshold.apply(trained.test_outputs, pos, cut))
    for m in (test_m, tuned):  # the positive (minority) class's F1, the imbalanced-task score
        if isinstance(m.get("per_class"), dict) and task.labels[pos] in m["per_class"]:
            m["f1_positive"] = m["per_class"][task.labels[pos]]["f1"]
    test_m.update(threshold.tuned_metrics(tuned, cut, task.labels[pos]))
    return {"threshold": cut, "positive": task.labels[pos]}


def _run_loop(kind: TaskKind, cfg: FinetuneConfig, task: Any, start: Start, out: Path,
              device: torch.device, metric: str,
              on_evaluate: Callable[[int, dict[str, float]], None] | None,
              resume: bool, trackers: Trackers) -> Trained:
    """Train the kind's model with the strategy in the one loop; best validation weights."""
    loaded = kind.load_model(cfg, task, start)
    for note in kind.notes(loaded.model, cfg, start):
        print(f"note: {note}", file=sys.stderr)
    plan = apply_strategy(loaded.model, cfg.strategy, cfg.optim, kind.peft_task_type)
    rank, world, _ = distributed()
    batches = kind.train_batches(task, loaded.processor, _all_ranks(cfg, world))
    tokens_of = kind.tokens_per_batch
    if world > 1:  # this rank's rows of every (all ranks') batch
        batches = parallel.RankBatches(batches, rank, world, tokens_of)
        tokens_of = batches.tokens
    loop, note = recipe.with_min_steps(cfg.train, len(batches), kind.name)
    if note and cfg.train.progress:
        print(f"note: {note}", file=sys.stderr)
    batch_size = kind.eval_batch_size(cfg)
    val_inputs, val_real = _inputs(kind, loaded.processor, task.val, cfg.task) \
        if len(task.val) else (None, None)
    evaluation = None
    if val_inputs is not None:
        def evaluate(model: torch.nn.Module) -> dict[str, float]:
            outputs = kind.val_outputs(model, val_inputs, task, batch_size, device, metric)
            return kind.val_metrics(task, task.val, _gathered(outputs, val_real))

        evaluation = Evaluation(evaluate, metric=metric, mode=metric_mode(metric),
                                restore_best=True)
    # Without periodic saves no checkpoint is needed: skip the loop's final checkpoint write
    # (model + optimizer, ~270 MB for MiniLM) in every study cell.
    result = fit(plan.model, kind.loss_fn(task, cfg), batches, loop, cfg.optim, out / "train",
                 param_groups=plan.param_groups, evaluate=evaluation,
                 hooks=Hooks(on_epoch_start=plan.on_epoch_start, on_evaluate=on_evaluate),
                 tokens_per_batch=tokens_of, resume=resume,  # optim.l1: inside fit
                 trackers=trackers, checkpoints=bool(cfg.train.save_every or resume))
    if result.stopped_reason == "interrupted":  # Ctrl-C / SIGTERM: a checkpoint, not a result
        where = f"checkpoint {result.last_checkpoint}; continue with --resume" \
            if result.last_checkpoint else "no checkpoint (set train.save_every to keep one)"
        print(f"interrupted at step {result.steps}; {where}", file=sys.stderr)
        raise KeyboardInterrupt
    # Finished, best weights restored: drop the loop's checkpoints (a study would otherwise
    # keep two model copies per cell on disk).
    if rank == 0:
        shutil.rmtree(out / CKPTS, ignore_errors=True)
    model = plan.model
    test_inputs, test_real = _inputs(kind, loaded.processor, task.test, cfg.task)
    test_out = _gathered(kind.outputs(model, test_inputs, task, batch_size, device), test_real)
    val_out = _gathered(kind.outputs(model, val_inputs, task, batch_size, device), val_real) \
        if val_inputs is not None else None

    def export(path: Path) -> None:
        kind.save(export_model(model), loaded.processor, path, cfg, task)

    auto_class, pipeline_tag = kind.export_classes(model)
    return Trained(test_out, val_out, plan.trainable_params, int(result.steps),
                   result.stopped_reason, export, auto_class, pipeline_tag,
                   tokens=int(result.tokens),
                   # images are not tokens: no per-token estimate for image models
                   flops=None if kind.modality == "image" else training_flops(
                       model, result.tokens, getattr(cfg.task, "max_length", None)))


def _check_distributed(cfg: FinetuneConfig, kind: TaskKind) -> None:
    if distributed()[1] == 1:
        return
    s = cfg.strategy
    if s.name == "prompt" or s.name == "linear-probe" and s.sklearn:
        raise PretuneError(f"strategy {s.name}{' (sklearn)' if s.sklearn else ''} trains no "
                           "network: run it in one process, without torchrun")
    if cfg.train.strategy == "fsdp" and kind.name == "generation":
        raise PretuneError("train.strategy=fsdp fine-tunes classification and tagging kinds; "
                           "generation decodes a different number of steps on each rank: use "
                           "train.strategy=ddp")


def _all_ranks(cfg: FinetuneConfig, world: int) -> FinetuneConfig:
    """Under torchrun the batches are built at the batch size of all ranks together, each
    rank then takes its rows: train.batch_size stays per process, as in pre-training."""
    if world == 1:
        return cfg
    return cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"batch_size": cfg.train.batch_size * world})})


def _inputs(kind: TaskKind, processor: Any, split: Any, task_cfg: Any) -> tuple[Any, int | None]:
    """This process's evaluation inputs of ``split``: all of it, or under torchrun its rank's
    share (and how many of those are real, see ``parallel.rank_part``)."""
    rank, world, _ = distributed()
    if world == 1:
        return kind.encode(processor, split, task_cfg), None
    idx, real = parallel.rank_part(len(split), rank, world)
    return kind.encode(processor, split.subset(idx), task_cfg), real


def _gathered(outputs: Any, real: int | None) -> Any:
    return outputs if real is None else parallel.gather_parts(outputs, real)


# --------------------------------------------------------------------------- outputs


def save_model_dir(path: Path, write: Callable[[Path], None], card: str,
                   max_length: int | None = None, extra_info: dict | None = None) -> Path:
    """Write a model directory (``write`` fills it; the card is its README.md) via a temp dir
    and a rename, so a crash never leaves a half-written model. ``max_length``: the length it
    was trained with, saved as its tokenizer's ``model_max_length``."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with quiet_transformers():  # no "Writing model shards" bar
        write(tmp)
    stamp_model_max_length(tmp, max_length)
    if extra_info and (tmp / TASK_FILE).is_file():  # e.g. the tuned decision threshold
        info = json.loads((tmp / TASK_FILE).read_text())
        (tmp / TASK_FILE).write_text(json.dumps({**info, **extra_info}, indent=2))
    (tmp / "README.md").write_text(card)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def _card(cfg: FinetuneConfig, kind: TaskKind, task: Any, test_metrics: dict[str, Any],
          auto_class: str, pipeline_tag: str, start: Start, path: Path) -> str:
    words, s = kind.example_word, cfg.strategy
    facts = [*kind.card_facts(cfg, task), ("strategy", f"`{s.name}`"),
             (f"training {words}", f"{len(task.train)} (budget {task.budget or 'all'}, "
                                   f"seed {cfg.train.seed})"),
             (f"test {words}", len(task.test))]
    if s.name == "lora":
        targets = ", ".join(s.lora_targets) if s.lora_targets else "attention + MLP projections"
        facts.append(("LoRA", f"rank {s.lora_r}, alpha {s.lora_alpha}, dropout {s.lora_dropout}"
                              f", on {targets}; merged into the weights (loads without PEFT)"))
    if getattr(cfg.task, "max_length", None):
        facts.append(("max length", f"{cfg.task.max_length} tokens (the tokenizer's "
                                    "model_max_length)"))
    base, license = lineage(cfg.model.name, start.path)
    data = cfg.task.path if isinstance(cfg.task.path, str) else str(cfg.task.path)
    return model_card(
        title=cfg.name, pipeline_tag=pipeline_tag, auto_class=auto_class, path=path,
        processor_class=kind.processor_class, facts=facts, metrics=test_metrics,
        base_model=base, license=license,
        datasets=[data if data.startswith("builtin:") else Path(data).name],
        summary=f"Fine-tuned with pretune from `{cfg.model.name}`.",
        footer=PROBE_CARD.format(path=path) if auto_class == "AutoModel" and
        kind.name == "text-classification" else
        f"Or with pretune: `pretune predict {path} <inputs> -o predictions.csv`.")


def _write_metrics(cfg: FinetuneConfig, kind: TaskKind, task: Any, r: FinetuneResult,
                   metric: str, recipe_notes: list[str]) -> None:
    payload = {
        "task": task.name, "kind": kind.name, "type": task.type, "labels": task.labels,
        "selection_metric": metric, "majority_baseline": task.majority_baseline,
        "task_info": getattr(task, "info", {}) or {},
        "test": r.metrics, "val": r.val_metrics,
        "timing": {"seconds": r.seconds, "steps": r.steps, "train_examples": r.train_examples,
                   "trainable_params": r.trainable_params, "tokens": r.tokens, "flops": r.flops},
        "config": cfg.model_dump(mode="json"),  # with its `auto` settings decided
        "recipe": recipe_notes, "collapsed": r.collapsed,
    }
    (r.out_dir / "metrics.json").write_text(json.dumps(payload, indent=2, default=float))


__all__ = ["FinetuneResult", "finetune", "prepare_run_dir", "prepare_task", "save_model_dir",
           "selection_metric"]
