"""Config discovery: every key a command accepts, each with its one-line description.

The descriptions are the comments beside (or just above) each field in ``pretune.config``'s
source, so the code stays the one place they are written. ``commented_yaml`` prints an
effective config as YAML a user can save and edit (``pretune <command> --print-config``);
``suggest`` finds the nearest valid keys for a misspelt one.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import io
import re
import tokenize
import types
import typing
from typing import Any

import yaml
from pydantic import BaseModel

_FIELD_LINE = re.compile(r"^\s+([A-Za-z_]\w*)\s*:")


@functools.cache
def field_comments(cls: type[BaseModel]) -> dict[str, str]:
    """``{field: comment}`` from the class body's source: a trailing ``# ...`` on the field's
    line, else the comment block just above it. Inherited fields come from their own class."""
    out: dict[str, str] = {}
    for base in reversed(cls.__mro__[1:]):
        if isinstance(base, type) and issubclass(base, BaseModel) and base is not BaseModel:
            out.update(field_comments(base))
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return out
    above: list[str] = []
    depth = 0  # bracket depth: a field's default may span lines
    current, current_line = None, -1
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
        elif tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if current is not None and tok.start[0] == current_line:
                out.setdefault(current, text)
            elif depth == 0:
                above.append(text)
        elif tok.type == tokenize.NAME and depth == 0 and tok.start[1] == 4:
            m = _FIELD_LINE.match(tok.line)
            if m and m.group(1) == tok.string and tok.string in cls.model_fields:
                current, current_line = tok.string, tok.start[0]
                if above and tok.string not in out:
                    out[tok.string] = " ".join(above)
            above = []
        elif tok.type == tokenize.NEWLINE or (tok.type == tokenize.NL and depth == 0
                                              and not tok.line.strip()):
            above = []  # a statement or a blank line ends a comment block
    return {k: _one_line(v) for k, v in out.items()}


def _one_line(text: str) -> str:
    text = " ".join(text.split()).replace("``", "`")
    if len(text) > 120 and ". " in text[:120]:
        text = text[:text.index(". ") + 1]  # the first sentence of a long comment block
    return text if len(text) <= 160 else text[:157].rstrip() + "..."


def section_doc(cls: type[BaseModel]) -> str:
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")  # its own, not inherited
    first = " ".join(doc.split("\n\n")[0].split()).replace("``", "`")
    return _one_line(first.split(". ")[0].rstrip("."))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional/Union/list/dict/Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    if origin is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            for m in _models_in(arg):
                if m not in found:
                    found.append(m)
    return found


def field_paths(cls: type[BaseModel], prefix: str = "", seen: tuple = ()) -> list[str]:
    """Every dotted key ``cls`` accepts (``train.max_steps``...), list items by their fields."""
    paths: list[str] = []
    for name, f in cls.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        for sub in _models_in(f.annotation):
            if sub not in seen:
                paths.extend(p for p in field_paths(sub, path + ".", (*seen, sub))
                             if p not in paths)
    return paths


def suggest(cls: type[BaseModel], key: str, n: int = 2) -> list[str]:
    """The valid keys nearest to the unknown ``key``: same place first, then the same leaf
    name anywhere (``max_steps`` -> ``train.max_steps``)."""
    paths = field_paths(cls)
    given_parent = key.rpartition(".")[0]
    key = ".".join(p for p in key.split(".") if not p.isdigit())  # list items: strategies.0.x
    parent, _, leaf = key.rpartition(".")
    siblings = [p.rpartition(".")[2] for p in paths if p.rpartition(".")[0] == parent]
    near = [f"{given_parent}.{s}" if parent else s
            for s in difflib.get_close_matches(leaf, siblings, n=n, cutoff=0.6)]
    if not near:
        near = [p for p in paths if p.rpartition(".")[2] == leaf]
    if not near:
        near = difflib.get_close_matches(key, paths, n=n, cutoff=0.75)
    return near[:n]


# --------------------------------------------------------------------------- printing


def commented_yaml(cfg: BaseModel, header: str = "") -> str:
    """``cfg`` as YAML with each key's description as a comment; loading it back gives the
    same config (same ``config_hash``)."""
    lines = [f"# {h}" if h else "#" for h in header.splitlines()]
    _emit(cfg, 0, lines)
    return "\n".join(lines) + "\n"


def _emit(model: BaseModel, indent: int, lines: list[str]) -> None:
    comments = field_comments(type(model))
    pad = " " * indent
    for name in type(model).model_fields:
        value = getattr(model, name)
        note = comments.get(name) or (section_doc(type(value)) if isinstance(value, BaseModel)
                                      else "")
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:" + (f"  # {note}" if note else ""))
            _emit(value, indent + 2, lines)
            continue
        data = model.model_dump(mode="json", include={name})[name]
        flat = not isinstance(data, dict | list) or (
            len(data) <= 8 and all(not isinstance(v, dict | list)
                                   for v in (data.values() if isinstance(data, dict) else data)))
        if flat:
            lines.append(f"{pad}{name}: {_flow(data)}" + (f"  # {note}" if note else ""))
            continue
        if note:
            lines.append(f"{pad}# {note}")
        block = yaml.safe_dump({name: data}, sort_keys=False, allow_unicode=True, width=10_000)
        lines.extend(pad + t for t in block.rstrip("\n").split("\n"))


def _flow(value: Any) -> str:
    """One value as inline YAML (``0.0005``, ``null``, ``[0.9, 0.98]``, ``'builtin:news'``)."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000)
    return text.removesuffix("\n").removesuffix("\n...").strip()


__all__ = ["commented_yaml", "field_comments", "field_paths", "section_doc", "suggest"]
