"""THE training loop: pre-training and fine-tuning both call ``fit``. Written out plainly.

One optimizer step = ``grad_accum`` micro-batches. The loss is accumulated on the device and
read back only every ``log_every`` steps (no per-step host sync). Checkpoints are atomic and
resume is exact (bitwise on CPU with a fixed seed). Under ``torchrun`` (WORLD_SIZE > 1) the
model is wrapped in DDP and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pretune.config import LoopConfig, OptimConfig, config_hash
from pretune.errors import PretuneError
from pretune.train import checkpoint as ckpt


class BatchStream(Protocol):
    def __iter__(self) -> Iterator[dict[str, Tensor]]: ...
    def __len__(self) -> int: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def set_epoch(self, epoch: int) -> None: ...


@dataclass
class FitResult:
    steps: int
    tokens: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    best_step: int | None = None
    stopped_reason: str = ""
    last_checkpoint: Path | None = None


class _LossModule(nn.Module):
    """Wraps model + loss fn so DDP sees one forward (gradient sync needs DDP's forward even
    when the loss calls sub-modules directly, as the sparse MLM head does)."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, dict], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.loss_fn(self.model, batch)


# --------------------------------------------------------------------------- setup helpers


def distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PretuneError(f"train.device={name} but no CUDA GPU is available; use device=auto")
    return torch.device(name)


def _no_decay(name: str, p: nn.Parameter) -> bool:
    # Biases and norm weights (1-D) are not decayed (BERT recipe).
    return p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if _no_decay(name, p) else decay).append(p)
    if not decay and not no_decay:
        raise PretuneError("nothing to train: every parameter of the model is frozen")
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(groups: list[dict], optim: OptimConfig, device: torch.device
                   ) -> torch.optim.Optimizer:
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g.setdefault("weight_decay", optim.weight_decay)
    if optim.name == "sgd":
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum)
    cls = torch.optim.AdamW if optim.name == "adamw" else torch.optim.Adam
    fused = device.type == "cuda"  # one kernel for all params on GPU; foreach loop on CPU
    return cls(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, fused=fused)


def lr_lambda(optim: OptimConfig, total_steps: int | None) -> Callable[[int], float]:
    """Warmup (linear from 1/(w+1)) then cosine/linear decay to 0 over ``total_steps``."""
    warmup = optim.warmup_steps
    if warmup is None:
        warmup = round(optim.warmup_ratio * total_steps) if total_steps else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if optim.schedule == "constant" or not total_steps:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if optim.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return factor


def _default_tokens(batch: dict[str, Tensor]) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())  # CPU tensor: no device sync
    first = batch.get("input_ids", next(iter(batch.values())))
    return int(first.numel())


def _total_steps(loop: LoopConfig, n_batches: int, tokens_per_step: int | None) -> int | None:
    candidates = []
    if loop.max_steps:
        candidates.append(loop.max_steps)
    if loop.epochs:
        candidates.append(max(1, math.ceil(loop.epochs * n_batches / loop.grad_accum)))
    if loop.max_tokens and tokens_per_step:
        candidates.append(max(1, math.ceil(loop.max_tokens / tokens_per_step)))
    return min(candidates) if candidates else None


def _to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    if device.type != "cuda":
        return batch
    # Pinned host memory makes the copy asynchronous (overlaps the previous step's compute).
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


@contextlib.contextmanager
def _signals_to_flag(flag: dict[str, bool]) -> Iterator[None]:
    """SIGINT/SIGTERM set ``flag['stop']``; the loop saves and exits at the next step."""
    installed: dict[int, Any] = {}

    def handler(signum, frame):  # noqa: ARG001
        flag["stop"] = True

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            installed[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for sig, old in installed.items():
            signal.signal(sig, old)


def _hashable_config(loop: LoopConfig, optim: OptimConfig) -> str:
    # Fields that change the trajectory; logging/eval/saving/budget settings may change.
    keep = {"batch_size", "grad_accum", "seed", "precision"}
    return config_hash(loop, exclude=set(LoopConfig.model_fields) - keep) + config_hash(optim)


def _agree(flag: bool, world: int, device: torch.device) -> bool:
    """True on every rank if any rank says True (one all-reduce; only called at log steps)."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def default_save(model: nn.Module, path: Path) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar per checkpoint
    try:
        model.save_pretrained(path)
    finally:
        hf_logging.enable_progress_bar()


class _Logger:
    """metrics.jsonl + TensorBoard + a rich progress bar; only rank 0 writes."""

    def __init__(self, out_dir: Path | None, loop: LoopConfig, enabled: bool, step: int,
                 total: int | None) -> None:
        self.out_dir = out_dir if enabled else None
        self.tb = None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._truncate_after(step)  # a resumed run rewrites what came after its checkpoint
            if loop.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=step + 1)
        self.bar = None
        if enabled and loop.progress:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("step {task.completed}"), BarColumn(), TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(), transient=False,
            )
            self.task = self.bar.add_task("train", total=total, completed=step, info="")
            self.bar.start()

    def _truncate_after(self, step: int) -> None:
        path = self.out_dir / "metrics.jsonl"
        if path.is_file():
            keep = [ln for ln in path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= step]
            path.write_text("".join(k + "\n" for k in keep))

    def write(self, record: dict[str, Any]) -> None:
        if self.out_dir is not None:
            with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            prefix = "train" if record["kind"] == "train" else "eval"
            for k, v in record.items():
                if k not in ("kind", "step") and isinstance(v, int | float):
                    self.tb.add_scalar(f"{prefix}/{k}", v, record["step"])

    def advance(self, step: int, info: str | None = None) -> None:
        if self.bar is not None:
            kw = {"info": info} if info is not None else {}
            self.bar.update(self.task, completed=step, **kw)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.tb is not None:
            self.tb.close()


# --------------------------------------------------------------------------- fit


def fit(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, dict[str, Tensor]], Tensor],
    batches: BatchStream,
    loop: LoopConfig,
    optim: OptimConfig,
    out_dir: Path | None,
    *,
    param_groups: list[dict] | None = None,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    metric: str | None = None,
    mode: Literal["min", "max"] = "min",
    restore_best: bool = False,
    on_epoch_start: Callable[[int, nn.Module], None] | None = None,
    save_fn: Callable[[nn.Module, Path], None] | None = None,
    resume: bool = False,
    tokens_per_batch: Callable[[dict], int] | None = None,
    extra_loss: Callable[[nn.Module], Tensor] | None = None,
) -> FitResult:
    """Train ``model`` on ``batches`` until the first budget (steps/tokens/minutes/epochs) ends.

    ``loss_fn(model, batch)`` returns a scalar loss. ``evaluate(model)`` returns metrics; its
    ``metric`` (default ``val_loss`` or the first key) drives early stopping, the best
    checkpoint and ``restore_best``. Checkpoints go to ``out_dir/checkpoints/step-N``."""
    if not any((loop.max_steps, loop.max_tokens, loop.max_minutes, loop.epochs)):
        raise PretuneError("no training budget: set one of train.max_steps, train.max_tokens, "
                           "train.max_minutes or train.epochs")
    n_batches = len(batches)
    if n_batches == 0:
        raise PretuneError("the training data gives 0 batches per epoch; lower train.batch_size")
    save_fn = save_fn or default_save
    tokens_per_batch = tokens_per_batch or _default_tokens
    rank, world, local_rank = distributed()
    is_main = rank == 0
    device = resolve_device(loop.device, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = loop.tf32
        torch.backends.cudnn.allow_tf32 = loop.tf32
    torch.manual_seed(loop.seed)  # dropout stream (a resume restores the saved RNG instead)

    model.to(device)
    model.train()
    groups = param_groups or default_param_groups(model, optim.weight_decay)
    optimizer = make_optimizer(groups, optim, device)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    l1_params = [p for p in params if p.ndim >= 2]
    sched_total: dict[str, int | None] = {"n": _total_steps(loop, n_batches, None)}
    base_factor: dict[str, Callable[[int], float]] = {"f": lr_lambda(optim, sched_total["n"])}
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: base_factor["f"](s))
    use_bf16 = loop.precision == "bf16" or (loop.precision == "auto" and device.type == "cuda")
    if loop.compile:
        from pretune.models.backbone import Backbone

        Backbone(model).encoder.compile()  # in place: state_dict keys stay unchanged
    net: nn.Module = _LossModule(model, loss_fn)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(net, device_ids=[device] if device.type == "cuda" else None)

    root = out_dir / "checkpoints" if out_dir is not None else None
    chash = _hashable_config(loop, optim)
    st: dict[str, Any] = {"step": 0, "micro": 0, "tokens": 0, "elapsed": 0.0, "best_metric": None,
                          "best_step": None, "bad_evals": 0, "history": [], "ckpt_metrics": {},
                          "epoch": 0, "total_steps": sched_total["n"], "last_eval_step": -1}
    if resume:
        last = ckpt.latest_checkpoint(root) if root is not None else None
        if last is None:
            raise PretuneError(f"nothing to resume: no checkpoint under {root}; run without --resume")
        saved = ckpt.load_trainer_state(last)
        if saved.get("config_hash") != chash:
            raise PretuneError(
                f"cannot resume from {last}: it was trained with different optim / batch_size / "
                "grad_accum / seed / precision settings; use the same config or --overwrite")
        ckpt.load_weights(model, last)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        batches.load_state_dict(saved["batches"])
        st.update(saved["counters"])
        st["ckpt_metrics"] = {int(k): v for k, v in st["ckpt_metrics"].items()}
        ckpt.set_rng_state(saved["rng"])
    if st["total_steps"] is not None:
        sched_total["n"] = st["total_steps"]
        base_factor["f"] = lr_lambda(optim, sched_total["n"])

    better = (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)
    best_state: dict[str, Tensor] | None = None
    log = _Logger(out_dir, loop, is_main, st["step"], sched_total["n"])
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    nan_step = torch.full((), -1, dtype=torch.long, device=device)
    window_t0, window_tokens = time.perf_counter(), 0
    t0 = time.perf_counter() - st["elapsed"]
    epoch_limit = math.ceil(loop.epochs * n_batches) if loop.epochs else None
    stopped = ""
    last_saved = -1

    def check_nan() -> None:
        bad = int(nan_step.item())
        if bad >= 0:
            good = ckpt.latest_checkpoint(root) if root is not None else None
            raise PretuneError(
                f"loss became NaN at step {bad}; last good checkpoint: {good or 'none'}; lower "
                "optim.lr, keep optim.grad_clip set, or use precision=fp32")

    def run_eval() -> dict[str, float]:
        nonlocal best_state, stopped
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=use_bf16):
            metrics = {k: float(v) for k, v in evaluate(model).items()}
        model.train()
        st["last_eval_step"] = st["step"]
        rec = {"kind": "eval", "step": st["step"], "tokens": st["tokens"], **metrics}
        st["history"].append(rec)
        if is_main:
            log.write(rec)
        key = metric or ("val_loss" if "val_loss" in metrics else next(iter(metrics), None))
        if key is not None and key not in metrics:
            raise PretuneError(f"metric '{key}' is not among the evaluation metrics "
                               f"({', '.join(metrics)}); choose one of those")
        value = metrics.get(key) if key else None
        if value is not None and math.isfinite(value):
            if st["best_metric"] is None or better(value, st["best_metric"]):
                st["best_metric"], st["best_step"], st["bad_evals"] = value, st["step"], 0
                if restore_best:
                    best_state = {k: v.detach().to("cpu", copy=True)
                                  for k, v in model.state_dict().items()}
            else:
                st["bad_evals"] += 1
            st["last_metric"] = value
            if loop.early_stopping_patience and st["bad_evals"] >= loop.early_stopping_patience:
                stopped = "early_stopping"
        return metrics

    def save() -> Path | None:
        nonlocal last_saved
        check_nan()
        last_saved = st["step"]
        if root is None:
            return None
        if st.get("last_eval_step") == st["step"] and "last_metric" in st:
            st["ckpt_metrics"][st["step"]] = st["last_metric"]
        path = None
        if is_main:
            st["elapsed"] = time.perf_counter() - t0
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "batches": batches.state_dict(), "rng": ckpt.rng_state(),
                     "config_hash": chash, "counters": dict(st)}
            scored = st["ckpt_metrics"]
            # The best scored checkpoint survives pruning.
            sign = 1.0 if mode == "min" else -1.0
            keep = {min(scored, key=lambda s: sign * scored[s])} if scored else set()
            path = ckpt.save_checkpoint(root, st["step"], model, save_fn, state, loop.keep_last,
                                        keep)
        if world > 1:
            dist.barrier()
        return path

    flag = {"stop": False}
    empty_epochs = 0
    fresh_epoch = not resume  # a resumed stream is already positioned inside its epoch
    with _signals_to_flag(flag), contextlib.closing(log):
        while not stopped:
            epoch = st["epoch"]
            if fresh_epoch:
                batches.set_epoch(epoch)
            fresh_epoch = True
            if on_epoch_start is not None:
                on_epoch_start(epoch, model)
            micro_before = st["micro"]
            for batch in batches:
                st["micro"] += 1
                n_tok = tokens_per_batch(batch) * world
                batch = _to_device(batch, device)
                sync = st["micro"] % loop.grad_accum == 0
                no_sync = net.no_sync() if world > 1 and not sync else contextlib.nullcontext()
                with no_sync:
                    with torch.autocast(device.type, torch.bfloat16, enabled=use_bf16):
                        loss = net(batch)
                        total = loss / loop.grad_accum
                        if sync and optim.l1 > 0:
                            total = total + optim.l1 * sum(p.abs().sum() for p in l1_params)
                        if sync and extra_loss is not None:
                            total = total + extra_loss(model)
                    total.backward()
                loss_det = loss.detach().float()
                loss_sum += loss_det
                loss_count += 1
                nan_step = torch.where((nan_step < 0) & ~torch.isfinite(loss_det),
                                       st["step"] + 1, nan_step)
                st["tokens"] += n_tok
                window_tokens += n_tok
                if sched_total["n"] is None and loop.max_tokens and st["micro"] == 1:
                    # First batch tells tokens/step: fix the schedule length for max_tokens.
                    sched_total["n"] = st["total_steps"] = _total_steps(
                        loop, n_batches, n_tok * loop.grad_accum)
                    base_factor["f"] = lr_lambda(optim, sched_total["n"])
                if not sync:
                    continue
                if optim.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, optim.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                st["step"] += 1
                step = st["step"]

                if loop.max_steps and step >= loop.max_steps:
                    stopped = "max_steps"
                elif loop.max_tokens and st["tokens"] >= loop.max_tokens:
                    stopped = "max_tokens"
                elif epoch_limit and st["micro"] >= epoch_limit:
                    stopped = "epochs"
                log_now = step % loop.log_every == 0 or bool(stopped)
                if log_now:
                    avg = float((loss_sum / max(loss_count, 1)).item())  # the one host sync
                    now = time.perf_counter()
                    rec = {"kind": "train", "step": step, "epoch": epoch, "tokens": st["tokens"],
                           "loss": avg, "lr": scheduler.get_last_lr()[0],
                           "tokens_per_s": window_tokens / max(now - window_t0, 1e-9),
                           "elapsed_s": now - t0}
                    st["history"].append(rec)
                    if is_main:
                        log.write(rec)
                    log.advance(step, f"loss {avg:.4f}  {rec['tokens_per_s']:,.0f} tok/s")
                    loss_sum.zero_()
                    loss_count, window_t0, window_tokens = 0, now, 0
                    check_nan()
                    if not stopped and loop.max_minutes and _agree(
                            now - t0 >= 60 * loop.max_minutes, world, device):
                        stopped = "max_minutes"
                    if not stopped and _agree(flag["stop"], world, device):
                        stopped = "interrupted"
                else:
                    log.advance(step)
                    if world == 1 and loop.max_minutes and time.perf_counter() - t0 >= 60 * loop.max_minutes:
                        stopped = "max_minutes"
                    if world == 1 and flag["stop"]:
                        stopped = "interrupted"
                if evaluate is not None and loop.eval_every and step % loop.eval_every == 0:
                    run_eval()
                if loop.save_every and step % loop.save_every == 0:
                    save()
                if stopped:
                    break
            else:  # epoch finished
                # A resumed stream may sit at its epoch's end once; twice means it is empty.
                empty_epochs = empty_epochs + 1 if st["micro"] == micro_before else 0
                if empty_epochs >= 2:
                    raise PretuneError("the batch stream yielded no batches for a whole epoch")
                if evaluate is not None and loop.eval_every is None and loop.epochs \
                        and st["last_eval_step"] != st["step"]:
                    run_eval()
                st["epoch"] = epoch + 1

    check_nan()
    if evaluate is not None and st["last_eval_step"] != st["step"] and stopped != "interrupted":
        run_eval()
    last_path = None
    if root is not None:
        last_path = save() if last_saved != st["step"] else ckpt.latest_checkpoint(root)
    if restore_best and st["best_step"] is not None and st["best_step"] != st["step"]:
        if best_state is None and root is not None and (root / f"step-{st['best_step']}").is_dir():
            ckpt.load_weights(model, root / f"step-{st['best_step']}")
        elif best_state is not None:
            model.load_state_dict(best_state)
    return FitResult(
        steps=st["step"], tokens=st["tokens"], seconds=time.perf_counter() - t0,
        history=st["history"], best_metric=st["best_metric"], best_step=st["best_step"],
        stopped_reason=stopped, last_checkpoint=last_path,
    )
