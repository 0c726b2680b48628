"""Byte streams and encodings: open a (compressed) file as bytes, name the encoding a file
decodes as, and refuse files that are not text at all (executables, random bytes)."""

from __future__ import annotations

import bz2
import gzip
import io
from pathlib import Path
from typing import IO

from pretune.errors import PretuneError


def open_binary(path: Path) -> IO[bytes]:
    """Open ``path`` for reading bytes, transparently decompressing .gz/.bz2/.xz/.zst."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    if suffix == ".xz":
        import lzma

        return lzma.open(path, "rb")
    if suffix == ".zst":
        import zstandard

        raw = open(path, "rb")  # noqa: SIM115 - closed together with the reader
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return open(path, "rb")  # noqa: SIM115


# Tried in order to name the likely encoding of a file that is not in the one asked for.
ENCODING_CANDIDATES = ("utf-8", "gb18030", "big5", "shift_jis", "cp1252")


def guess_encoding(path: Path, not_this: str, limit: int = 1 << 20) -> str | None:
    """The first candidate encoding that decodes the start of ``path`` without an error."""
    with open_binary(path) as f:
        data = f.read(limit)
    for enc in ENCODING_CANDIDATES:
        if enc != not_this:
            try:
                data.decode(enc)
            except UnicodeDecodeError as e:
                if e.start < len(data) - 4:  # not just a character cut at the read limit
                    continue
            return enc
    return None


_SNIFF_BYTES = 1 << 16
_MAX_UNDECODABLE = 0.2  # latin-1 text read as UTF-8 is ~1-5% undecodable; binaries ~50%+


def check_text(path: Path, encoding: str = "utf-8") -> None:
    """Refuse a file that is not text (an executable, random bytes, an image: control bytes),
    or text that is mostly undecodable in ``encoding`` (then name the encoding it decodes
    as). Judged on the first 64 KB; a few bad bytes stay a warning (replaced by U+FFFD)."""
    with open_binary(path) as f:
        sample = f.read(_SNIFF_BYTES)
    if not sample:
        return
    try:
        decoded = sample.decode(encoding, errors="replace")
    except LookupError:
        return  # an unknown encoding is reported, with the fix, when the file is opened
    wide = encoding.lower().replace("-", "").replace("_", "").startswith(("utf16", "utf32"))
    control = 0.0 if wide else sum(b < 32 and b not in b"\t\n\r\f" for b in sample) / len(sample)
    bad = decoded.count("\ufffd") / max(1, len(decoded))
    kb = f"{len(sample) // 1024 or 1} KB"
    if control > 0.01:
        raise PretuneError(
            f"{path} is not a text file ({control:.0%} control bytes in its first {kb}); "
            "sources must be text (txt, csv, tsv, jsonl, parquet): remove it from sources")
    if bad > _MAX_UNDECODABLE:
        guess = guess_encoding(path, encoding)
        fix = f"it decodes as {guess}: set sources[].encoding={guess}" if guess else \
            "re-encode it to UTF-8 or set sources[].encoding"
        raise PretuneError(f"{path} is not {encoding} text ({bad:.0%} undecodable in its first "
                           f"{kb}); {fix}")
