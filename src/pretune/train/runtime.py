"""What the loop stands on: the process's place in a ``torchrun`` job, the device, the optimizer
and its parameter groups (the one no-weight-decay rule), the learning-rate schedule, host ->
device copies, signals, and the default checkpoint writer. Each is one rule, used everywhere."""

from __future__ import annotations

import contextlib
import math
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pretune.config import LoopConfig, OptimConfig, config_hash
from pretune.errors import PretuneError

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto`` is this rank's GPU (``LOCAL_RANK`` under torchrun) or the CPU."""
    if local_rank is None:
        local_rank = distributed()[2]
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PretuneError(f"train.device={name} but no CUDA GPU is available; use device=auto")
    return torch.device(name)


def init_process(device_name: str, tf32: bool = True) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process; joins torchrun's process group (NCCL on
    GPUs, gloo on CPUs) the first time."""
    rank, world, local_rank = distributed()
    device = resolve_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    return rank, world, device


def no_decay_ids(model: nn.Module) -> set[int]:
    """Ids of the parameters weight decay must not touch: biases, normalisation weights (by
    module type or by name, e.g. BERT's ``LayerNorm`` or GPT-2's ``ln_f``) and anything 1-D —
    decay would only shrink them towards 0 (the BERT recipe)."""
    ids: set[int] = set()
    for mname, module in model.named_modules():
        is_norm = isinstance(module, _NORMS) or "norm" in type(module).__name__.lower()
        for pname, p in module.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if is_norm or p.ndim < 2 or pname.endswith("bias") or "norm" in full.lower():
                ids.add(id(p))
    return ids


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    skip = no_decay_ids(model)
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if id(p) in skip else decay).append(p)
    if not decay and not no_decay:
        raise PretuneError("nothing to train: every parameter of the model is frozen")
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(groups: list[dict], optim: OptimConfig, device: torch.device,
                   fused_ok: bool = True) -> torch.optim.Optimizer:
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g.setdefault("weight_decay", optim.weight_decay)
    if optim.name == "sgd":
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum)
    cls = torch.optim.AdamW if optim.name == "adamw" else torch.optim.Adam
    # One kernel for all params on GPU; foreach loop on CPU and for FSDP's DTensor shards.
    fused = device.type == "cuda" and fused_ok
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


class Schedule:
    """The learning-rate factor per step, over a total that a token budget fixes only once
    the first batch says how many tokens a step holds (``set_total``)."""

    def __init__(self, optim: OptimConfig, total: int | None) -> None:
        self.optim = optim
        self.set_total(total)

    def set_total(self, total: int | None) -> None:
        self.total = total
        self._factor = lr_lambda(self.optim, total)

    def __call__(self, step: int) -> float:
        return self._factor(step)


def total_steps(loop: LoopConfig, n_batches: int, tokens_per_step: int | None) -> int | None:
    """Optimizer steps the first budget allows (None when only time bounds the run)."""
    candidates = []
    if loop.max_steps:
        candidates.append(loop.max_steps)
    if loop.epochs:
        candidates.append(max(1, math.ceil(loop.epochs * n_batches / loop.grad_accum)))
    if loop.max_tokens and tokens_per_step:
        candidates.append(max(1, math.ceil(loop.max_tokens / tokens_per_step)))
    return min(candidates) if candidates else None


def default_tokens(batch: dict[str, Tensor]) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())  # CPU tensor: no device sync
    first = batch.get("input_ids", next(iter(batch.values())))
    return int(first.numel())


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    if device.type != "cuda":
        return batch
    # Pinned host memory makes the copy asynchronous (overlaps the previous step's compute).
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


@contextlib.contextmanager
def signals_to_flag(flag: dict[str, bool]) -> Iterator[None]:
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


def trajectory_hash(loop: LoopConfig, optim: OptimConfig) -> str:
    """Hash of the settings that change the trajectory (a resume must match them);
    logging / evaluation / saving / budget settings may change between runs."""
    keep = {"batch_size", "grad_accum", "seed", "precision"}
    return config_hash(loop, exclude=set(LoopConfig.model_fields) - keep) + config_hash(optim)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA max allocated on a GPU, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kb / 1024


def agree(flag: bool, world: int, device: torch.device) -> bool:
    """True on every rank if any rank says True (one all-reduce; only called at log steps)."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class LossModule(nn.Module):
    """Wraps model + loss fn so DDP sees one forward (gradient sync needs DDP's forward even
    when the loss calls sub-modules directly, as the sparse MLM head does)."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, dict], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.loss_fn(self.model, batch)


def default_save(model: nn.Module, path: Path) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar per checkpoint
    try:
        model.save_pretrained(path)
    finally:
        hf_logging.enable_progress_bar()
