"""Generation examples: (source, target) pairs read, checked, split, budgeted, and turned into
model inputs.

A source is an input text (filled into the prompt template) or, for chat data, the list of
messages before the target turn. ``PromptFormat`` renders a source as the model's prompt (its
chat template, or plain text) with optional in-context examples; ``encode_pairs`` tokenizes
prompt + target with the loss on target tokens only (prompt positions are -100), cutting long
inputs (never the template) and long targets, and counting both.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from pretune.config import GenTaskConfig
from pretune.config.base import config_hash
from pretune.data.builtin import builtin_path, is_builtin
from pretune.data.rows import check_budget, name_of, open_text, read_rows
from pretune.errors import PretuneError
from pretune.evaluate.metrics import rouge_l

Source = str | list[dict[str, str]]  # an input text, or chat messages before the target turn
# Prompts of the builtin tasks (a task config's own template wins).
BUILTIN_TEMPLATES = {
    "news-headlines": "Write a headline for this news article.\n\n{input}\n\nHeadline:",
}
BUILTIN_GENERATION = tuple(BUILTIN_TEMPLATES)


@dataclass
class GenSplit:
    sources: list[Source]
    targets: list[str]

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, idx: Any) -> GenSplit:
        return GenSplit([self.sources[int(i)] for i in idx], [self.targets[int(i)] for i in idx])

    @staticmethod
    def concat(a: GenSplit, b: GenSplit) -> GenSplit:
        return GenSplit(a.sources + b.sources, a.targets + b.targets)


@dataclass
class GenTask:
    """A generation task with fixed train / validation / test splits."""

    name: str
    train: GenSplit
    val: GenSplit
    test: GenSplit
    template: str  # the prompt template ("{input}" is replaced)
    baseline: float = 0.0  # ROUGE-L of the lead baseline on the test split
    budget: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    type: str = "generation"
    labels: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return 0

    @property
    def majority_baseline(self) -> float:
        """The trivial reference: ROUGE-L of the input's first words (``info["baseline"]``)."""
        return self.baseline


# --------------------------------------------------------------------------- reading


def task_name(cfg: GenTaskConfig) -> str:
    return name_of(cfg.path)


def _news_headlines() -> GenSplit:
    """builtin:news-headlines: each article of builtin:news with a title and text; an article
    text seen before (reposts) is kept once."""
    path = builtin_path("news-headlines")
    sources: list[Source] = []
    targets: list[str] = []
    seen: set[str] = set()
    with zipfile.ZipFile(path) as zf, io.TextIOWrapper(zf.open("NewsArticles.csv"),
                                                       encoding="utf-8", errors="replace") as f:
        for row in csv.DictReader(f):
            title, text = (row.get("title") or "").strip(), (row.get("text") or "").strip()
            if title and text and text not in seen:
                seen.add(text)
                sources.append(text)
                targets.append(" ".join(title.split()))
    return GenSplit(sources, targets)


def _messages(value: Any, where: str) -> tuple[list[dict[str, str]], str]:
    """Chat rows: the turns before the last assistant turn, and that turn's content."""
    if not isinstance(value, list) or not value or not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in value):
        raise PretuneError(f"{where}: messages must be a list of {{role, content}} objects")
    if value[-1]["role"] != "assistant":
        raise PretuneError(f"{where}: the last message must be the assistant's (the target)")
    turns = [{"role": str(m["role"]), "content": str(m["content"])} for m in value[:-1]]
    return turns, str(value[-1]["content"])


def read_pairs(path: str, cfg: GenTaskConfig) -> GenSplit:
    """(source, target) pairs of a csv/tsv/jsonl/parquet file or a builtin."""
    if is_builtin(path):
        name = path.removeprefix("builtin:")
        if name != "news-headlines":
            raise PretuneError(f"{path} is not a generation task; builtin generation tasks: "
                               + ", ".join(f"builtin:{t}" for t in BUILTIN_GENERATION))
        return _news_headlines()
    rows, cols = read_rows(path, cfg.format, cfg.encoding)
    if not rows:
        raise PretuneError(f"{path} has no rows; it needs an input and a target column")
    chat = cfg.messages_field in cols
    if not chat:
        missing = [f for f in (cfg.input_field, cfg.target_field) if f not in cols]
        if missing:
            raise PretuneError(
                f"{path} has no column {missing[0]!r} (columns: {', '.join(cols[:12])}); set "
                f"task.input_field / task.target_field, or give chat rows with "
                f"task.messages_field")
    sources: list[Source] = []
    targets: list[str] = []
    for i, row in enumerate(rows, start=1):
        where = f"{path} row {i}"
        if chat:
            turns, target = _messages(row[cfg.messages_field], where)
            sources.append(turns)
        else:
            value = row.get(cfg.input_field)
            sources.append("" if value is None else str(value))
            target = "" if row.get(cfg.target_field) is None else str(row[cfg.target_field])
        if not target.strip():
            field_name = cfg.messages_field if chat else cfg.target_field
            raise PretuneError(f"{where}: empty target ({field_name!r}); fill it or drop the row")
        targets.append(target.strip())
    return GenSplit(sources, targets)


def _split(split: GenSplit, size: int | float, seed: int, what: str) -> tuple[GenSplit, GenSplit]:
    n = len(split)
    n_held = size if isinstance(size, int) else int(round(size * n))
    if not 0 < n_held < n:
        raise PretuneError(f"cannot hold out {n_held} of {n} examples for {what}; adjust "
                           f"task.{what}_size / {what}_fraction")
    perm = np.random.default_rng(seed).permutation(n)
    return split.subset(sorted(perm[n_held:])), split.subset(sorted(perm[:n_held]))


def _text(source: Source) -> str:
    return source if isinstance(source, str) else " ".join(m["content"] for m in source)


def lead_baseline(train: GenSplit, test: GenSplit) -> tuple[float, int]:
    """ROUGE-L of "the input's first k words" (k = median target length in training words)."""
    if not len(test):
        return 0.0, 0
    k = max(1, int(median(len(t.split()) for t in train.targets))) if len(train) else 8
    preds = [" ".join(_text(s).split()[:k]) for s in test.sources]
    return rouge_l(test.targets, preds), k


def load_gen_task(cfg: GenTaskConfig, seed: int = 0) -> GenTask:
    """Read, split and (if ``cfg.budget``) subsample a generation task."""
    full = read_pairs(cfg.path, cfg)
    if cfg.test:
        train, test = full, read_pairs(cfg.test, cfg)
    else:
        train, test = _split(full, cfg.test_size or cfg.test_fraction, cfg.split_seed, "test")
    if cfg.validation:
        val = read_pairs(cfg.validation, cfg)
    elif cfg.val_size or cfg.val_fraction > 0:
        train, val = _split(train, cfg.val_size or cfg.val_fraction, cfg.split_seed + 1, "val")
    else:
        val = GenSplit([], [])
    name = task_name(cfg)
    template = cfg.template or BUILTIN_TEMPLATES.get(name, "{input}")
    if "{input}" not in template:
        raise PretuneError(f"task.template={template!r} must contain {{input}}")
    baseline, k = lead_baseline(train, test)
    task = GenTask(name, train, val, test, template, baseline,
                   info={"baseline": f"lead-{k} (the input's first {k} words), ROUGE-L",
                         "fingerprint": config_hash(cfg, exclude={"budget", "decode"})})
    return apply_gen_budget(task, cfg.budget, seed)


def apply_gen_budget(task: GenTask, budget: int | None, seed: int) -> GenTask:
    if budget is None:
        return task
    n = len(task.train)
    check_budget(budget, n, "examples", task.name)
    idx = np.random.default_rng(seed).choice(n, budget, replace=False)
    return replace(task, train=task.train.subset(sorted(idx)), budget=budget)


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class PromptFormat:
    """How a source becomes the prompt text: the template, the model's chat template or plain
    text, and in-context examples (``shots``: (source, target) pairs shown before it)."""

    template: str = "{input}"
    chat: bool = False
    system: str | None = None
    shots: tuple[tuple[Source, str], ...] = ()
    target_sep: str = ""  # between a plain prompt and its target (" " for byte-level BPE)

    def fill(self, source: Source, cut: int | None = None, tokenizer: Any = None) -> Source:
        if isinstance(source, str):
            if cut is not None:  # keep the input's first `cut` tokens
                ids = tokenizer(source, add_special_tokens=False,
                                verbose=False)["input_ids"][:max(cut, 0)]
                source = tokenizer.decode(ids, skip_special_tokens=True)
            return self.template.replace("{input}", source)
        return source

    def messages(self, source: Source, cut: int | None = None, tokenizer: Any = None
                 ) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        for s, t in self.shots:
            out += self._turns(self.fill(s, cut, tokenizer)) + [{"role": "assistant",
                                                                 "content": t}]
        return out + self._turns(self.fill(source, cut, tokenizer))

    @staticmethod
    def _turns(filled: Source) -> list[dict[str, str]]:
        return [{"role": "user", "content": filled}] if isinstance(filled, str) else list(filled)

    def render(self, tokenizer: Any, source: Source, cut: int | None = None) -> str:
        """The prompt text the model continues (the target follows it directly)."""
        if self.chat:
            return tokenizer.apply_chat_template(self.messages(source, cut, tokenizer),
                                                 add_generation_prompt=True, tokenize=False)
        shots = "".join(f"{_plain(self.fill(s, cut, tokenizer))}{self.target_sep}{t}\n\n"
                        for s, t in self.shots)
        return shots + _plain(self.fill(source, cut, tokenizer))


def _plain(filled: Source) -> str:
    if isinstance(filled, str):
        return filled
    return "\n".join(f"{m['role']}: {m['content']}" for m in filled) + "\nassistant:"


@dataclass
class GenInputs:
    """Tokenized examples: prompt ids (what generation continues), training ids and labels
    (-100 where the loss is not taken), and how many inputs / targets were cut."""

    prompts: list[list[int]]
    input_ids: list[list[int]]
    labels: list[list[int]]
    cut_inputs: int = 0
    cut_targets: int = 0


def encode_pairs(tokenizer: Any, split: GenSplit, fmt: PromptFormat, max_length: int,
                 max_target_length: int, *, seq2seq: bool, eos_id: int,
                 reserve: int = 0) -> GenInputs:
    """Prompt + target ids. Causal LMs: ``max_length`` bounds prompt + target (+ eos), and
    ``reserve`` (what generation adds) when it is longer than the target; an input that does
    not fit is cut (its first tokens kept, the template never), targets are cut at
    ``max_target_length``. Encoder-decoders: the prompt alone is bounded by ``max_length``;
    targets are tokenized as targets (``text_target``: Marian's target vocabulary, BART's
    ``<s>``)."""
    out = GenInputs([], [], [])
    bos = _leading_special(tokenizer) if not (seq2seq or fmt.chat) else None
    for source, target in zip(split.sources, split.targets, strict=True):
        text, p_ids = _prompt(tokenizer, fmt, source, seq2seq, bos)
        t_ids = _target_ids(tokenizer, target, seq2seq, eos_id,
                            fmt.target_sep if text[-1:].strip() else "")
        if len(t_ids) > max_target_length + 1:
            t_ids, out.cut_targets = [*t_ids[:max_target_length], eos_id], out.cut_targets + 1
        room = max_length - (0 if seq2seq else max(len(t_ids), reserve))
        if room < 8:
            what = f"a {len(t_ids)}-token target" if len(t_ids) >= reserve else \
                f"{reserve} generated tokens (decode.max_new_tokens)"
            raise PretuneError(f"task.max_length={max_length} leaves {room} tokens for the "
                               f"prompt beside {what}; raise max_length, or lower "
                               "max_target_length / decode.max_new_tokens")
        if len(p_ids) > room:
            out.cut_inputs += 1
            n_in = _input_tokens(tokenizer, fmt, source)
            over = len(p_ids) - room
            for margin in (2, 8, 32):  # re-tokenizing a cut text may merge differently
                _, p_ids = _prompt(tokenizer, fmt, source, seq2seq, bos,
                                   cut=max(n_in - over - margin, 0))
                if len(p_ids) <= room:
                    break
            p_ids = p_ids[-room:] if len(p_ids) > room else p_ids
        out.prompts.append(p_ids)
        if seq2seq:
            out.input_ids.append(p_ids)
            out.labels.append(t_ids)
        else:
            out.input_ids.append(p_ids + t_ids)
            out.labels.append([-100] * len(p_ids) + t_ids)
    return out


def _leading_special(tokenizer: Any) -> int | None:
    """The id a plain causal prompt starts with: the tokenizer's own BOS when it adds one
    (Llama, Gemma), else None."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    return bos if tokenizer("a", verbose=False)["input_ids"][:1] == [bos] else None


def _prompt(tokenizer: Any, fmt: PromptFormat, source: Source, seq2seq: bool,
            bos: int | None, cut: int | None = None) -> tuple[str, list[int]]:
    """The rendered prompt and its ids. An encoder input gets the tokenizer's own specials
    (T5: </s>); a causal prompt its BOS when the tokenizer uses one, and an empty prompt the
    end-of-text id (GPT-2's convention), so the first target token is predicted from
    something."""
    text = fmt.render(tokenizer, source, cut)
    # verbose=False: a long input is expected here (it is cut next), not a warning
    ids = list(tokenizer(text, add_special_tokens=seq2seq, verbose=False)["input_ids"])
    if not seq2seq:
        if bos is not None and ids[:1] != [bos]:
            ids = [bos, *ids]
        if not ids:
            first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else \
                tokenizer.eos_token_id
            ids = [int(first)] if first is not None else ids
    return text, ids


def _target_ids(tokenizer: Any, target: str, seq2seq: bool, eos_id: int, sep: str
                ) -> list[int]:
    """Target ids ending in eos (empty for generation-only inputs)."""
    if not target:
        return []
    if seq2seq:
        ids = list(tokenizer(text_target=target, verbose=False)["input_ids"])
        return ids if ids[-1:] == [eos_id] else [*ids, eos_id]
    ids = tokenizer(sep + target, add_special_tokens=False, verbose=False)["input_ids"]
    return [*ids, eos_id]


def space_marks_words(tokenizer: Any) -> bool:
    """Byte-level BPE (GPT-2 style) marks a word's leading space in its token: a target after
    "Headline:" is tokenized as " Betsy", as the model saw such text in pre-training."""
    toks = tokenizer.convert_ids_to_tokens(
        tokenizer(" a", add_special_tokens=False, verbose=False)["input_ids"])
    return bool(toks) and toks[0].startswith("\u0120")


def _input_tokens(tokenizer: Any, fmt: PromptFormat, source: Source) -> int:
    """Tokens of the longest input in the prompt (what a cut shortens)."""
    texts = [s for s in (source, *(s for s, _ in fmt.shots)) if isinstance(s, str)]
    if not texts:
        return 0
    return max(len(tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"])
               for t in texts)


# --------------------------------------------------------------------------- inputs


def head_text(source: Source, n: int = 160) -> str:
    text = source if isinstance(source, str) else " / ".join(m["content"] for m in source)
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def chat_turns(value: Any, where: str, field: str) -> list[dict[str, str]]:
    """The turns to answer of a chat row (a trailing assistant turn, the answer, dropped)."""
    if isinstance(value, str):  # csv / tsv cells hold JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, list) or not value or not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in value):
        raise PretuneError(f"{where}: {field!r} must be a list of {{role, content}} messages")
    turns = [{"role": str(m["role"]), "content": str(m["content"])} for m in value]
    return turns[:-1] if turns[-1]["role"] == "assistant" and len(turns) > 1 else turns


def read_sources(input: str, cfg: GenTaskConfig) -> list[Source]:
    """Inputs to generate for: a .txt (one per line; ``-`` reads stdin), or csv/tsv/jsonl/
    parquet with ``task.input_field`` (or chat ``messages``, the turns to answer)."""
    if is_builtin(input):
        raise PretuneError(f"generate reads a .txt / .jsonl / .csv file or stdin, not {input}")
    if input == "-":
        return [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    path = Path(input)
    if not path.is_file():
        raise PretuneError(f"input file {path} not found")
    if path.suffix.lower() == ".txt":
        with open_text(path, cfg.encoding) as f:
            return [line.rstrip("\r\n") for line in f if line.strip()]
    rows, cols = read_rows(path, cfg.format, cfg.encoding)
    if cfg.messages_field in cols:
        return [chat_turns(r.get(cfg.messages_field), f"{path} row {i}", cfg.messages_field)
                for i, r in enumerate(rows, start=1)]
    if cfg.input_field not in cols:
        raise PretuneError(f"{path} has no column {cfg.input_field!r} (columns: "
                           f"{', '.join(cols[:12])}); set task.input_field")
    return [str(r[cfg.input_field] or "") for r in rows]
