"""Hugging Face Hub ids as model and tokenizer sources: ``org/name``, ``org/name@revision``,
``hf:org/name`` or a bare legacy id (``bert-base-uncased``).

An id resolves to its snapshot directory in the normal Hugging Face cache (``HF_HOME`` /
``HF_HUB_CACHE``), and from there on it is a checkpoint directory like any other: safetensors
weights only (``weight_keys`` refuses pickle files), ``trust_remote_code`` off unless the
config sets it. A cached snapshot is used without a network call, so runs are reproducible and
work offline; an uncached id is downloaded (only the config, tokenizer and safetensors files),
or, offline (``HF_HUB_OFFLINE=1``, or no network), fails in one line that says how to fetch it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pretune.errors import PretuneError

# What a start needs from a repo: configs, tokenizer files, safetensors weights (no pickles,
# no code unless trust_remote_code brings it).
ALLOW = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "tokenizer*",
         "*.jinja"]
_PART = r"[A-Za-z0-9][\w.-]*"
_ID = re.compile(rf"^(?:{_PART}/)?{_PART}(?:@[\w./-]+)?$")
# A missing data or config file is a path, never a Hub id.
_FILE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt", ".yaml", ".yml",
                  ".gz", ".bz2", ".zst", ".zip", ".npz", ".conll", ".safetensors", ".bin")


def split_id(name: str) -> tuple[str, str | None]:
    """``hf:org/name@rev`` -> (``org/name``, ``rev``)."""
    repo, _, rev = name.removeprefix("hf:").partition("@")
    return repo, rev or None


def is_hub_id(name: str) -> bool:
    """``org/name[@rev]`` or ``name`` (no path syntax: ``./x``, ``/x``, ``~`` are paths)."""
    s = name.removeprefix("hf:")
    return bool(_ID.match(s)) and not s.lower().endswith(_FILE_SUFFIXES)


def cache_dir() -> Path:
    """The Hub cache as Hugging Face reads it (``HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _fetch_hint(repo: str, rev: str | None) -> str:
    at = f" --revision {rev}" if rev else ""
    return (f"fetch it where there is network with `hf download {repo}{at}` (HF_HOME pointing "
            f"at the cache you copy here), or give a local save_pretrained directory")


def snapshot(name: str, what: str = "model.name") -> Path:
    """The local snapshot directory of the Hub id ``name`` (downloaded when not cached)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, rev = split_id(name)
    cache = cache_dir()
    try:
        return Path(snapshot_download(repo, revision=rev, cache_dir=cache, allow_patterns=ALLOW,
                                      local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass
    where = f"no directory {repo} here, and '{repo}'" + \
        (f" at revision {rev}" if rev else "") + f" is not in the Hugging Face cache ({cache})"
    if offline():
        raise PretuneError(f"{what}={name}: {where}, and downloads are off (HF_HUB_OFFLINE=1); "
                           f"{_fetch_hint(repo, rev)}")
    try:
        return Path(snapshot_download(repo, revision=rev, cache_dir=cache, allow_patterns=ALLOW))
    except GatedRepoError:
        raise PretuneError(f"{what}={name}: the Hub repo is gated; accept its terms on "
                           "huggingface.co and log in (`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise PretuneError(f"{what}={name}: {where}, and the Hub has no such model (check the "
                           "id, or log in for a private one)") from None
    except RevisionNotFoundError:
        raise PretuneError(f"{what}={name}: the Hub repo '{repo}' has no revision "
                           f"'{rev}'") from None
    except Exception as e:  # noqa: BLE001 - no network, proxy, timeout: one line with the fix
        raise PretuneError(f"{what}={name}: {where}, and the download failed "
                           f"({type(e).__name__}: no network?); {_fetch_hint(repo, rev)}") from None


def local_dir(spec: str, what: str = "model.name") -> Path:
    """A model/tokenizer source as a directory: a local dir (``hf:`` prefix optional) as it is,
    else a Hub id's snapshot; a path that is neither comes back as it is (the caller says
    what is missing)."""
    path = Path(spec.removeprefix("hf:")).expanduser()
    if path.exists() or not is_hub_id(spec):
        return path
    return snapshot(spec, what)


__all__ = ["cache_dir", "is_hub_id", "local_dir", "offline", "snapshot", "split_id"]
