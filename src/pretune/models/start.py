"""A starting model, resolved once: ``resolve_start(model.name) -> Start``.

A start is a registry architecture (random init: ``bert-mini``, ``gpt-tiny``, ``resnet-tiny``…)
or a directory holding a Hugging Face checkpoint (``hf:<dir>``, ``builtin:minilm``, a pretune
run's ``final``/``model`` dir, a Hub id's snapshot in the HF cache: ``org/name[@rev]``). Everything the rest of pretune asks of it — text or image, which
LM objective, whether it carries a trained MLM head or pooler, where its tokenizer is, an
identity for caches — is read here from ``config.json`` and the weight names, without loading
any weights, and passed down as this one object.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pretune.data.builtin import builtin_path
from pretune.data.hub import cache_dir, is_hub_id, snapshot, split_id
from pretune.errors import PretuneError
from pretune.models.archs import ARCHS, FAMILY_OBJECTIVE, IMAGE_ARCHS, Objective, objective_for
from pretune.models.gguf import converted_dir, is_gguf_builtin

Modality = Literal["text", "image"]
_MLM_HEAD_KEYS = ("cls.predictions", "lm_head", "vocab_projector", "generator_lm_head",
                  "predictions.decoder")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
IMAGE_HINT = ("fine-tune it on an image task (task.kind=image-classification, `pretune "
              "finetune-images`, or a study with `modality: image`)")
TEXT_HINT = "fine-tune it on a text task, or choose an image model (resnet-*, vit-*, an image dir)"


@dataclass(frozen=True)
class Start:
    name: str  # as the user wrote it
    modality: Modality
    arch: str | None = None  # registry architecture (random init)
    path: Path | None = None  # checkpoint directory
    model_type: str | None = None  # HF model_type of a checkpoint
    architectures: tuple[str, ...] = ()
    objective: Objective | None = None  # the LM family of a text model
    has_mlm_head: bool = False  # trained MLM-head weights in the checkpoint
    has_pooler: bool = False  # trained pooler weights (BERT's [CLS] dense + tanh)
    tokenizer_dir: Path | None = None  # the checkpoint's own tokenizer

    @property
    def random_init(self) -> bool:
        return self.arch is not None

    @property
    def family(self) -> str | None:
        """"bert" / "gpt" for text registry names."""
        return ARCHS[self.arch].family if self.arch in ARCHS else None

    def identity(self) -> str:
        """Stable id for caches: the arch name, or the checkpoint's path and write time."""
        if self.path is None:
            return f"arch:{self.arch}"
        stamp = (self.path / "config.json").stat().st_mtime
        return f"dir:{self.path.resolve()}:{stamp}"

    def require(self, modality: Modality) -> Start:
        """This start, or a one-line error when it is a model of the other modality."""
        if self.modality != modality:
            what = "an image model" if self.modality == "image" else "a text model"
            hint = IMAGE_HINT if self.modality == "image" else TEXT_HINT
            raise PretuneError(f"model.name={self.name} is {what}; {hint}")
        return self


def _names() -> str:
    return ", ".join([*ARCHS, *IMAGE_ARCHS, "hf:<dir>", "builtin:minilm",
                      "builtin:smollm2", "<checkpoint dir>", "<org/name Hub id>"])


def weight_keys(path: Path, what: str = "model.name") -> list[str]:
    """The tensor names of a model directory's safetensors weights. A directory without
    ``model.safetensors`` (or a sharded index) or with an unreadable file fails in one line:
    pickle weights (``pytorch_model.bin``) are never loaded."""
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    has_model = (path / "model.safetensors").is_file() or any(
        path.glob("model*.safetensors.index.json")) or any(
        f.name.startswith("model-") for f in files)
    if not has_model:
        other = sorted(f.name for f in path.iterdir() if f.suffix in (".bin", ".pt", ".pth",
                                                                      ".safetensors"))
        found = f" (found {', '.join(other[:4])})" if other else ""
        raise PretuneError(
            f"{what}: {path} has no model.safetensors{found}; pickle weights are not loaded for "
            "safety: re-save it with save_pretrained(..., safe_serialization=True)")
    keys: list[str] = []
    for f in files:
        try:
            with safe_open(str(f), "pt") as st:
                keys.extend(st.keys())
        except Exception as e:  # noqa: BLE001 - any unreadable file is one user-facing error
            raise PretuneError(
                f"{what}: {f} is not a readable safetensors file ({str(e).splitlines()[0][:80]});"
                " re-save the model with save_pretrained, or remove the file") from None
    return keys


def _from_dir(name: str, path: Path) -> Start:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PretuneError(f"model.name={name}: {path}/config.json cannot be read "
                           f"({type(e).__name__}); point to a save_pretrained directory") from None
    archs = tuple(config.get("architectures") or ())
    if "num_channels" in config:  # ResNet, ViT, ...: pixels, not tokens
        return Start(name, "image", path=path, model_type=config.get("model_type"),
                     architectures=archs)
    try:
        objective = objective_for(config)
    except PretuneError:
        objective = None
    keys = weight_keys(path, f"model.name={name}")
    # ELECTRA's ...ForPreTraining is the discriminator: a replaced-token head, no MLM head
    mlm = any(a.endswith("ForMaskedLM") or (a.endswith("ForPreTraining")
                                             and not a.startswith("Electra")) for a in archs) \
        if archs else any(k in key for key in keys for k in _MLM_HEAD_KEYS)
    tok = path if any((path / f).is_file() for f in _TOKENIZER_FILES) else None
    return Start(name, "text", path=path, model_type=config.get("model_type"),
                 architectures=archs, objective=objective, has_mlm_head=mlm,
                 has_pooler=any("pooler." in k for k in keys), tokenizer_dir=tok)


def resolve_start(name: str) -> Start:
    """The one place a ``model.name`` is turned into a model source; errors name the fix."""
    if name in ARCHS:
        return Start(name, "text", arch=name, objective=FAMILY_OBJECTIVE[ARCHS[name].family])
    if name in IMAGE_ARCHS:
        return Start(name, "image", arch=name)
    if name.startswith("builtin:"):
        path = converted_dir(name) if is_gguf_builtin(name) else builtin_path(name)
        return _from_dir(name, path)
    path = Path(name.removeprefix("hf:")).expanduser()
    if not path.exists() and is_hub_id(name):
        if "/" not in name.removeprefix("hf:") and not name.startswith("hf:") \
                and not (cache_dir() / f"models--{split_id(name)[0]}").is_dir():
            # a bare word: a registry typo is likelier than a legacy Hub id that is not cached
            with contextlib.suppress(PretuneError):
                return _from_dir(name, snapshot(name))
            raise PretuneError(f"unknown model.name '{name}': not a registry name (choose one "
                               f"of: {_names()}) nor a Hub id in the Hugging Face cache "
                               f"({cache_dir()}); Hub ids look like org/name[@revision]")
        path = snapshot(name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise PretuneError(
                f"model.name={name}: {path} has no config.json, so it is not a Hugging Face "
                "checkpoint; point to a directory written by save_pretrained (e.g. "
                "runs/<name>/model)")
        return _from_dir(name, path)
    if name.startswith("hf:") or "/" in name:
        raise PretuneError(f"model.name={name}: directory {path} not found")
    raise PretuneError(f"unknown model.name '{name}'; choose one of: {_names()}")
