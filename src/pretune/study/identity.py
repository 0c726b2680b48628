"""What a cached study result depends on, as short content hashes.

A finished cell, probe or pre-training phase is reused only when everything that determines
its result is unchanged: the task data's *content* (not its path), the start's weights and
tokenizer, the prepared corpus, and the configs. ``runs/<study>/pretrain/final`` keeps its path
when pre-training reruns with new settings; hashing what is inside it is what lets the cells
that used it rerun.

Builtin datasets and models are identified by their pinned package (``rotten-tomatoes`` is
the same bytes in every ``datasets-...==x.y`` install). Local files are hashed by content;
files over ``FULL_HASH_BYTES`` (a multi-GB checkpoint) by size, mtime and their first and last
MiB, so a study over a 7B model does not spend a minute hashing it on every rerun.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from pretune.config import config_identity
from pretune.data.builtin import EMBEDDED, is_builtin
from pretune.data.hub import is_hub_id, snapshot
from pretune.errors import PretuneError

FULL_HASH_BYTES = 1 << 30
_CHUNK = 1 << 20


@lru_cache(maxsize=4096)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(_CHUNK), b""):
                h.update(block)
        else:
            h.update(f"{size}:{mtime_ns}".encode())
            h.update(f.read(_CHUNK))
            f.seek(size - _CHUNK)
            h.update(f.read(_CHUNK))
    return h.hexdigest()


def file_digest(path: Path) -> str:
    st = path.stat()
    return _file_digest(str(path.resolve()), st.st_size, st.st_mtime_ns)


def _skipped(rel: Path) -> bool:
    """Entries that are not content: hidden / temporary files, pretune's own caches."""
    return any(part.startswith(".") or part.endswith((".tmp", ".lock")) or part == "__pycache__"
               for part in rel.parts)


def path_digest(path: str | Path) -> str:
    """Content hash of a file, or of a directory tree (relative names + file contents)."""
    p = Path(path).expanduser()
    if p.is_file():
        return file_digest(p)[:16]
    if not p.is_dir():
        return f"missing:{p}"
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        rel = f.relative_to(p)
        if not _skipped(rel):
            h.update(f"{rel.as_posix()}\0{file_digest(f)}\n".encode())
    return h.hexdigest()[:16]


def source_identity(spec: str | list[str] | None) -> str:
    """A task path, model name or tokenizer path as an identity: builtins by their pinned
    package, architecture names (``bert-mini``) as themselves, files and dirs by content."""
    if spec is None:
        return ""
    if isinstance(spec, list):
        return ",".join(source_identity(s) for s in spec)
    if is_builtin(spec):
        entry = EMBEDDED.get(spec.removeprefix("builtin:"))
        return f"{spec}@{entry.dist if entry else '?'}"
    p = Path(spec.removeprefix("hf:")).expanduser()
    if not p.exists() and "/" in spec and is_hub_id(spec):
        with contextlib.suppress(PretuneError):
            p = snapshot(spec)  # .../snapshots/<commit>: the commit is in the digested path
    if p.exists():
        return f"{p.name}#{path_digest(p)}"
    return spec  # an architecture name: the config carries its shape


def digest(*parts: Any) -> str:
    """One short hash over JSON-able parts (configs as dumps, identities as strings)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def task_identity(task: Any) -> list[str]:
    """A task config's data files (train / validation / test) as content identities."""
    return [source_identity(getattr(task, f, None)) for f in ("path", "validation", "test")]


def stamp_path(run_dir: Path) -> Path:
    """Where a phase records the fingerprint of the inputs it ran with (beside its run dir,
    so ``pretrain --overwrite`` of the run dir cannot take it along)."""
    return run_dir.with_name(run_dir.name + ".inputs.json")


def stamp_matches(run_dir: Path, fingerprint: str) -> bool:
    path = stamp_path(run_dir)
    try:
        return json.loads(path.read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def write_stamp(run_dir: Path, fingerprint: str) -> None:
    path = stamp_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")


def plan_phase(run_dir: Path, fingerprint: str, finished: bool, checkpoints: Path,
               label: str) -> str | None:
    """What a cached phase (pre-training) must do: None (reuse it), "resume" (its checkpoints
    came from these inputs) or "start" (over). Records the fingerprint when it will run."""
    from pretune.train.checkpoint import latest_checkpoint

    current = stamp_matches(run_dir, fingerprint)
    if current and finished:
        return None
    if run_dir.exists() and not current:
        print(f"== {label}: its config or data changed since {run_dir} was trained; starting "
              "it over ==", flush=True)
    write_stamp(run_dir, fingerprint)
    return "resume" if current and latest_checkpoint(checkpoints) is not None else "start"


__all__ = ["config_identity", "plan_phase", "digest", "file_digest", "path_digest",
           "source_identity", "stamp_matches", "stamp_path", "task_identity", "write_stamp"]
