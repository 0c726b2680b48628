"""Checkpoints: atomic save, exact resume, retention.

``<out>/checkpoints/step-N/`` is a Hugging Face directory (whatever ``save_fn`` writes:
``config.json`` + ``model.safetensors`` + tokenizer ...) plus ``trainer_state.pt`` (optimizer,
scheduler, RNG states, batch-stream position, counters, config hash). It is written to a
temporary directory and renamed into place, so a crash mid-save leaves the previous checkpoint
intact; ``<out>/checkpoints/latest`` names the newest complete one. Weights not covered by the
HF files (e.g. a PEFT adapter dir) go to ``trainable.safetensors`` so resume is always exact.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from pretune.errors import PretuneError

STATE_FILE = "trainer_state.pt"
EXTRA_WEIGHTS = "trainable.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_TEMP = re.compile(r"^\.(?:tmp-step-\d+|old-step-\d+|latest|best-tmp)-(\d+)(?:\.safetensors)?$")
_SHARDS = re.compile(r"^\.dcp-step-\d+$")  # FSDP shards of a save cut short (all ranks write)
_BEST = re.compile(r"^best-step-(\d+)\.safetensors$")


def rng_state() -> dict[str, Any]:
    """RNG states as tensors/lists only, so ``torch.load(weights_only=True)`` can read them."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _weights_needed(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every distinct parameter + persistent buffer, by its state_dict name."""
    sd = model.state_dict()
    named = dict(model.named_parameters())  # tied duplicates removed
    names = set(named) | {n for n, _ in model.named_buffers() if n in sd}
    return {n: sd[n] for n in names}


def _safetensors_keys(directory: Path) -> set[str]:
    keys: set[str] = set()
    for f in directory.glob("*.safetensors"):
        with safe_open(str(f), "pt") as fh:
            keys |= set(fh.keys())
    return keys


def step_dirs(root: Path) -> list[tuple[int, Path]]:
    """(step, dir) of the complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    return sorted(s for s in found if (s[1] / STATE_FILE).is_file())


def save_checkpoint(
    root: Path, step: int, model: nn.Module, save_fn: Callable[[nn.Module, Path], None],
    state: dict[str, Any], keep_last: int, keep_steps: set[int] = frozenset(),
    add: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``root/step-<step>`` atomically, point ``root/latest`` at it, prune old ones.

    ``keep_steps``: checkpoints never pruned (the best one). ``add(tmp)``: puts more into
    the checkpoint before it is renamed into place (FSDP's sharded state)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_fn(model, tmp)
    needed = _weights_needed(model)
    missing = set(needed) - _safetensors_keys(tmp)
    if missing:  # e.g. a PEFT dir (adapter names differ) or a custom save_fn
        save_file({n: needed[n].detach().cpu().contiguous() for n in sorted(missing)},
                  str(tmp / EXTRA_WEIGHTS))
    if add is not None:
        add(tmp)
    torch.save(state, tmp / STATE_FILE)
    if final.exists():  # re-saving the same step (e.g. interrupt right after a periodic save)
        old = root / f".old-step-{step}-{os.getpid()}"
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, final)
    pointer = root / f".latest-{os.getpid()}"
    pointer.write_text(final.name + "\n")
    os.replace(pointer, root / "latest")
    prune(root, keep_last, set(keep_steps) | {step})
    return final


def prune(root: Path, keep_last: int, keep_steps: set[int]) -> None:
    dirs = step_dirs(root)
    keep = {s for s, _ in dirs[-keep_last:]} | keep_steps
    for s, d in dirs:
        if s not in keep:
            shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(root: Path) -> list[str]:
    """Remove what killed saves left behind (``.tmp-step-N-<pid>/``, ``.latest-<pid>``...)
    when the process that wrote it is gone; returns their names."""
    removed = []
    if not root.is_dir():
        return removed
    for p in root.iterdir():
        m = _TEMP.match(p.name)
        if _SHARDS.match(p.name) or m and (int(m.group(1)) == os.getpid()
                                           or not _alive(int(m.group(1)))):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def save_best(root: Path, step: int, state: dict[str, torch.Tensor]) -> None:
    """The best evaluation's weights as ``best-step-N.safetensors`` (written before the
    checkpoint that records ``best_step=N``, so a resumed run always finds them)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"best-step-{step}.safetensors"
    if path.is_file():
        return
    tmp = root / f".best-tmp-{os.getpid()}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"step": str(step)})
    os.replace(tmp, path)


def prune_best(root: Path, keep: int | None) -> None:
    """Drop best-weights files other than the ``keep`` step's (after a checkpoint records it)."""
    for p in root.glob("best-step-*.safetensors"):
        m = _BEST.match(p.name)
        if m and int(m.group(1)) != keep:
            p.unlink(missing_ok=True)


def load_best(root: Path, step: int) -> dict[str, torch.Tensor] | None:
    path = root / f"best-step-{step}.safetensors"
    return load_file(str(path)) if path.is_file() else None


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint ``root/latest`` points to (or the newest complete one)."""
    pointer = root / "latest"
    if pointer.is_file():
        d = root / pointer.read_text().strip()
        if (d / STATE_FILE).is_file():
            return d
    dirs = step_dirs(root)
    return dirs[-1][1] if dirs else None


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    try:
        return torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable state is one user-facing error
        raise PretuneError(
            f"cannot read {ckpt / STATE_FILE} ({type(e).__name__}); delete {ckpt} to resume from "
            "an older checkpoint"
        ) from None


def load_weights(model: nn.Module, ckpt: Path) -> None:
    """Load every parameter/buffer of ``model`` from the checkpoint's safetensors files."""
    needed = _weights_needed(model)
    found: dict[str, torch.Tensor] = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        for k, v in load_file(str(f)).items():
            if k in needed:
                found[k] = v
    missing = set(needed) - set(found)
    bad_shape = [k for k, v in found.items() if v.shape != needed[k].shape]
    if missing or bad_shape:
        what = sorted(missing)[0] if missing else bad_shape[0]
        raise PretuneError(
            f"checkpoint {ckpt} does not match this model ({len(missing)} missing, "
            f"{len(bad_shape)} mis-shaped weights, e.g. '{what}'); it is from another model"
        )
    with torch.no_grad():
        for k, v in found.items():
            needed[k].copy_(v)


def restore_best(model: nn.Module, root: Path | None, step: int,
                 kept: dict[str, Tensor] | None) -> None:
    """The best evaluation's weights back into ``model``: ``kept`` in memory, or (a resumed
    run) from ``best-step-N.safetensors`` or the step's checkpoint."""
    if kept is None and root is not None:
        kept = load_best(root, step)
    if kept is not None:
        model.load_state_dict(kept)
    elif root is not None and (root / f"step-{step}").is_dir():
        load_weights(model, root / f"step-{step}")
    else:
        raise PretuneError(f"the best weights (step {step}) were not kept; rerun without "
                           "--resume")
