"""Word boundaries of unsegmented text, for Chinese whole-word masking (Chinese BERT-wwm).

A tokenizer that splits every CJK character cannot tell where a Chinese word ends; the
masked-LM objective can mask a whole word only if ``prepare`` records where words start. Two
segmenters: ``jieba`` (when installed, as Chinese BERT-wwm used a segmenter) and a dictionary
forward-maximum-matching segmenter over the People's Daily word list (embedded, no extra
dependency; on People's Daily itself it recovers the gold words it was built from).
Outside CJK runs a word is a run of letters/digits, and every other character is its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from pretune.data.cjk import CJK_CHARS
from pretune.errors import PretuneError

_RUNS = re.compile(f"[{CJK_CHARS}]+|[^\\W{CJK_CHARS}]+|\\S")
_CJK_RUN = re.compile(f"[{CJK_CHARS}]+")
MAX_WORD = 6  # longest dictionary word tried (characters)

Segmenter = Callable[[str], list[str]]


def forward_max_match(vocab: frozenset[str], max_word: int = MAX_WORD) -> Segmenter:
    """Greedy longest-match segmentation of a CJK run against ``vocab``."""
    def segment(run: str) -> list[str]:
        out, i = [], 0
        while i < len(run):
            for n in range(min(max_word, len(run) - i), 0, -1):
                if n == 1 or run[i : i + n] in vocab:
                    out.append(run[i : i + n])
                    i += n
                    break
        return out

    return segment


def make_segmenter(kind: str) -> Segmenter:
    """``jieba`` / ``dictionary`` / ``auto`` (jieba if importable, else the dictionary)."""
    if kind in ("jieba", "auto"):
        try:
            import jieba  # noqa: PLC0415 - optional dependency
        except ImportError:
            if kind == "jieba":
                raise PretuneError("word_boundaries=jieba needs the jieba package: pip install "
                                   "jieba (or use word_boundaries=dictionary)") from None
        else:
            jieba.setLogLevel(60)  # no "Building prefix dict" chatter
            return lambda run: [w for w in jieba.cut(run, HMM=True) if w]
    from pretune.data.peoples_daily import vocabulary

    return forward_max_match(vocabulary())


def word_start_offsets(text: str, segment: Segmenter) -> set[int]:
    """Character offsets where a word starts."""
    starts: set[int] = set()
    for m in _RUNS.finditer(text):
        if _CJK_RUN.fullmatch(m.group()):
            pos = m.start()
            for word in segment(m.group()):
                starts.add(pos)
                pos += len(word)
        else:
            starts.add(m.start())
    return starts


def token_word_starts(offsets: list[tuple[int, int]], starts: set[int]) -> Iterator[int]:
    """1 for a token that begins a word (its first character is a word start), else 0."""
    for a, b in offsets:
        yield 1 if a in starts or a == b else 0
