"""Token-tagging tasks (NER, segmentation, POS): read, check, split and budget.

Inputs: CoNLL-style files (a token and its tag per line — the first and the last column —, a
blank line between sentences, ``-DOCSTART-`` lines skipped), jsonl with ``tokens`` + ``tags``
lists, jsonl with a ``text`` and character ``spans`` ([start, end, type] or {start, end,
label}), and the builtins ``wnut16`` (English tweets) and ``peoples-daily-ner`` (Chinese,
character level). Tags are BIO (IOB2). An ``I-X`` that does not continue an ``X`` entity is
repaired to ``B-X`` and counted (``task.invalid_bio=error`` refuses instead); a tag outside
BIO is an error naming the file and line.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pretune.config import TagTaskConfig, config_hash
from pretune.data import peoples_daily
from pretune.data.builtin import builtin_path, is_builtin
from pretune.data.cjk import CJK_CHAR, CJK_CHARS, has_cjk
from pretune.data.rows import COMPRESSIONS, check_budget, decode_error, name_of, open_text
from pretune.data.split_ids import saved_split
from pretune.errors import PretuneError

BUILTIN_TAG_TASKS = ("wnut16", "peoples-daily-ner")
_BIO = re.compile(r"^(O|[BI]-.+)$")
_WORD = re.compile(f"[{CJK_CHARS}]|[^\\W{CJK_CHARS}]+|[^\\w\\s]")  # CJK: a char each


@dataclass
class TagSplit:
    tokens: list[list[str]]  # words, or characters for character-level tasks
    tags: list[list[str]]  # BIO tag per token
    ids: list[int] | None = None  # each sentence's place in its file (0 = the first)

    def __len__(self) -> int:
        return len(self.tokens)

    def subset(self, idx: Any) -> TagSplit:
        return TagSplit([self.tokens[i] for i in idx], [self.tags[i] for i in idx],
                        [self.ids[i] for i in idx] if self.ids is not None else None)

    @property
    def labels(self) -> list[list[str]]:
        return self.tags

    @property
    def texts(self) -> list[str]:
        """Each sentence as one string (what split.json hashes)."""
        return [" ".join(t) for t in self.tokens]

    @staticmethod
    def concat(a: TagSplit, b: TagSplit) -> TagSplit:
        ids = a.ids + b.ids if a.ids is not None and b.ids is not None else None
        return TagSplit(a.tokens + b.tokens, a.tags + b.tags, ids)


@dataclass
class TagTask:
    name: str
    labels: list[str]  # "O", then B-/I- of every entity type (types sorted)
    train: TagSplit
    val: TagSplit
    test: TagSplit
    char_level: bool
    budget: int | None = None
    fingerprint: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    type = "token"  # what metrics and folds read

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def entity_types(self) -> list[str]:
        return sorted({t[2:] for t in self.labels if t != "O"})

    @property
    def majority_baseline(self) -> float:
        """Token accuracy of tagging everything O (its entity F1 is 0)."""
        tags = [t for seq in self.test.tags for t in seq]
        return float(np.mean([t == "O" for t in tags])) if tags else float("nan")


def label_list(types: set[str]) -> list[str]:
    return ["O"] + [f"{p}-{t}" for t in sorted(types) for p in ("B", "I")]


def check_bio(tags: list[str], where: str, repair: bool, counts: Counter) -> list[str]:
    """Validate BIO tags; an I-X that does not continue X becomes B-X (counted) or an error."""
    out = []
    prev = "O"
    for t in tags:
        if not _BIO.match(t):
            raise PretuneError(f"{where}: tag {t!r} is not BIO (O, B-<type>, I-<type>); convert "
                               "the file to BIO/IOB2 tags")
        if t.startswith("I-") and prev[2:] != t[2:]:
            if not repair:
                raise PretuneError(f"{where}: {t} follows {prev} (an I- tag must continue its "
                                   "entity); fix the file or set task.invalid_bio=repair")
            t = "B-" + t[2:]
            counts["repaired_i_tags"] += 1
        out.append(t)
        prev = t
    return out


def _read_conll(path: Path, cfg: TagTaskConfig, counts: Counter) -> TagSplit:
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    cur_t: list[str] = []
    cur_g: list[str] = []
    start_line, lineno = 1, 0

    def flush(lineno: int) -> None:
        nonlocal cur_t, cur_g, start_line
        if cur_t:
            tokens.append(cur_t)
            tags.append(check_bio(cur_g, f"{path} line {start_line}", cfg.invalid_bio == "repair",
                                  counts))
        cur_t, cur_g, start_line = [], [], lineno + 1

    with open_text(path, cfg.encoding) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                flush(lineno)
                continue
            if line.startswith("-DOCSTART-"):
                continue
            parts = line.split("\t") if "\t" in line else line.split()
            parts = [p for p in parts if p.strip()]
            if len(parts) < 2:
                raise PretuneError(f"{path} line {lineno}: expected a token and its tag "
                                   f"(separated by a tab or spaces), found {line.strip()!r}")
            cur_t.append(parts[0].strip())
            cur_g.append(parts[-1].strip())
        flush(lineno)
    return TagSplit(tokens, tags)


def _spans_to_tags(text: str, spans: list[Any], char_level: bool, where: str
                   ) -> tuple[list[str], list[str]]:
    """Character spans over ``text`` -> (tokens, BIO tags); words from a regex when not
    character-level. A span that cuts a word tags the whole word."""
    if char_level:
        pieces = [(m.start(), m.end()) for m in re.finditer(r"\S", text)]
    else:
        pieces = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    tags = ["O"] * len(pieces)
    for sp in spans:
        if isinstance(sp, dict):
            s, e, label = sp.get("start"), sp.get("end"), sp.get("label", sp.get("type"))
        elif isinstance(sp, list | tuple) and len(sp) == 3:
            s, e, label = sp
        else:
            raise PretuneError(f"{where}: span {sp!r} is not [start, end, type] or "
                               "{start, end, label}")
        if not (isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= len(text)):
            raise PretuneError(f"{where}: span {sp!r} is outside the text ({len(text)} chars)")
        inside = [i for i, (a, b) in enumerate(pieces) if a < e and b > s]
        for j, i in enumerate(inside):
            tags[i] = f"{'B' if j == 0 else 'I'}-{label}"
    return [text[a:b] for a, b in pieces], tags


def _read_jsonl(path: Path, cfg: TagTaskConfig, counts: Counter) -> TagSplit:
    tokens, tags = [], []
    with open_text(path, cfg.encoding) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise PretuneError(f"{where}: not valid JSON") from None
            if cfg.tokens_field in obj:
                toks, tg = obj[cfg.tokens_field], obj.get(cfg.tags_field)
                if not isinstance(toks, list) or not isinstance(tg, list):
                    raise PretuneError(f"{where}: '{cfg.tokens_field}' and '{cfg.tags_field}' "
                                       "must be lists (set task.tokens_field / tags_field)")
                if len(toks) != len(tg):
                    raise PretuneError(f"{where}: {len(toks)} tokens but {len(tg)} tags")
                toks, tg = [str(t) for t in toks], [str(t) for t in tg]
            elif cfg.text_field in obj:
                char = cfg.char_level if cfg.char_level != "auto" else \
                    has_cjk(str(obj[cfg.text_field]))
                toks, tg = _spans_to_tags(str(obj[cfg.text_field]), obj.get(cfg.spans_field) or [],
                                          char, where)
            else:
                raise PretuneError(f"{where}: no '{cfg.tokens_field}' or '{cfg.text_field}' key "
                                   "(set task.tokens_field or task.text_field)")
            if toks:
                tokens.append(toks)
                tags.append(check_bio(tg, where, cfg.invalid_bio == "repair", counts))
    return TagSplit(tokens, tags)


def _format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    name = path.name.lower()
    for comp in COMPRESSIONS:
        name = name.removesuffix(comp)
    return "jsonl" if name.endswith((".jsonl", ".json", ".ndjson")) else "conll"


def read_tags(path: str, cfg: TagTaskConfig, counts: Counter | None = None) -> TagSplit:
    """All sentences of one tagged file or builtin (BIO-checked)."""
    counts = counts if counts is not None else Counter()
    if is_builtin(path):
        name = path.removeprefix("builtin:")
        if name == "peoples-daily-ner":
            chars, tags = zip(*peoples_daily.ner_sentences(), strict=True)
            return _numbered(TagSplit([list(c) for c in chars], [list(t) for t in tags]))
        if name == "wnut16":
            return _numbered(_read_conll(builtin_path(name),
                                         cfg.model_copy(update={"encoding": "utf-8"}), counts))
        raise PretuneError(f"builtin:{name} is not a token-tagging task; choose one of: "
                           + ", ".join(f"builtin:{t}" for t in BUILTIN_TAG_TASKS))
    p = Path(path).expanduser()
    if not p.is_file():
        raise PretuneError(f"tagged file {p} not found (check task.path / validation / test)")
    reader = _read_jsonl if _format(p, cfg.format) == "jsonl" else _read_conll
    try:
        split = reader(p, cfg, counts)
    except UnicodeDecodeError as e:
        raise decode_error(p, e, cfg.encoding) from None
    if not len(split):
        raise PretuneError(f"{p} has no tagged sentences")
    return _numbered(split)


def _numbered(split: TagSplit) -> TagSplit:
    return replace(split, ids=list(range(len(split))))


def _types(split: TagSplit) -> set[str]:
    return {t[2:] for seq in split.tags for t in seq if t != "O"}


def is_char_level(cfg: TagTaskConfig, split: TagSplit) -> bool:
    if cfg.char_level != "auto":
        return bool(cfg.char_level)
    sample = [t for seq in split.tokens[:200] for t in seq]
    cjk = [len(t) == 1 and bool(CJK_CHAR.match(t)) for t in sample]
    return bool(sample) and bool(np.mean(cjk) > 0.5)


def _split(split: TagSplit, size: int | float, seed: int) -> tuple[TagSplit, TagSplit]:
    n = len(split)
    n_held = size if isinstance(size, int) else int(round(size * n))
    if not 0 < n_held < n:
        raise PretuneError(f"cannot hold out {n_held} of {n} tagged sentences; adjust "
                           "task.test_size / test_fraction / val_fraction")
    perm = np.random.default_rng(seed).permutation(n)
    return split.subset(sorted(perm[n_held:])), split.subset(sorted(perm[:n_held]))


def _fingerprint(cfg: TagTaskConfig) -> str:
    """The task's identity (study caches); without split_from the one earlier runs had."""
    return config_hash(cfg, exclude={"budget"} | ({"split_from"} if cfg.split_from is None
                                                  else set()))


def _three_way(cfg: TagTaskConfig, full: TagSplit, val_split: TagSplit | None,
               test_split: TagSplit | None) -> tuple[TagSplit, TagSplit, TagSplit]:
    if test_split is not None:
        train, test = full, test_split
    else:
        train, test = _split(full, cfg.test_size or cfg.test_fraction, cfg.split_seed)
    if val_split is not None:
        val = val_split
    elif cfg.val_fraction > 0:
        train, val = _split(train, cfg.val_fraction, cfg.split_seed + 1)
    else:
        val = TagSplit([], [], [])
    return train, val, test


def task_name(cfg: TagTaskConfig) -> str:
    return name_of(cfg.path)


def load_tag_task(cfg: TagTaskConfig, seed: int = 0) -> TagTask:
    """Read, check, split and (if ``cfg.budget``) subsample a token-tagging task."""
    counts: Counter = Counter()
    full = read_tags(cfg.path, cfg, counts)
    val_split = read_tags(cfg.validation, cfg, counts) if cfg.validation else None
    test_split = read_tags(cfg.test, cfg, counts) if cfg.test else None
    types = _types(full)
    if not types:
        raise PretuneError(f"{cfg.path}: no entity tags (every tag is O); check the tag column")
    for other, where in ((val_split, cfg.validation), (test_split, cfg.test)):
        unseen = sorted(_types(other) - types) if other is not None else []
        if unseen:
            raise PretuneError(f"{where} has entity types never seen in training ({cfg.path}): "
                               f"{', '.join(unseen[:10])}; add training examples or retag")
    if counts["repaired_i_tags"]:
        warnings.warn(f"{cfg.path}: repaired {counts['repaired_i_tags']} I- tags that did not "
                      "continue an entity (now B-); set task.invalid_bio=error to refuse",
                      stacklevel=2)
    if cfg.split_from:  # the sentences another run trained / validated / tested on
        train, val, test = saved_split(cfg, full, val_split, test_split)
    else:
        train, val, test = _three_way(cfg, full, val_split, test_split)
    task = TagTask(task_name(cfg), label_list(types), train, val, test,
                   is_char_level(cfg, full), fingerprint=_fingerprint(cfg),
                   info={"repaired_i_tags": counts["repaired_i_tags"]})
    return apply_tag_budget(task, cfg.budget, seed)


def apply_tag_budget(task: TagTask, budget: int | None, seed: int) -> TagTask:
    """``budget`` training sentences: one with each entity type first, then a random draw."""
    if budget is None:
        return task
    n = len(task.train)
    check_budget(budget, n, "sentences", task.name)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for t in task.entity_types:
        if any(t in {g[2:] for g in task.train.tags[i]} for i in chosen):
            continue
        having = [i for i, seq in enumerate(task.train.tags) if f"B-{t}" in seq]
        if having and len(chosen) < budget:
            chosen.append(int(rng.choice(having)))
    rest = np.setdiff1d(np.arange(n), chosen)
    chosen += rng.choice(rest, budget - len(chosen), replace=False).tolist()
    return replace(task, train=task.train.subset(sorted(chosen)), budget=budget)


def text_tokens(text: str, char_level: bool) -> tuple[list[str], list[tuple[int, int]]]:
    """Split raw text for ``predict``: characters (character-level) or words and punctuation,
    with their character offsets."""
    pattern = r"\S" if char_level else _WORD
    found = list(re.finditer(pattern, text))
    return [m.group() for m in found], [(m.start(), m.end()) for m in found]
