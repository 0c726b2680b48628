"""Tabular files of labeled examples: csv / tsv / jsonl / parquet, optionally compressed,
read strictly in one encoding (UTF-8 unless ``task.encoding`` says otherwise) into rows
(dicts) and column names."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import IO, Any

from pretune.data.streams import guess_encoding, open_binary
from pretune.errors import PretuneError

COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


def name_of(path: str) -> str:
    """A task's short name: a builtin's name, or the file name without extensions."""
    if path.startswith("builtin:"):
        return path.removeprefix("builtin:")
    name = Path(path).name
    for comp in COMPRESSIONS:
        name = name.removesuffix(comp)
    return name.rsplit(".", 1)[0]


def check_budget(budget: int, n: int, what: str, task: str, key: str = "task.budget",
                 fix: str = "lower the budget or use 'all'") -> None:
    """A label budget larger than the training split is an error naming the key and the fix."""
    if budget > n:
        raise PretuneError(f"{key}={budget} is larger than the {n} training {what} of {task}; "
                           f"{fix}")


def open_text(path: Path, encoding: str = "utf-8") -> IO[str]:
    """Open a (possibly compressed) labeled file strictly in ``encoding``: a label file with
    bad bytes is an error to fix, not something to guess around (corpora use replacement)."""
    try:
        return io.TextIOWrapper(open_binary(path), encoding=encoding, newline="")
    except LookupError:
        raise PretuneError(f"task.encoding={encoding!r} is not a known text encoding (e.g. "
                           "utf-8, gb18030, cp1252, latin-1)") from None


def decode_error(path: Path, err: UnicodeDecodeError, encoding: str) -> PretuneError:
    """A one-line error for a file that is not in ``encoding``, naming the likely one."""
    guess = guess_encoding(path, encoding, limit=1 << 30)
    hint = f"it decodes as {guess}: set task.encoding={guess}" if guess else \
        "set task.encoding to the file's encoding, or re-encode it as UTF-8"
    return PretuneError(f"{path}: not {encoding} text (byte offset {err.start}); {hint}")


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    name = path.name.lower()
    for comp in COMPRESSIONS:
        name = name.removesuffix(comp)
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    if ext in ("csv", "tsv", "jsonl", "parquet", "txt"):
        return ext
    if ext in ("json", "ndjson"):
        return "jsonl"
    raise PretuneError(
        f"{path}: cannot tell the format from the extension; use .csv/.tsv/.jsonl/.parquet/.txt "
        "(optionally .gz/.bz2) or set task.format"
    )


def read_rows(path: str | Path, fmt: str = "auto", encoding: str = "utf-8"
              ) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (dicts) and column names of a csv/tsv/jsonl/parquet file."""
    p = Path(path)
    if not p.is_file():
        raise PretuneError(f"labeled file {p} not found (check task.path / validation / test)")
    fmt = detect_format(p, fmt)
    try:
        if fmt == "txt":  # plain text: one example per line, as the `text` column
            with open_text(p, encoding) as f:
                rows = [{"text": ln.strip()} for ln in f if ln.strip()]
            cols = ["text"]
        elif fmt in ("csv", "tsv"):
            csv.field_size_limit(1 << 30)  # long reviews/articles exceed the 128 KiB default
            with open_text(p, encoding) as f:
                reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
                rows = list(reader)
                cols = list(reader.fieldnames or [])
        elif fmt == "jsonl":
            rows = []
            with open_text(p, encoding) as f:
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            obj = json.loads(line)
                        except json.JSONDecodeError:
                            raise PretuneError(f"{p} line {lineno}: not valid JSON") from None
                        if not isinstance(obj, dict):
                            raise PretuneError(f"{p} line {lineno}: expected a JSON object")
                        rows.append(obj)
            cols = list(dict.fromkeys(k for r in rows for k in r))
        else:
            import pyarrow.parquet as pq

            with open_binary(p) as f:
                table = pq.read_table(io.BytesIO(f.read()))
            rows, cols = table.to_pylist(), list(table.column_names)
    except UnicodeDecodeError as e:
        raise decode_error(p, e, encoding) from None
    if not rows:
        raise PretuneError(f"{p} has no rows")
    return rows, cols
