"""Task kinds: one module each, one registry. ``get_kind(name)`` is how the fine-tuning path,
``evaluate`` / ``predict``, sweeps and studies reach a kind; ``kind_of_model_dir`` tells which
kind wrote a saved model. The contract a kind fulfils is ``pretune.tasks.base.TaskKind``.

To add a kind: write ``pretune/tasks/<kind>.py`` with a ``TaskKind`` subclass, give its task
config a ``kind`` tag in ``pretune.config.tasks`` (and its strategies in ``KIND_STRATEGIES``),
and register it below.
"""

from __future__ import annotations

import json
from pathlib import Path

from pretune.errors import PretuneError
from pretune.tasks.base import TASK_FILE, TaskKind
from pretune.tasks.generation import Generation
from pretune.tasks.image_classification import ImageClassification
from pretune.tasks.text_classification import TextClassification
from pretune.tasks.token_classification import TokenClassification

KINDS: dict[str, TaskKind] = {
    k.name: k for k in (TextClassification(), ImageClassification(), TokenClassification(),
                        Generation())}


def get_kind(name: str) -> TaskKind:
    if name not in KINDS:
        raise PretuneError(f"task.kind={name!r} is not available; choose one of: "
                           f"{', '.join(KINDS)}")
    return KINDS[name]


# transformers class-name suffix of a saved model -> the kind that reads it
_BY_ARCHITECTURE = {kind.auto_class.removeprefix("AutoModel"): kind for kind in KINDS.values()}
_BY_ARCHITECTURE["ForConditionalGeneration"] = KINDS["generation"]  # T5, BART
_BY_ARCHITECTURE["MTModel"] = KINDS["generation"]  # Marian
_BY_ARCHITECTURE["LMHeadModel"] = KINDS["generation"]  # GPT2LMHeadModel


def kind_of_model_dir(path: Path) -> TaskKind:
    """The kind of a saved model directory: its ``pretune_task.json``, else its architecture."""
    if not (path / "config.json").is_file():
        raise PretuneError(f"{path} is not a model directory (no config.json); pass "
                           "runs/<name>/model of a finetune run")
    info_file = path / TASK_FILE
    if info_file.is_file():
        name = json.loads(info_file.read_text(encoding="utf-8")).get("kind")
        if name in KINDS:
            return KINDS[name]
    archs = json.loads((path / "config.json").read_text(encoding="utf-8")).get(
        "architectures") or []
    for arch in archs:
        for suffix, kind in _BY_ARCHITECTURE.items():
            if arch.endswith(suffix):
                return kind
    # sequence classifiers saved before pretune wrote `kind`, and other tools' classifiers
    return KINDS["text-classification"]


__all__ = ["KINDS", "TaskKind", "get_kind", "kind_of_model_dir"]
