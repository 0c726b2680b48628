"""How the model is spread over ``torchrun``'s processes: ``train.strategy``.

- ``ddp`` (default): every process holds the whole model; DDP averages the gradients.
- ``fsdp``: each process holds 1/world of every weight, gradient and optimizer state, through
  PyTorch's own ``fully_shard`` (FSDP2: per-parameter DTensor shards). Chosen over
  accelerate's FSDP plugin because the loop is already ours: FSDP2 is one call per module,
  no wrapper class, no second set of loop conventions, and the same API on CPU (gloo, what the
  tests run) and GPUs (NCCL). Each transformer block (the model's ``_no_split_modules``) is
  one all-gather unit; the rest (embeddings, norms, heads) is the root unit. Checkpoints are
  sharded with ``torch.distributed.checkpoint`` (DCP: each rank writes its own shards, in
  ``step-N/dcp/``) beside the plain HF export rank 0 writes from the gathered weights.

The caller's model stays a plain module: under fsdp the loop trains a sharded copy of it,
keeps the original on the meta device (no full copy per rank while training) and gathers the
weights back into it (one tensor at a time, in host memory) for each checkpoint's export and
at the end, so what ``fit`` returns to is the same for every strategy. In one process both
are plain training.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pretune.errors import PretuneError
from pretune.train import checkpoint as ckpt


@dataclass
class Engine:
    kind: str  # "single" | "ddp" | "fsdp"
    net: nn.Module  # what the loop calls: loss = net(batch)
    trained: nn.Module  # the module the optimizer steps (the sharded copy under fsdp)
    model: nn.Module  # the caller's model; holds the final weights when fit returns
    ties: list[list[str]] = field(default_factory=list)  # names of one shared parameter each

    @property
    def sharded(self) -> bool:
        return self.kind == "fsdp"


def blocks(model: nn.Module) -> list[nn.Module]:
    """FSDP's units: the blocks HF says not to split (``_no_split_modules`` of every model
    inside) that hold no weight tied to one outside them (BERT's word embeddings are its
    decoder's too: those stay in the root unit)."""
    names: set[str] = set()
    for m in model.modules():
        names |= set(getattr(m, "_no_split_modules", None) or ())
    uses: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        uses[id(p)] = uses.get(id(p), 0) + 1
    found = []
    for m in model.modules():
        if type(m).__name__ not in names:
            continue
        inside: dict[int, int] = {}
        for _, p in m.named_parameters(remove_duplicate=False):
            inside[id(p)] = inside.get(id(p), 0) + 1
        if all(uses[i] == n for i, n in inside.items()) and \
                not any(m in b.modules() for b in found):
            found.append(m)
    return found


def build(model: nn.Module, net: nn.Module, strategy: str, device: torch.device,
          world: int, groups: list[dict]) -> tuple[Engine, list[dict]]:
    """``net`` is ``LossModule(model, loss_fn)``; returns what the loop trains and the
    optimizer's parameter groups (``groups``, of ``model``) pointing at its parameters."""
    if world == 1:
        model.to(device)
        return Engine("single", net, model, model), groups
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        model.to(device)
        return Engine("ddp", DDP(net, device_ids=[device] if device.type == "cuda" else None),
                      model, model), groups
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world,))
    if device.type == "cpu":
        _return_freed_buffers()
    trained = copy.deepcopy(model)  # its shards move to the device, the rest is freed
    sharded_net = type(net)(trained, net.loss_fn)
    for block in blocks(trained):
        fully_shard(block, mesh=mesh)
    fully_shard(sharded_net, mesh=mesh)
    groups = _remap_groups(groups, model, trained)
    ties = _ties(model)
    model.to("meta")  # no full copy per rank while training: gather() fills it again
    return Engine("fsdp", sharded_net, trained, model, ties), groups


def _return_freed_buffers() -> None:
    """On CPU every block's all-gathered weights are a fresh buffer each forward/backward;
    glibc's malloc raises its mmap threshold after the first frees and then keeps the freed
    buffers in its heap: measured, FSDP's memory per rank grew to the DDP level in 4 steps.
    A fixed threshold (as MALLOC_MMAP_THRESHOLD_ does) hands them back to the OS at once."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD (fixing it also fixes M_TRIM)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def _ties(model: nn.Module) -> list[list[str]]:
    """Parameters shared under several names (tied embeddings): moving a module to and from
    the meta device makes them separate, ``_retie`` shares them again."""
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    return [n for n in names.values() if len(n) > 1]


def _retie(model: nn.Module, ties: list[list[str]]) -> None:
    for first, *rest in ties:
        shared = model.get_parameter(first)
        for name in rest:
            owner, _, leaf = name.rpartition(".")
            model.get_submodule(owner)._parameters[leaf] = shared


def check_supported(strategy: str, world: int, l1: float, hooks: object) -> None:
    """What the strategies cannot do, as one line (before anything is built)."""
    if world > 1 and getattr(hooks, "on_epoch_start", None) is not None:
        raise PretuneError("gradual unfreezing changes which weights train between epochs; "
                           "DDP and FSDP fix them when they are set up, so it runs in one "
                           "process: launch it without torchrun")
    if world == 1 or strategy != "fsdp":
        return
    if l1 > 0:
        raise PretuneError("optim.l1 is not supported with train.strategy=fsdp; set optim.l1=0 "
                           "or use train.strategy=ddp")
    if getattr(hooks, "extra_loss", None) is not None:
        raise PretuneError("a penalty on the weights (L2-SP) is not supported with "
                           "train.strategy=fsdp; use train.strategy=ddp")


def _remap_groups(groups: list[dict], model: nn.Module, trained: nn.Module) -> list[dict]:
    """The caller's parameter groups (of ``model``), pointing at ``trained``'s parameters."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    new = dict(trained.named_parameters())
    return [{**g, "params": [new[name_of[id(p)]] for p in g["params"]]} for g in groups]


def accumulate(engine: Engine, sync: bool) -> contextlib.AbstractContextManager:
    """A micro-batch that does not end a step skips the gradient all-reduce/reduce-scatter."""
    if engine.kind == "ddp" and not sync:
        return engine.net.no_sync()
    if engine.sharded:
        engine.net.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


@contextlib.contextmanager
def unsharded(engine: Engine) -> Iterator[None]:
    """Evaluation calls the model, not ``net``: gather the root unit's weights around it (the
    blocks gather their own in their forward). Every rank must run the same forwards."""
    if not engine.sharded:
        yield
        return
    engine.net.unshard()
    try:
        yield
    finally:
        engine.net.reshard()


def plain(value: Tensor) -> Tensor:
    """A value computed over shards (the gradient norm) as an ordinary tensor."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def save_best(engine: Engine, root: Path, step: int, best: dict[str, Tensor],
              is_main: bool) -> None:
    """The best evaluation's weights to ``best-step-N.safetensors`` (rank 0 writes; under
    fsdp every rank first gathers its shards of them: call it on every rank)."""
    if engine.sharded:
        from torch.distributed.tensor import DTensor

        best = {k: (v.full_tensor() if isinstance(v, DTensor) else v).cpu()
                for k, v in best.items()}
    if is_main:
        ckpt.save_best(root, step, best)


def snapshot(engine: Engine) -> dict[str, Tensor]:
    """The weights now (the best evaluation's): on the host, or this rank's shards."""
    sd = engine.trained.state_dict()
    if engine.sharded:
        return {k: v.detach().clone() for k, v in sd.items()}
    return {k: v.detach().to("cpu", copy=True) for k, v in sd.items()}


def gather(engine: Engine, keep: bool = True) -> None:
    """fsdp: the full weights (and buffers) into the caller's model, in host memory, one
    tensor at a time (a collective: every rank calls it; ``keep=False``: this rank only
    takes part, a checkpoint's export is rank 0's). ``release`` empties it again. Float
    buffers (BatchNorm statistics) are the ranks' mean: each rank saw other rows."""
    if not engine.sharded:
        return
    from torch.distributed.tensor import DTensor

    model = engine.model
    if keep and any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        model.to_empty(device="cpu")  # storage, filled below
        _retie(model, engine.ties)
    target = model.state_dict()
    buffers = dict(model.named_buffers())
    world = dist.get_world_size()
    with torch.no_grad():
        for name, value in engine.trained.state_dict().items():
            if isinstance(value, DTensor):
                value = value.full_tensor()
            if keep:
                target[name].copy_(value.to(target[name].device))
        for name, value in engine.trained.named_buffers():  # non-persistent ones too
            if value.is_floating_point():
                value = value.clone()
                dist.all_reduce(value)
                value /= world
            if keep:
                buffers[name].copy_(value.to(buffers[name].device))


def release(engine: Engine) -> None:
    """fsdp, after a checkpoint's export: the caller's model holds no weights again."""
    if engine.sharded:
        engine.model.to("meta")


def save_sharded(engine: Engine, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Every rank writes its shards of weights + optimizer state into ``path`` (DCP)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(engine.net, optimizer)
    path.mkdir(parents=True, exist_ok=True)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path))


def load_checkpoint(engine: Engine, optimizer: torch.optim.Optimizer, path: Path,
                    saved: dict) -> None:
    """A resume's weights + optimizer state: from the shards (fsdp) or the HF files."""
    if engine.sharded:
        load_sharded(engine, optimizer, path / "dcp")
    elif "optimizer" not in saved:
        raise PretuneError(f"{path} was saved with train.strategy=fsdp (sharded state); "
                           "resume it under torchrun with train.strategy=fsdp")
    else:
        ckpt.load_weights(engine.model, path)
        optimizer.load_state_dict(saved["optimizer"])


def final_weights(engine: Engine, best_step: int | None, best: dict[str, Tensor] | None,
                  root: Path | None, device: torch.device) -> None:
    """The weights ``fit`` ends on, in the caller's model: the last step's, or the best
    evaluation's (``best_step``: kept in memory as ``best``, else from its checkpoint)."""
    if engine.sharded:
        if best_step is not None and best is not None:
            engine.trained.load_state_dict(best)  # this rank's shards of the best weights
            best_step = None
        gather(engine)
        engine.model.to(device)
        best = None
    if best_step is not None:
        ckpt.restore_best(engine.model, root, best_step, best)


def load_sharded(engine: Engine, optimizer: torch.optim.Optimizer, path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not (path / ".metadata").is_file():
        raise PretuneError(f"{path.parent} has no sharded state ({path.name}/.metadata); it was "
                           "not saved with train.strategy=fsdp: resume with the strategy it was "
                           "saved with, or --overwrite")
    model_sd, optim_sd = get_state_dict(engine.net, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(engine.net, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optim"])


def sharded_checkpoint(engine: Engine, optimizer: torch.optim.Optimizer, root: Path, step: int,
                       is_main: bool) -> Callable[[Path], None] | None:
    """fsdp: write this step's shards (all ranks) and gather the weights for the HF export;
    returns what moves the shards into rank 0's checkpoint dir before it is renamed."""
    if not engine.sharded:
        return None
    shards = root / f".dcp-step-{step}"
    save_sharded(engine, optimizer, shards)
    gather(engine, keep=is_main)  # rank 0 exports it; release() after the checkpoint
    dist.barrier()
    return (lambda tmp: os.replace(shards, tmp / "dcp")) if is_main else None


# --------------------------------------------------------------------------- fine-tuning data


class RankBatches:
    """This rank's rows of every batch of ``stream`` (a stream built with the batch size of
    all ranks together): rank r takes rows r, r+world, ... of each length-grouped batch, so
    N processes at batch size B see what one process sees at batch size N*B. A last batch with
    fewer rows than processes gives each rank one of them (some twice), so every rank takes
    the same number of steps as the stream has batches."""

    def __init__(self, stream, rank: int, world: int,  # noqa: ANN001 - a BatchStream
                 tokens_of: Callable[[dict], int] | None = None) -> None:
        self.stream, self.rank, self.world = stream, rank, world
        self.tokens_of, self.last_tokens = tokens_of, 0

    def tokens(self, _rows: dict[str, Tensor]) -> float:
        """The loop's tokens_per_batch: the whole batch's tokens over the ranks (the loop
        multiplies by world), the same on every rank, so token budgets and the schedule agree."""
        return self.last_tokens / self.world

    def __len__(self) -> int:
        return len(self.stream)

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def state_dict(self) -> dict:
        return {**self.stream.state_dict(), "world_size": self.world}

    def load_state_dict(self, state: dict) -> None:
        if state.get("world_size", 1) != self.world:
            raise PretuneError(f"cannot resume: the checkpoint was trained on "
                               f"{state.get('world_size', 1)} process(es), now {self.world}; "
                               "resume with the same number of processes")
        self.stream.load_state_dict(state)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        from pretune.train.runtime import default_tokens

        for batch in self.stream:
            self.last_tokens = (self.tokens_of or default_tokens)(batch)
            rows = len(next(iter(batch.values())))
            take = slice(self.rank, None, self.world) if rows >= self.world else \
                slice(self.rank % rows, self.rank % rows + 1)
            yield {k: v[take] for k, v in batch.items()}


def rank_part(n: int, rank: int, world: int) -> tuple[list[int], int]:
    """This rank's contiguous share of ``n`` evaluation examples, padded (with the last
    example) to the same length on every rank so each runs the same forwards; and how many
    of them are real."""
    per = -(-n // world)
    real = list(range(rank * per, min(n, (rank + 1) * per)))
    return real + [n - 1] * (per - len(real)), len(real)


def gather_parts(outputs, real: int):  # noqa: ANN001, ANN201 - a kind's output array
    """Every rank's outputs of its ``rank_part``, in example order (one all-gather)."""
    import numpy as np

    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, outputs[:real])
    return np.concatenate([p for p in parts if len(p)])
