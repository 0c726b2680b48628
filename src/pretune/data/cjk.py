"""Chinese / Japanese text has no spaces between words: where pretune counts, shingles or
matches words, every CJK character is a unit of its own. The one character class for that."""

from __future__ import annotations

import re

# Ideographs (CJK unified + extension A + compatibility) and Japanese kana.
CJK_CHARS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
HAS_CJK = re.compile(f"[{CJK_CHARS}]")
CJK_CHAR = re.compile(f"^[{CJK_CHARS}]$")


def has_cjk(text: str) -> bool:
    return HAS_CJK.search(text) is not None
