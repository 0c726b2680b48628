"""Run directories: the one place a command creates, replaces or locks ``<output_dir>/<name>``.

- ``name`` is a plain directory name (the configs validate it), so a run never lands outside
  its ``output_dir`` and ``--overwrite`` never reaches a parent.
- A run directory carries a ``.pretune-run`` marker; ``--overwrite`` removes only a directory
  that has it (or an empty one, or one an older pretune wrote), never a folder of the user's.
- A run holds an exclusive ``flock`` on ``<output_dir>/.<name>.lock`` for its lifetime; a
  second process on the same run gets one line naming the pid that holds it. The lock is a
  kernel lock: it dies with its process, so a killed run never leaves a stale one. Runs nested
  inside a locked run of this process (a study's cells, a sweep's trials) take no lock of
  their own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from pretune.errors import PretuneError

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None  # type: ignore[assignment]

MARKER = ".pretune-run"
# What older pretune versions left in a run directory (any one identifies it).
_LEGACY = ("metrics.json", "config.yaml", "summary.json", "study.yaml", "trials.csv",
           "optuna.db", "metrics.jsonl", "checkpoints", "cells", "model", "final", "train")
_held: set[Path] = set()
_held_guard = threading.Lock()


def is_run_dir(path: Path) -> bool:
    return (path / MARKER).is_file() or any((path / m).exists() for m in _LEGACY)


def remove_run(path: Path) -> None:
    """``--overwrite``: delete a run directory, and nothing that is not one."""
    if not path.exists():
        return
    if not path.is_dir():
        raise PretuneError(f"{path} is a file, not a run directory; move it or choose another "
                           "name=")
    if any(path.iterdir()) and not is_run_dir(path):
        raise PretuneError(f"{path} is not a pretune run directory (no {MARKER}); --overwrite "
                           "replaces runs only: remove it yourself or choose another name=")
    shutil.rmtree(path)


def mark_run(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).touch()
    return path


def prepare_run_dir(output_dir: str, name: str, overwrite: bool, resume: bool = False) -> Path:
    """``<output_dir>/<name>``, created and marked; an existing one needs ``overwrite`` (or
    ``resume``)."""
    out = Path(output_dir) / name
    if out.exists() and not resume:
        if not overwrite:
            raise PretuneError(f"{out} already exists; pass --overwrite or choose another name=")
        remove_run(out)
    return mark_run(out)


def _inside_held(path: Path) -> bool:
    return any(path == h or h in path.parents for h in _held)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` exclusively while the block runs (see the module docstring)."""
    path = Path(os.path.abspath(run_dir))
    with _held_guard:
        nested = _inside_held(path)
    if nested or fcntl is None:
        yield
        return
    lock = path.parent / f".{path.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise PretuneError(f"run {path} is in use by pid {holder}; wait for it to finish, stop "
                           "it, or choose another name=") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    with _held_guard:
        _held.add(path)
    try:
        yield
    finally:
        with _held_guard:
            _held.discard(path)
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


__all__ = ["MARKER", "is_run_dir", "mark_run", "prepare_run_dir", "remove_run", "run_lock"]
