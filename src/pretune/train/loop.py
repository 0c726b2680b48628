"""THE training loop: pre-training and fine-tuning of every task kind call ``fit``.

One optimizer step = ``grad_accum`` micro-batches. The loss is accumulated on the device and
read back only every ``log_every`` steps (no per-step host sync). Checkpoints are atomic and
resume is exact (bitwise on CPU with a fixed seed): ``TrainState`` is what a checkpoint saves
beside the weights, optimizer, scheduler, RNG and batch-stream position. Under ``torchrun``
(WORLD_SIZE > 1) the model is wrapped in DDP or sharded with FSDP (``train.strategy``, see
``pretune.train.parallel``) and only rank 0 writes.

Read top to bottom: ``fit`` itself (setup, the epoch loop, the end), then the steps it is
made of. The types it takes and returns are in ``pretune.train.state``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pretune.config import LoopConfig, OptimConfig
from pretune.errors import PretuneError
from pretune.models.backbone import Backbone
from pretune.train import checkpoint as ckpt
from pretune.train import parallel
from pretune.train.logger import RunLog
from pretune.train.profiler import StepProfiler
from pretune.train.runtime import (
    LossModule,
    Schedule,
    agree,
    default_param_groups,
    default_save,
    default_tokens,
    init_process,
    make_optimizer,
    peak_memory_mb,
    signals_to_flag,
    to_device,
    total_steps,
    trajectory_hash,
)
from pretune.train.state import BatchStream, Evaluation, FitResult, Hooks, LossFn, TrainState
from pretune.train.trackers import Trackers

# --------------------------------------------------------------------------- fit


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    batches: BatchStream,
    loop: LoopConfig,
    optim: OptimConfig,
    out_dir: Path | None,
    *,
    param_groups: list[dict] | None = None,
    evaluate: Evaluation | Callable[[nn.Module], dict[str, float]] | None = None,
    hooks: Hooks | None = None,
    save_fn: Callable[[nn.Module, Path], None] | None = None,
    tokens_per_batch: Callable[[dict], int] | None = None,
    resume: bool = False,
    trackers: Trackers | None = None,
    checkpoints: bool = True,
) -> FitResult:
    """Train ``model`` on ``batches`` until the first budget (steps/tokens/minutes/epochs) ends.

    ``loss_fn(model, batch)`` returns a scalar loss. ``evaluate`` is an ``Evaluation`` (or just
    its function). Logs go to ``out_dir`` (metrics.jsonl, ``trackers``: the caller's, which it
    finishes, else ``train.report_to``'s); checkpoints to ``out_dir/checkpoints/step-N`` (none
    without out_dir or with ``checkpoints=False``)."""
    if not any((loop.max_steps, loop.max_tokens, loop.max_minutes, loop.epochs)):
        raise PretuneError("no training budget: set one of train.max_steps, train.max_tokens, "
                           "train.max_minutes or train.epochs")
    if len(batches) == 0:
        raise PretuneError("the training data gives 0 batches per epoch; lower train.batch_size")
    if evaluate is not None and not isinstance(evaluate, Evaluation):
        evaluate = Evaluation(evaluate)
    run = _Run.setup(model, loss_fn, batches, loop, optim, out_dir, param_groups, evaluate,
                     hooks or Hooks(), save_fn or default_save, tokens_per_batch or default_tokens,
                     checkpoints)
    if run.is_main and run.root is not None:
        ckpt.clean_stale(run.root)  # temp dirs of saves a kill cut short
    if resume:
        run.restore()
    st = run.state
    epoch_limit = math.ceil(loop.epochs * len(batches)) if loop.epochs else None
    if resume:
        run.check_finished(epoch_limit)  # a spent budget trains no further step
    flag = {"stop": False}
    empty_epochs = 0
    fresh_epoch = not resume  # a resumed stream is already positioned inside its epoch
    run.start_clock(trackers)
    with signals_to_flag(flag), contextlib.closing(run.log), contextlib.closing(run.prof):
        while not run.stopped:
            epoch = st.epoch
            if fresh_epoch:
                batches.set_epoch(epoch)
            fresh_epoch = True
            if run.hooks.on_epoch_start is not None:
                run.hooks.on_epoch_start(epoch, model)
            micro_before = st.micro
            for batch in batches:
                if not run.micro_step(batch):
                    continue  # accumulating gradients
                run.check_budgets(epoch_limit)
                if st.step % loop.log_every == 0 or run.stopped:
                    run.log_train(epoch, flag)
                else:
                    run.log.advance(st.step)
                    run.check_time_and_signal(flag, synced=False)
                if run.evaluation is not None and loop.eval_every and st.step % loop.eval_every == 0:
                    run.run_eval()
                if loop.save_every and st.step % loop.save_every == 0:
                    run.save()
                if run.stopped:
                    break
            else:  # epoch finished
                # A resumed stream may sit at its epoch's end once; twice means it is empty.
                empty_epochs = empty_epochs + 1 if st.micro == micro_before else 0
                if empty_epochs >= 2:
                    raise PretuneError("the batch stream yielded no batches for a whole epoch")
                if run.evaluation is not None and loop.eval_every is None and loop.epochs \
                        and st.last_eval_step != st.step:
                    run.run_eval()
                st.epoch = epoch + 1
    return run.finish()


# --------------------------------------------------------------------------- the steps


@dataclass
class _Run:
    """One ``fit`` call's working set; its methods are the steps ``fit`` reads as."""

    model: nn.Module  # the module the optimizer steps (under fsdp: a sharded copy)
    engine: parallel.Engine  # net: model + loss as one module (DDP / FSDP under torchrun)
    batches: BatchStream
    loop: LoopConfig
    optim: OptimConfig
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    schedule: Schedule
    evaluation: Evaluation | None
    hooks: Hooks
    save_fn: Callable[[nn.Module, Path], None]
    tokens_of: Callable[[dict], int]
    device: torch.device
    world: int
    is_main: bool
    use_bf16: bool
    root: Path | None  # checkpoints dir
    out_dir: Path | None
    trajectory: str  # hash a resume must match
    params: list[nn.Parameter] = field(default_factory=list)  # what the optimizer updates
    state: TrainState = field(default_factory=TrainState)
    log: Any = None
    stopped: str = ""
    last_saved: int = -1
    evaluations: int = 0
    best_state: dict[str, Tensor] | None = None
    best_saved: int | None = None  # the step whose best weights are on disk
    already_finished: bool = False
    t0: float = 0.0
    window_t0: float = 0.0
    window_tokens: int = 0
    loss_count: int = 0
    norm_count: int = 0  # optimizer steps in grad_norm_sum
    loss_sum: Tensor | None = None
    grad_norm_sum: Tensor | None = None
    nan_step: Tensor | None = None
    prof: Any = None  # StepProfiler for train.profile_steps

    @classmethod
    def setup(cls, model: nn.Module, loss_fn: LossFn, batches: BatchStream, loop: LoopConfig,
              optim: OptimConfig, out_dir: Path | None, param_groups: list[dict] | None,
              evaluation: Evaluation | None, hooks: Hooks, save_fn: Callable, tokens_of: Callable,
              checkpoints: bool = True) -> _Run:
        rank, world, device = init_process(loop.device, loop.tf32)
        torch.manual_seed(loop.seed)  # dropout stream (a resume restores the saved RNG instead)
        groups = param_groups or default_param_groups(model, optim.weight_decay)
        if loop.compile:
            Backbone(model).encoder.compile()  # in place: state_dict keys stay unchanged
        parallel.check_supported(loop.strategy, world, optim.l1, hooks)
        engine, groups = parallel.build(model, LossModule(model, loss_fn), loop.strategy, device,
                                        world, groups)
        engine.trained.train()
        optimizer = make_optimizer(groups, optim, device, fused_ok=not engine.sharded)
        schedule = Schedule(optim, total_steps(loop, len(batches), None))
        # A lambda, not the Schedule: LambdaLR would pickle a callable object into its state.
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule(s))
        use_bf16 = loop.precision == "bf16" or (loop.precision == "auto" and device.type == "cuda")
        run = cls(engine.trained, engine, batches, loop, optim, optimizer, scheduler, schedule,
                  evaluation,
                  hooks, save_fn, tokens_of, device, world, rank == 0, use_bf16,
                  out_dir / "checkpoints" if out_dir is not None and checkpoints else None, out_dir,
                  trajectory_hash(loop, optim))
        run.params = [p for g in optimizer.param_groups for p in g["params"]]
        run.state.total_steps = schedule.total
        run.loss_sum = torch.zeros((), device=device)
        run.grad_norm_sum = torch.zeros((), device=device)
        run.prof = StepProfiler(loop.profile_steps, out_dir if rank == 0 else None)
        run.nan_step = torch.full((), -1, dtype=torch.long, device=device)
        return run

    def restore(self) -> None:
        """Resume from the newest checkpoint: weights, optimizer, scheduler, stream, RNG."""
        last = ckpt.latest_checkpoint(self.root) if self.root is not None else None
        if last is None:
            raise PretuneError(f"nothing to resume: no checkpoint under {self.root}; run without "
                               "--resume")
        saved = ckpt.load_trainer_state(last)
        if saved.get("config_hash") != self.trajectory:
            raise PretuneError(
                f"cannot resume from {last}: it was trained with different optim / batch_size / "
                "grad_accum / seed / precision settings; use the same config or --overwrite")
        parallel.load_checkpoint(self.engine, self.optimizer, last, saved)
        self.scheduler.load_state_dict(saved["scheduler"])
        self.batches.load_state_dict(saved["batches"])
        self.state = TrainState.from_dict(saved["counters"])
        ckpt.set_rng_state(saved["rng"])
        if self.state.total_steps is not None:
            self.schedule.set_total(self.state.total_steps)
        if self.evaluation is not None and self.evaluation.restore_best \
                and self.state.best_step is not None:
            self.best_saved = self.state.best_step  # on disk; finish() reads it from there
            if not self.engine.sharded:
                self.best_state = ckpt.load_best(self.root, self.state.best_step)

    def check_finished(self, epoch_limit: int | None) -> None:
        """After a resume: a checkpoint taken when a budget (or patience) was already spent is
        a finished run; ``fit`` then only finishes (no extra step, no re-save)."""
        st, loop = self.state, self.loop
        self.check_budgets(epoch_limit)
        if not self.stopped and loop.max_minutes and st.elapsed >= 60 * loop.max_minutes:
            self.stopped = "max_minutes"
        patience = loop.early_stopping_patience
        if not self.stopped and patience and st.bad_evals >= patience:
            self.stopped = "early_stopping"
        if self.stopped:
            self.already_finished = True
            self.last_saved = st.step  # the checkpoint it resumed from is this step

    def start_clock(self, trackers: Trackers | None = None) -> None:
        self.log = RunLog(self.out_dir, self.loop, self.is_main, self.state.step,
                          self.schedule.total, trackers)
        self.window_t0 = time.perf_counter()
        self.t0 = self.window_t0 - self.state.elapsed

    def micro_step(self, batch: dict[str, Tensor]) -> bool:
        """Forward + backward of one micro-batch; True when it completed an optimizer step."""
        st, loop, optim = self.state, self.loop, self.optim
        st.micro += 1
        self.prof.before_step(st.step + 1)
        n_tok = round(self.tokens_of(batch) * self.world)
        batch = to_device(batch, self.device)
        sync = st.micro % loop.grad_accum == 0
        with parallel.accumulate(self.engine, sync):
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.use_bf16):
                loss = self.engine.net(batch)
                total = loss / loop.grad_accum
                if sync and optim.l1 > 0:  # L1 on weight matrices
                    total = total + optim.l1 * sum(p.abs().sum() for p in self.params
                                                   if p.ndim >= 2)
                if sync and self.hooks.extra_loss is not None:
                    total = total + self.hooks.extra_loss(self.model)
            total.backward()
        loss_det = loss.detach().float()
        self.loss_sum += loss_det
        self.loss_count += 1
        self.nan_step = torch.where((self.nan_step < 0) & ~torch.isfinite(loss_det),
                                    st.step + 1, self.nan_step)
        st.tokens += n_tok
        self.window_tokens += n_tok
        if self.schedule.total is None and loop.max_tokens and st.micro == 1:
            # The first batch tells tokens/step: fix the schedule length for max_tokens.
            st.total_steps = total_steps(loop, len(self.batches), n_tok * loop.grad_accum)
            self.schedule.set_total(st.total_steps)
        if not sync:
            return False
        # The norm before clipping (inf: measured, not clipped), summed on the device.
        norm = parallel.plain(torch.nn.utils.clip_grad_norm_(self.params,
                                                             optim.grad_clip or math.inf))
        self.grad_norm_sum += norm.detach().float()
        self.norm_count += 1
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        st.step += 1
        if (line := self.prof.after_step(st.step)) and self.is_main:
            self.log.say(line)
        return True

    def check_budgets(self, epoch_limit: int | None) -> None:
        st, loop = self.state, self.loop
        if loop.max_steps and st.step >= loop.max_steps:
            self.stopped = "max_steps"
        elif loop.max_tokens and st.tokens >= loop.max_tokens:
            self.stopped = "max_tokens"
        elif epoch_limit and st.micro >= epoch_limit:
            self.stopped = "epochs"

    def check_time_and_signal(self, flag: dict[str, bool], synced: bool) -> None:
        """Time budget and Ctrl-C. Ranks agree on them only at log steps (``synced``: one
        all-reduce); between those a single process checks them alone."""
        minutes = self.loop.max_minutes
        over = bool(minutes) and time.perf_counter() - self.t0 >= 60 * (minutes or 0)
        if synced:
            if not self.stopped and minutes and agree(over, self.world, self.device):
                self.stopped = "max_minutes"
            if not self.stopped and agree(flag["stop"], self.world, self.device):
                self.stopped = "interrupted"
        elif self.world == 1:
            if over:
                self.stopped = "max_minutes"
            if flag["stop"]:
                self.stopped = "interrupted"

    def log_train(self, epoch: int, flag: dict[str, bool]) -> None:
        st = self.state
        loss = self.loss_sum / max(self.loss_count, 1)
        if self.world > 1:  # the loss of the whole (all ranks') batch; the norm is global
            dist.all_reduce(loss)
            loss = loss / self.world
            dist.all_reduce(self.nan_step, op=dist.ReduceOp.MAX)  # a NaN on any rank stops all
        avg, norm_sum = torch.stack([loss, self.grad_norm_sum]).tolist()  # the one host sync
        now = time.perf_counter()
        rec = {"kind": "train", "step": st.step, "epoch": epoch, "tokens": st.tokens,
               "loss": avg, "lr": self.scheduler.get_last_lr()[0], "grad_norm": norm_sum / max(self.norm_count, 1),
               "tokens_per_s": self.window_tokens / max(now - self.window_t0, 1e-9),
               "elapsed_s": now - self.t0, "peak_mem_mb": peak_memory_mb(self.device)}
        st.history.append(rec)
        if self.is_main:
            self.log.write(rec)
        self.log.advance(st.step, f"loss {avg:.4f}  {rec['tokens_per_s']:,.0f} tok/s")
        self.loss_sum.zero_()
        self.grad_norm_sum.zero_()
        self.loss_count, self.norm_count, self.window_t0, self.window_tokens = 0, 0, now, 0
        self.check_nan()
        self.check_time_and_signal(flag, synced=True)

    def check_nan(self) -> None:
        bad = int(self.nan_step.item())
        if bad >= 0:
            good = ckpt.latest_checkpoint(self.root) if self.root is not None else None
            raise PretuneError(
                f"loss became NaN at step {bad}; last good checkpoint: {good or 'none'}; lower "
                "optim.lr, keep optim.grad_clip set, or use precision=fp32")

    def run_eval(self) -> dict[str, float]:
        ev, st = self.evaluation, self.state
        assert ev is not None
        self.check_nan()  # a NaN model is not evaluated (its metrics would fail, or lie)
        self.model.eval()
        with torch.no_grad(), torch.autocast(self.device.type, torch.bfloat16,
                                             enabled=self.use_bf16), parallel.unsharded(self.engine):
            metrics = {k: float(v) for k, v in ev.fn(self.model).items()}
        self.model.train()
        st.last_eval_step = st.step
        rec = {"kind": "eval", "step": st.step, "tokens": st.tokens, **metrics}
        st.history.append(rec)
        if self.is_main:
            self.log.write(rec)
        key = ev.metric or ("val_loss" if "val_loss" in metrics else next(iter(metrics), None))
        if key is not None and key not in metrics:
            raise PretuneError(f"metric '{key}' is not among the evaluation metrics "
                               f"({', '.join(metrics)}); choose one of those")
        value = metrics.get(key) if key else None
        if value is not None and math.isfinite(value):
            if st.best_metric is None or ev.better(value, st.best_metric):
                st.best_metric, st.best_step, st.bad_evals = value, st.step, 0
                if ev.restore_best:
                    self.best_state = parallel.snapshot(self.engine)
            else:
                st.bad_evals += 1
            st.last_metric = value
            patience = self.loop.early_stopping_patience
            if patience and st.bad_evals >= patience:
                self.stopped = "early_stopping"
        if self.hooks.on_evaluate is not None:
            self.hooks.on_evaluate(self.evaluations, metrics)
        self.evaluations += 1
        return metrics

    def save(self) -> Path | None:
        self.check_nan()
        st = self.state
        self.last_saved = st.step
        if self.root is None:
            return None
        if st.last_eval_step == st.step and st.last_metric is not None:
            st.ckpt_metrics[st.step] = st.last_metric
        path = None
        if self.best_state is not None and st.best_step not in (None, self.best_saved):
            # restore_best: a resumed run must still end on these weights
            parallel.save_best(self.engine, self.root, st.best_step, self.best_state,
                               self.is_main)
            self.best_saved = st.best_step
        add_shards = parallel.sharded_checkpoint(self.engine, self.optimizer, self.root, st.step,
                                                 self.is_main)
        if self.is_main:
            st.elapsed = time.perf_counter() - self.t0
            state = {"scheduler": self.scheduler.state_dict(),
                     "batches": self.batches.state_dict(), "rng": ckpt.rng_state(),
                     "config_hash": self.trajectory, "counters": st.to_dict()}
            if not self.engine.sharded:  # fsdp: the optimizer's shards are in dcp/
                state["optimizer"] = self.optimizer.state_dict()
            scored = st.ckpt_metrics
            # The best scored checkpoint survives pruning.
            sign = -1.0 if self.evaluation is not None and self.evaluation.mode == "max" else 1.0
            keep = {min(scored, key=lambda s: sign * scored[s])} if scored else set()
            path = ckpt.save_checkpoint(self.root, st.step, self.engine.model, self.save_fn,
                                        state, self.loop.keep_last, keep, add_shards)
            ckpt.prune_best(self.root, st.best_step)
        parallel.release(self.engine)
        if self.world > 1:
            dist.barrier()
        return path

    def finish(self) -> FitResult:
        """Last evaluation and checkpoint, then the best weights back in the model."""
        st = self.state
        self.check_nan()
        if self.evaluation is not None and st.last_eval_step != st.step \
                and self.stopped != "interrupted":
            self.run_eval()
        last_path = None
        if self.root is not None:
            last_path = self.save() if self.last_saved != st.step else \
                ckpt.latest_checkpoint(self.root)
        ev = self.evaluation
        best = ev is not None and ev.restore_best and st.best_step not in (None, st.step)
        parallel.final_weights(self.engine, st.best_step if best else None, self.best_state,
                               self.root, self.device)
        return FitResult(steps=st.step, tokens=st.tokens, seconds=time.perf_counter() - self.t0,
                         history=st.history, best_metric=st.best_metric, best_step=st.best_step,
                         stopped_reason=self.stopped, last_checkpoint=last_path,
                         already_finished=self.already_finished)


__all__ = ["BatchStream", "Evaluation", "FitResult", "Hooks", "TrainState", "fit"]
