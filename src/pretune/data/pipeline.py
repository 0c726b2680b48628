"""``pretune prepare``: sources -> clean + dedup -> tokenizer -> packed shards, as one cached
artifact directory ``<output_dir>/<name>-<config hash>/``:

    tokenizer/          HF tokenizer dir (AutoTokenizer.from_pretrained works on it)
    train.bin  train.idx.npy  val.bin  val.idx.npy     see pretune.data.shards
    meta.json           config, hash, tokenizer facts, per-split sizes, all stats
    sample.txt          the first 50 cleaned documents, to eyeball the cleaning

The artifact is built in a temp dir next to its final place and renamed into place, so a crash
leaves no half artifact. The same config (and unchanged source files) reuses it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from pretune.config import PrepareConfig, config_hash
from pretune.data.clean import CleanStats, clean_documents, everything_removed_message
from pretune.data.segment import make_segmenter
from pretune.data.shards import write_shards
from pretune.data.sources import SourceStats, iter_documents, source_files
from pretune.data.tokenizer import load_tokenizer, train_tokenizer
from pretune.errors import PretuneError

# Settings that change how fast (or where) an artifact is built, not what is in it.
HASH_EXCLUDE = {"progress": True, "num_workers": True, "batch_docs": True, "output_dir": True,
                "clean": {"near_dedup_storage", "near_dedup_index"}}
SAMPLE_DOCS = 50


def artifact_dir(cfg: PrepareConfig) -> Path:
    """Where ``prepare(cfg)`` puts (or finds) its artifact."""
    return Path(cfg.output_dir) / f"{cfg.name}-{config_hash(cfg, exclude=HASH_EXCLUDE)}"


def source_fingerprint(cfg: PrepareConfig) -> list[list[Any]]:
    """(path, size, mtime) of every source file: an edited corpus invalidates the cache; the
    holdout file by its content (a study rewrites it on every run)."""
    out = []
    for p in source_files(cfg.sources):
        st = p.stat()
        out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    if cfg.holdout:
        out.append(["holdout", hashlib.sha256(_holdout_path(cfg).read_bytes()).hexdigest()])
    return out


def _holdout_path(cfg: PrepareConfig) -> Path:
    path = Path(cfg.holdout or "")
    if not path.is_file():
        raise PretuneError(f"holdout={cfg.holdout}: file not found (one JSON string per line)")
    return path


def read_holdout(cfg: PrepareConfig) -> list[str]:
    if not cfg.holdout:
        return []
    out = []
    with open(_holdout_path(cfg), encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(str(json.loads(line)))
                except json.JSONDecodeError:
                    raise PretuneError(f"{cfg.holdout} line {lineno}: not a JSON string") from None
    return out


def prepare(cfg: PrepareConfig, overwrite: bool = False) -> Path:
    """Build (or reuse) the prepared-data artifact for ``cfg`` and return its directory."""
    console = Console()
    final = artifact_dir(cfg)
    fingerprint = source_fingerprint(cfg)  # also reports missing sources before any work
    replace = overwrite
    if not overwrite and (final / "meta.json").is_file():
        old = json.loads((final / "meta.json").read_text())
        if old.get("source_fingerprint") == fingerprint:
            print(f"reusing cached artifact {final}")
            return final
        print(f"source files changed since {final} was built; rebuilding it")
        replace = True
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        meta = _build(cfg, tmp, console)
        meta["source_fingerprint"] = fingerprint
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        _swap_into_place(tmp, final, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _print_stats(console, meta, final)
    return final


def _swap_into_place(tmp: Path, final: Path, replace: bool) -> None:
    if not replace and (final / "meta.json").is_file():
        # Another process (e.g. another DDP rank) finished the same artifact first; the build
        # is deterministic, so keep theirs rather than pull it from under their readers.
        shutil.rmtree(tmp, ignore_errors=True)
        return
    # rename() cannot replace a non-empty directory: move the old one aside first, then drop it.
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _progress(cfg: PrepareConfig, console: Console) -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True,
        disable=not (cfg.progress and console.is_terminal),
    )


def _read_clean(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def _build(cfg: PrepareConfig, tmp: Path, console: Console) -> dict[str, Any]:
    t0 = time.perf_counter()
    tmp.mkdir(parents=True)
    src_stats, clean_stats = SourceStats(), CleanStats()
    clean_path = tmp / "clean.jsonl"  # cleaned docs, streamed twice (tokenizer, shards)
    timings: dict[str, float] = {}

    with _progress(cfg, console) as progress:
        task = progress.add_task("reading + cleaning", total=cfg.max_docs)
        raw_docs = iter_documents(cfg.sources, src_stats)
        with contextlib.closing(raw_docs), open(clean_path, "w", encoding="utf-8") as out, \
                open(tmp / "sample.txt", "w", encoding="utf-8") as sample:
            capped = itertools.islice(raw_docs, cfg.max_docs)
            cleaned = clean_documents(capped, cfg.clean, clean_stats, read_holdout(cfg),
                                      cfg.holdout_ngram, part=artifact_dir(cfg).name)
            for i, doc in enumerate(cleaned):
                out.write(json.dumps(doc, ensure_ascii=False) + "\n")
                if i < SAMPLE_DOCS:
                    sample.write(doc + "\n\n")
                if i % 256 == 0:
                    progress.update(task, completed=clean_stats.docs_in)
        progress.update(task, completed=clean_stats.docs_in)
        timings["read_clean_seconds"] = time.perf_counter() - t0
        _check_not_empty(cfg, src_stats, clean_stats)
        for w in src_stats.warnings:
            console.print(f"[yellow]warning:[/] {w}", highlight=False)

        t1 = time.perf_counter()
        progress.add_task("tokenizer", total=None)
        if cfg.tokenizer.path:
            tok = load_tokenizer(cfg.tokenizer.path)
            tok.save_pretrained(str(tmp / "tokenizer"))
        else:
            tok = train_tokenizer(lambda: _read_clean(clean_path), cfg.tokenizer,
                                  tmp / "tokenizer")
        timings["tokenizer_seconds"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        enc = progress.add_task("encoding", total=clean_stats.docs_out)
        segment = make_segmenter(cfg.word_boundaries) if cfg.word_boundaries != "off" else None
        meta = write_shards(
            _read_clean(clean_path), tok, tmp, val_fraction=cfg.val_fraction, seed=cfg.seed,
            batch_docs=cfg.batch_docs, on_batch=lambda n: progress.advance(enc, n),
            segment=segment,
        )
        timings["encode_seconds"] = time.perf_counter() - t2
    clean_path.unlink()

    wall = time.perf_counter() - t0
    splits = meta["splits"]
    # Boundary tokens are packing, not text: leave them out of tokens/word.
    text_tokens = sum(s["tokens"] - s["docs"] for s in splits.values())
    words = clean_stats.words_out
    unk = tok.unk_token_id
    unknown = 0 if unk is None else sum(  # the shards as written (meta.json comes later)
        int(np.count_nonzero(np.fromfile(tmp / f"{split}.bin", dtype=meta["dtype"]) == unk))
        for split in splits)
    meta.update(
        name=cfg.name,
        config=cfg.model_dump(mode="json"),
        config_hash=config_hash(cfg, exclude=HASH_EXCLUDE),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        stats={
            "sources": src_stats.as_dict(),
            "clean": clean_stats.as_dict(),
            "words": words,
            "text_tokens": text_tokens,
            "tokens_per_word": text_tokens / words if words else 0.0,
            "tokens_per_char": text_tokens / clean_stats.chars_out if clean_stats.chars_out else 0.0,
            "unknown_token_rate": unknown / text_tokens if text_tokens else 0.0,
            "wall_seconds": wall,
            "mb_per_s": src_stats.bytes / 1e6 / wall if wall > 0 else 0.0,
            **timings,
        },
        warnings=src_stats.warnings,
    )
    return meta


def _check_not_empty(cfg: PrepareConfig, src: SourceStats, clean: CleanStats) -> None:
    if src.docs == 0:
        names = ", ".join(s.path for s in cfg.sources)
        raise PretuneError(
            f"no documents found in {names}: the inputs are empty "
            f"({src.files} files read, {src.skipped_empty} empty rows/lines skipped, "
            f"{src.skipped_files} files with unknown suffixes skipped); check the paths, "
            f"sources[].format and sources[].txt_mode"
        )
    if clean.docs_out == 0:
        raise PretuneError(everything_removed_message(clean, cfg.clean))


def _print_stats(console: Console, meta: dict[str, Any], final: Path) -> None:
    st, src, cl = meta["stats"], meta["stats"]["sources"], meta["stats"]["clean"]
    table = Table(title=f"prepared {final}", show_header=False, title_justify="left")
    table.add_column("stat")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [("documents read", f"{src['docs']:,}")]
    rows += [(f"  removed: {k.replace('_', ' ')}", f"{v:,}") for k, v in cl["removed"].items() if v]
    rows += [(f"  changed: {k}", f"{v:,}") for k, v in cl["changed"].items()]
    if src["non_utf8_docs"]:
        rows.append(("non-UTF-8 documents (replaced bytes)", f"{src['non_utf8_docs']:,}"))
    rows += [
        ("documents kept", f"{cl['docs_out']:,}"),
        ("words", f"{st['words']:,}"),
        ("tokens (text)", f"{st['text_tokens']:,}"),
        ("tokens / word", f"{st['tokens_per_word']:.3f}"),
        ("tokens / character", f"{st.get('tokens_per_char', 0):.3f}"),
        ("unknown-token rate", f"{100 * st.get('unknown_token_rate', 0):.3f}%"),
        (f"tokenizer ({meta['tokenizer_kind']})", f"vocab {meta['vocab_size']:,}, {meta['dtype']}"),
    ]
    for split, s in meta["splits"].items():
        rows.append((f"{split} docs / tokens", f"{s['docs']:,} / {s['tokens']:,}"))
    rows += [
        ("wall time", f"{st['wall_seconds']:.1f} s"),
        ("throughput (input text)", f"{st['mb_per_s']:.2f} MB/s"),
    ]
    for r in rows:
        table.add_row(*r)
    console.print(table)
