"""``pretune merge-shards OUT PART...``: one prepared artifact from parts prepared apart.

Prepare at scale: N processes (a SLURM array, N machines) each run ``pretune prepare`` over a
disjoint share of the input files with one tokenizer (``tokenizer.path``), optionally against
one shared near-duplicate index (``clean.near_dedup_storage: redis://...`` with
``clean.near_dedup_index: <name>``). ``merge_shards`` concatenates the parts' train and val
shards (and word-start flags) into one artifact that ``pretune pretrain`` reads like any other,
drops documents whose tokens repeat a document already taken (exact duplicates across parts,
which each part's own dedup could not see), and sums the parts' statistics in ``meta.json``.
The output is written to a temporary directory and renamed into place: a failed merge leaves
nothing half-written, and the parts are only read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pretune.data.shards import SPLITS, PackedTokens
from pretune.errors import PretuneError

SAME = ("tokenizer_kind", "vocab_size", "dtype", "boundary_token_id", "word_starts")


def _tokenizer_digest(part: Path) -> str:
    path = part / "tokenizer" / "tokenizer.json"
    if not path.is_file():
        raise PretuneError(f"{part} has no tokenizer/tokenizer.json; it is not a prepared "
                           "artifact (run `pretune prepare` for it)")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_parts(parts: list[Path]) -> list[dict[str, Any]]:
    if not parts:
        raise PretuneError("merge-shards needs at least one part directory")
    metas, digests = [], []
    for p in parts:
        PackedTokens(p, "train")  # one-line errors for a directory that is no artifact
        metas.append(json.loads((p / "meta.json").read_text()))
        digests.append(_tokenizer_digest(p))
    for p, meta, digest in zip(parts[1:], metas[1:], digests[1:], strict=True):
        differ = [k for k in SAME if meta.get(k) != metas[0].get(k)]
        if digest != digests[0] or differ:
            what = ", ".join(differ) or "tokenizer.json"
            raise PretuneError(f"{p} was prepared with another tokenizer than {parts[0]} "
                               f"({what} differ); prepare every part with the same "
                               "tokenizer.path")
    if len(set(map(os.path.realpath, parts))) != len(parts):
        raise PretuneError("merge-shards: a part is listed twice; list each part once")
    return metas


def merge_shards(parts: list[Path], out: Path, overwrite: bool = False) -> dict[str, Any]:
    """Merge the prepared artifacts ``parts`` (in this order) into ``out``; returns its meta."""
    parts = [Path(p) for p in parts]
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise PretuneError(f"{out} already exists; pass --overwrite to replace it")
    metas = _check_parts(parts)
    dtype = np.dtype(metas[0]["dtype"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.merge-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        seen: set[bytes] = set()
        splits, dropped = {}, 0
        for split in SPLITS:
            docs, tokens, gone = _merge_split(parts, split, tmp, dtype, seen,
                                              bool(metas[0].get("word_starts")))
            splits[split] = {"docs": docs, "tokens": tokens}
            dropped += gone
        if splits["train"]["docs"] == 0:
            raise PretuneError("the parts hold no training documents; prepare them again")
        if splits["val"]["docs"] == 0 and any(m["splits"]["val"]["docs"] for m in metas):
            print("warning: every validation document repeats a training one of another part; "
                  "the merged artifact has no validation split (pretrain then skips "
                  "validation)", file=sys.stderr)
        shutil.copytree(parts[0] / "tokenizer", tmp / "tokenizer")
        meta = {**{k: metas[0][k] for k in ("format", "special_token_ids", *SAME)
                   if k in metas[0]},
                "name": out.name, "splits": splits, "config": metas[0].get("config"),
                "empty_encoded_docs": sum(m.get("empty_encoded_docs", 0) for m in metas),
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "parts": [{"path": str(p), "splits": m["splits"]}
                          for p, m in zip(parts, metas, strict=True)],
                "stats": {"clean": _summed([m.get("stats", {}).get("clean", {}) for m in metas]),
                          "duplicates_across_parts": dropped}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _merge_split(parts: list[Path], split: str, out: Path, dtype: np.dtype, seen: set[bytes],
                 word_starts: bool) -> tuple[int, int, int]:
    """Append every part's documents of ``split`` to ``out``; (docs, tokens, duplicates)."""
    lens: list[int] = []
    dropped = 0
    with open(out / f"{split}.bin", "wb") as f, \
            open(out / f"{split}.ws.bin", "wb") if word_starts else open(os.devnull, "wb") as ws:
        for part in parts:
            packed = PackedTokens(part, split)
            if word_starts and packed.word_starts is None:
                raise PretuneError(f"{part} has no {split}.ws.bin though its meta.json records "
                                   "word starts; prepare that part again")
            starts = packed.doc_starts
            for i in range(packed.num_docs):
                a, b = int(starts[i]), int(starts[i + 1])
                ids = np.asarray(packed.tokens[a:b])
                key = hashlib.blake2b(ids.tobytes(), digest_size=16).digest()
                if key in seen:
                    dropped += 1
                    continue
                seen.add(key)
                f.write(memoryview(np.ascontiguousarray(ids, dtype=dtype)))
                if word_starts:
                    ws.write(memoryview(np.ascontiguousarray(packed.word_starts[a:b])))
                lens.append(b - a)
    index = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(np.asarray(lens, dtype=np.int64), out=index[1:])
    np.save(out / f"{split}.idx.npy", index)
    return len(lens), int(index[-1]), dropped


def _summed(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Numbers added over the parts (nested dicts too); anything else from the first part."""
    total: dict[str, Any] = {}
    for s in stats:
        for k, v in s.items():
            if isinstance(v, bool) or not isinstance(v, int | float | dict):
                total.setdefault(k, v)
            elif isinstance(v, dict):
                total[k] = _summed([total.get(k, {}), v])
            else:
                total[k] = total.get(k, 0) + v
    return total
