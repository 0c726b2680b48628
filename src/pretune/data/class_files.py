"""Labeled text as people often have it: the label in the file or folder name.

- One text file per class, one example per line: ``task.path=[pos.txt, neg.txt]`` or a glob
  (``task.path='reviews/*.txt'``); the label is the file name without extensions.
- A folder of class folders (like torchvision's ImageFolder, for text): ``task.path=reviews/``
  with ``reviews/pos/*.txt`` and ``reviews/neg/*.txt``; each file is one example, the label is
  its folder's name.

Both become ordinary rows (``text``, ``label``) that the labeled-task reader splits, budgets and
encodes like any csv.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from pretune.config.tasks import is_class_folder
from pretune.data.rows import decode_error, name_of, open_text
from pretune.errors import PretuneError

_GLOB = set("*?[")


def _is_glob(s: str) -> bool:
    return bool(_GLOB & set(s))


def names_classes(path: str | list[str]) -> bool:
    """Does ``task.path`` name classes (a list, a glob or a class folder) rather than one file?"""
    if isinstance(path, list):
        return True
    return _is_glob(path) or is_class_folder(Path(path).expanduser())


def class_files(path: str | list[str]) -> list[Path]:
    """The files a list / glob names (sorted, each once), or a class folder's files (sorted)."""
    if isinstance(path, str) and not _is_glob(path):
        root = Path(path).expanduser()
        return sorted(f for sub in root.iterdir() if sub.is_dir() for f in sub.rglob("*")
                      if f.is_file() and not f.name.startswith("."))
    files: list[Path] = []
    for item in [path] if isinstance(path, str) else path:
        found = sorted(glob.glob(str(Path(item).expanduser()))) if _is_glob(item) else [item]
        if not found:
            raise PretuneError(f"task.path: '{item}' matches no file")
        for f in found:
            p = Path(f).expanduser()
            if not p.is_file():
                raise PretuneError(f"task.path: {p} is not a file (one text file per class, "
                                   "one example per line)")
            if p not in files:
                files.append(p)
    return sorted(files)  # the split must not depend on the order the files were named in


def read_class_rows(path: str | list[str], encoding: str) -> tuple[list[dict[str, Any]], str]:
    """(rows with ``text`` and ``label``, a source name for messages)."""
    rows: list[dict[str, Any]] = []
    folder = isinstance(path, str) and not _is_glob(path)
    files = class_files(path)
    if not files:
        raise PretuneError(f"task.path: {path} has no files in class folders")
    labels: set[str] = set()
    for f in files:
        label = f.relative_to(Path(path).expanduser()).parts[0] if folder else name_of(str(f))
        labels.add(label)
        try:
            with open_text(f, encoding) as fh:
                text = fh.read()
        except UnicodeDecodeError as e:
            raise decode_error(f, e, encoding) from None
        if folder:  # one example per file
            if text.strip():
                rows.append({"text": text.strip(), "label": label})
        else:  # one example per line
            rows.extend({"text": ln.strip(), "label": label} for ln in text.splitlines()
                        if ln.strip())
    if len(labels) < 2:
        what = "class folder" if folder else "file"
        raise PretuneError(f"task.path: {path} gives one class ({', '.join(labels)}); give one "
                           f"{what} per class, at least two")
    return rows, (str(path) if folder else ", ".join(str(f) for f in files))


def classes_name(path: str | list[str]) -> str:
    """A short task name: the class folder's, or the files' folder (else their stems)."""
    if isinstance(path, str) and not _is_glob(path):
        return Path(path).expanduser().resolve().name
    files = class_files(path)
    parents = {f.resolve().parent for f in files}
    if len(parents) == 1 and next(iter(parents)).name:
        return next(iter(parents)).name
    return "+".join(name_of(str(f)) for f in files)


__all__ = ["class_files", "classes_name", "is_class_folder", "names_classes", "read_class_rows"]
