"""Corpus readers: files, directories, globs and ``builtin:`` corpora, streamed one document
at a time (never the whole corpus in memory).

Formats: ``.txt`` (one doc per file / line / blank-line block), ``.jsonl``, ``.csv``, ``.tsv``,
``.parquet`` (a named text column), each optionally compressed (``.gz``, ``.bz2``, ``.zst``) or
inside a ``.zip`` (every member is read). Undecodable bytes are replaced (U+FFFD) and the
documents that had them are counted, so a mis-encoded corpus shows up as a warning, not a crash.
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import json
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

from pretune.config import SourceConfig
from pretune.data import peoples_daily
from pretune.data.builtin import builtin_path, is_builtin
from pretune.data.streams import check_text, guess_encoding, open_binary
from pretune.errors import PretuneError

COMPRESSIONS = (".gz", ".bz2", ".zst")
FORMAT_SUFFIXES = {
    ".txt": "txt", ".text": "txt", ".md": "txt",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet",
}
BUILTIN_CORPORA = ("news", "wiki-summaries", "peoples-daily")

# Long documents exceed csv's default 128 KiB field limit; raising it is process-wide but
# only ever makes the csv module accept more, so it cannot break another reader.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


# --------------------------------------------------------------------------- decode errors

# Undecodable bytes in the current process (monotonic). A reader compares it before/after a
# file to know whether a U+FFFD in a document came from a decode error or was in the text.
_DECODE_ERRORS = [0]


def _count_and_replace(err: UnicodeError) -> tuple[str, int]:
    _DECODE_ERRORS[0] += 1
    if isinstance(err, UnicodeDecodeError):
        return "\ufffd", err.end
    raise err


codecs.register_error("pretune-replace", _count_and_replace)


@dataclass
class SourceStats:
    """What the readers saw; filled in while documents stream through."""

    files: int = 0
    docs: int = 0
    bytes: int = 0  # UTF-8 bytes of the documents read (the MB/s numerator)
    non_utf8_docs: int = 0
    non_utf8_files: list[str] = field(default_factory=list)
    skipped_empty: int = 0  # empty rows/lines/files (not documents)
    skipped_files: int = 0  # files in a directory with an unknown suffix
    docs_per_source: dict[str, int] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        out = []
        if self.non_utf8_docs:
            files = ", ".join(self.non_utf8_files[:3]) + (" ..." if len(self.non_utf8_files) > 3 else "")
            first = Path(self.non_utf8_files[0].split(":")[0]) if self.non_utf8_files else None
            guess = guess_encoding(first, "utf-8") if first is not None and first.is_file() \
                else None
            fix = (f"they decode as {guess}: set sources[].encoding={guess}" if guess else
                   "re-encode the files to UTF-8 (e.g. iconv -f latin1 -t utf-8) or set "
                   "sources[].encoding")
            out.append(
                f"{self.non_utf8_docs} documents had bytes that are not UTF-8 (replaced by U+FFFD) "
                f"in {files}; {fix}"
            )
        out += [f"source {s} produced no documents" for s, n in self.docs_per_source.items() if n == 0]
        return out

    def as_dict(self) -> dict:
        return {
            "files": self.files, "docs": self.docs, "bytes": self.bytes,
            "non_utf8_docs": self.non_utf8_docs, "non_utf8_files": self.non_utf8_files[:20],
            "skipped_empty": self.skipped_empty, "skipped_files": self.skipped_files,
            "docs_per_source": dict(self.docs_per_source),
        }


# --------------------------------------------------------------------------- opening streams


def _text(stream: IO[bytes], newline: str | None, encoding: str = "utf-8") -> TextIO:
    try:
        return io.TextIOWrapper(stream, encoding=encoding, errors="pretune-replace",
                                newline=newline)
    except LookupError:
        stream.close()
        raise PretuneError(f"encoding={encoding!r} is not a known text encoding (e.g. utf-8, "
                           "gb18030, cp1252, latin-1)") from None


def open_text(path: str | Path, newline: str | None = None) -> TextIO:
    """Open a (possibly compressed) text file as a UTF-8 stream; bad bytes become U+FFFD.

    Handles .gz/.bz2/.zst, and a .zip holding exactly one member. Pass ``newline=""`` for csv.
    """
    p = Path(path)
    if not p.is_file():
        raise PretuneError(f"file {p} not found")
    if p.suffix.lower() == ".zip":
        zf = zipfile.ZipFile(p)
        members = [m for m in zf.namelist() if not m.endswith("/")]
        if len(members) != 1:
            zf.close()
            raise PretuneError(f"{p} holds {len(members)} files; open_text needs exactly one")
        member = zf.open(members[0])
        zf.close()  # the member stream keeps the archive's file open until it is closed itself
        return _text(member, newline)
    return _text(open_binary(p), newline)


def detect_format(name: str, fmt: str = "auto") -> str | None:
    """Format from the file name (compression suffixes ignored); None if unknown."""
    if fmt != "auto":
        return fmt
    lower = name.lower()
    for c in COMPRESSIONS:
        if lower.endswith(c):
            lower = lower[: -len(c)]
            break
    return FORMAT_SUFFIXES.get(Path(lower).suffix)


# --------------------------------------------------------------------------- per-format readers

Opener = Callable[[str | None], TextIO]  # newline -> text stream


def _read_txt(open_: Opener, mode: str) -> Iterator[str]:
    with open_(None) as f:
        if mode == "file":
            yield f.read()
            return
        if mode == "line":
            for line in f:
                yield line
            return
        block: list[str] = []  # paragraph mode: blank lines separate documents
        for line in f:
            if line.strip():
                block.append(line)
            elif block:
                yield "".join(block)
                block = []
        if block:
            yield "".join(block)


def _read_jsonl(open_: Opener, key: str, name: str) -> Iterator[str]:
    with open_(None) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise PretuneError(
                    f"{name} line {lineno}: not valid JSON (expected one JSON object per line)"
                ) from None
            if not isinstance(rec, dict):
                raise PretuneError(f"{name} line {lineno}: expected a JSON object, got {type(rec).__name__}")
            if key not in rec:
                raise PretuneError(
                    f"{name} line {lineno} has no field '{key}' (fields: {', '.join(map(str, rec))}); "
                    f"set text_field to one of them"
                )
            value = rec[key]
            yield "" if value is None else value if isinstance(value, str) else str(value)


def _read_delimited(open_: Opener, key: str, name: str, delimiter: str) -> Iterator[str]:
    # TSV files are rarely quoted (GLUE-style); quotes inside them are text.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with open_("") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        header = next(reader, None)
        if header is None:
            return
        if key not in header:
            raise PretuneError(
                f"{name} has no column '{key}' (columns: {', '.join(header)}); "
                f"set text_field to one of them"
            )
        col = header.index(key)
        for row in reader:
            if len(row) > col:
                yield row[col]


def _read_parquet(source: Path | IO[bytes], key: str, name: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(source) as pf:
        names = pf.schema_arrow.names
        if key not in names:
            raise PretuneError(
                f"{name} has no column '{key}' (columns: {', '.join(names)}); set text_field to one of them"
            )
        for batch in pf.iter_batches(batch_size=1024, columns=[key]):  # row group by row group
            for value in batch.column(0).to_pylist():
                yield "" if value is None else str(value)


def _read_one(open_: Opener, open_bin: Callable[[], IO[bytes]] | Path, name: str, fmt: str,
              src: SourceConfig) -> Iterator[str]:
    if fmt == "txt":
        return _read_txt(open_, src.txt_mode)
    if fmt == "jsonl":
        return _read_jsonl(open_, src.text_field, name)
    if fmt in ("csv", "tsv"):
        return _read_delimited(open_, src.text_field, name, "\t" if fmt == "tsv" else ",")
    if fmt == "parquet":
        if isinstance(open_bin, Path) and open_bin.suffix.lower() in COMPRESSIONS:
            raise PretuneError(f"{name}: compressed parquet is not supported; decompress it first")
        return _read_parquet(open_bin if isinstance(open_bin, Path) else open_bin(), src.text_field, name)
    raise PretuneError(f"{name}: unknown format '{fmt}'")


def _read_file(path: Path, src: SourceConfig, stats: SourceStats, in_dir: bool) -> Iterator[str]:
    name = str(path)
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as zf:
            for member in sorted(m for m in zf.namelist() if not m.endswith("/")):
                fmt = detect_format(member, src.format) or "txt"
                label = f"{name}:{member}"

                def open_member(newline: str | None, m: str = member) -> TextIO:
                    return _text(zf.open(m), newline, src.encoding)

                yield from _read_tracked(
                    _read_one(open_member, lambda m=member: zf.open(m), label, fmt, src), label, stats
                )
        return
    fmt = detect_format(path.name, src.format)
    if fmt is None:
        if in_dir:  # a README/png next to the data is not an error
            stats.skipped_files += 1
            return
        fmt = "txt"
    if fmt != "parquet":
        check_text(path, src.encoding)
    yield from _read_tracked(
        _read_one(lambda nl: _text(open_binary(path), nl, src.encoding), path, name, fmt, src),
        name, stats
    )


def _read_tracked(docs: Iterator[str], name: str, stats: SourceStats) -> Iterator[str]:
    """Count files/docs/bytes and the documents that had undecodable bytes."""
    stats.files += 1
    errors_before = _DECODE_ERRORS[0]
    flagged = False
    for doc in docs:
        if not doc or doc.isspace():
            stats.skipped_empty += 1
            continue
        # A U+FFFD only counts when this file really had decode errors.
        if _DECODE_ERRORS[0] != errors_before and "\ufffd" in doc:
            stats.non_utf8_docs += 1
            if not flagged:
                stats.non_utf8_files.append(name)
                flagged = True
        stats.docs += 1
        stats.bytes += len(doc.encode("utf-8", "replace"))
        yield doc


# --------------------------------------------------------------------------- builtins


def _read_builtin(name: str, stats: SourceStats) -> Iterator[str]:
    path = builtin_path(name)
    if name == "news":
        # NewsArticles.csv: article_id,publish_date,article_source_link,title,subtitle,text
        def docs() -> Iterator[str]:
            with zipfile.ZipFile(path) as zf, _text(zf.open("NewsArticles.csv"), "") as f:
                for row in csv.DictReader(f):
                    title, text = (row.get("title") or "").strip(), (row.get("text") or "").strip()
                    if not text:
                        yield ""  # counted as skipped_empty
                        continue
                    yield f"{title}\n\n{text}" if title else text

        yield from _read_tracked(docs(), f"builtin:{name}", stats)
    elif name == "wiki-summaries":
        # One JSON dict name -> {title, extract, description, topic}; 6.5 MB, fine to load.
        def docs() -> Iterator[str]:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            for rec in data.values():
                yield (rec.get("extract") or "") if isinstance(rec, dict) else ""

        yield from _read_tracked(docs(), f"builtin:{name}", stats)
    elif name == "peoples-daily":
        yield from _read_tracked(peoples_daily.corpus_docs(), f"builtin:{name}", stats)
    else:
        raise PretuneError(
            f"builtin:{name} is not a corpus; corpora: {', '.join('builtin:' + c for c in BUILTIN_CORPORA)}"
        )


# --------------------------------------------------------------------------- public API


def resolve_files(src: SourceConfig) -> list[tuple[Path, bool]]:
    """Expand a source path into (file, came_from_directory_or_glob) pairs, sorted."""
    raw = src.path
    if any(ch in raw for ch in "*?["):
        matches = sorted(Path(p) for p in glob.glob(raw, recursive=True))
        files = [p for p in matches if p.is_file()]
        if not files:
            raise PretuneError(f"source glob '{raw}' matches no files; check the pattern")
        return [(p, True) for p in files]
    p = Path(raw).expanduser()
    if p.is_dir():
        files = sorted(
            f for f in p.rglob("*")
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
        )
        return [(f, True) for f in files]
    if p.is_file():
        return [(p, False)]
    raise PretuneError(f"source '{raw}' not found (no such file or directory); fix sources[].path")


def source_files(sources: list[SourceConfig]) -> list[Path]:
    """Every file the sources read (for cache fingerprints)."""
    out: list[Path] = []
    for src in sources:
        out += [builtin_path(src.path)] if is_builtin(src.path) else [f for f, _ in resolve_files(src)]
    return out


def iter_documents(sources: list[SourceConfig], stats: SourceStats) -> Iterator[str]:
    """Stream the raw documents of every source in order, updating ``stats`` as they pass.

    Every path is resolved (missing files, empty globs, missing builtins reported) now, before
    the first document is read, so a typo in the last source fails fast.
    """
    plans = []
    for src in sources:
        if is_builtin(src.path):
            builtin_path(src.path)  # raises with the install command if missing
            plans.append((src, None))
        else:
            plans.append((src, resolve_files(src)))
    return _iter_plans(plans, stats)


def _iter_plans(plans: list[tuple[SourceConfig, list[tuple[Path, bool]] | None]],
                stats: SourceStats) -> Iterator[str]:
    for src, files in plans:
        stats.docs_per_source.setdefault(src.path, 0)
        if files is None:
            docs = _read_builtin(src.path.removeprefix("builtin:"), stats)
        else:
            docs = (d for path, in_dir in files for d in _read_file(path, src, stats, in_dir))
        for doc in docs:
            # Counted per doc (not per source) so a max_docs cap mid-source stays correct.
            stats.docs_per_source[src.path] += 1
            yield doc
