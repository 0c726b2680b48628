"""The config machinery every section shares: the frozen ``Section`` base, YAML loading,
``a.b=c`` overrides, validation messages and content hashes.

Configs are the single source of truth. They are validated on load, frozen, and never mutated
at run time (use ``model_copy(update=...)`` to derive a new one). Unknown keys and wrong types
fail with one line naming the key and the file.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

from pretune.errors import PretuneError

# The task kinds, in the order the docs list them (each is one module under pretune.tasks); a
# task config is tagged with its kind, and a tagged union puts the tag in error locations.
TASK_KINDS = ("text-classification", "image-classification", "token-classification", "generation")


def _run_name(value: str) -> str:
    if not value or value in (".", "..") or any(c in value for c in "/\\\0") \
            or value != value.strip():
        raise ValueError(f"'{value}' is not a plain directory name (empty, '/', '.' or '..'); "
                         "runs are written to <output_dir>/<name>, so name one folder")
    return value


# A run's directory name under output_dir: never empty, never a path (--overwrite deletes it).
RunName = Annotated[str, AfterValidator(_run_name)]


class Section(BaseModel):
    """Base for all config sections: unknown keys are errors, instances are immutable.

    A section field whose default is a customised instance (``train: LoopConfig =
    LoopConfig(max_steps=1000)``) keeps those values when the user sets only some keys of it
    (``train.batch_size=8`` still trains 1000 steps). ``_before`` is a subclass's chance to
    reshape its input first (fine-tuning fills in the defaults of the task kind there).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    @classmethod
    def _before(cls, data: dict[str, Any]) -> dict[str, Any]:
        return data

    @model_validator(mode="before")
    @classmethod
    def _keep_section_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        merged = cls._before(dict(data))
        for name, field in cls.model_fields.items():
            given, default = merged.get(name), field.default
            if isinstance(given, dict) and isinstance(default, BaseModel):
                merged[name] = deep_merge(default.model_dump(exclude_unset=True), given)
        return merged


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def paths_shorthand(v: Any) -> Any:
    """``tasks: builtin:x`` or ``[builtin:x, {path: ...}]``: strings are ``{path: ...}``."""
    if isinstance(v, str):
        v = [v]
    if isinstance(v, list):
        return [{"path": t} if isinstance(t, str) else t for t in v]
    return v


# --------------------------------------------------------------------------- loading


C = TypeVar("C", bound=BaseModel)


_PLACEHOLDER = re.compile(r"\{(input|text)\}")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=c`` -> (["a", "b"], value); the value is parsed as a YAML scalar/list/dict."""
    if "=" not in item:
        raise PretuneError(f"override '{item}' must look like key.sub=value")
    key, raw = item.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise PretuneError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, dict) and _PLACEHOLDER.search(raw) and not raw.lstrip().startswith("{\""):
        value = raw  # a prompt template ("Q: {input}\nA:"), not a YAML mapping
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b=c`` set (creating nested dicts as needed).

    A numeric path part indexes into a list (``strategies.0.name=lora``)."""
    out = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        path, value = parse_override(item)
        node: Any = out
        for part in path[:-1]:
            if isinstance(node, list):
                node = node[_list_index(node, part, item)]
                continue
            if not isinstance(node.get(part), dict | list):
                node[part] = {}
            node = node[part]
        last = path[-1]
        if isinstance(node, list):
            node[_list_index(node, last, item)] = value
        else:
            node[last] = value
    return out


def _list_index(node: list, part: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise PretuneError(f"override '{item}': '{part}' is not an index of a {len(node)}-item list")
    return int(part)


def format_validation_error(err: ValidationError, where: str,
                            cls: type[BaseModel] | None = None) -> str:
    """One line: the file, the key and what is wrong; an unknown key names the nearest valid
    ones when ``cls`` (the config class) is given."""
    first = err.errors()[0]
    # Tagged unions put the tag in the location (task.image-classification.path): drop it.
    key = ".".join(str(p) for p in first["loc"] if p not in TASK_KINDS) or "<root>"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        from pretune.config.discover import suggest

        near = suggest(cls, key) if cls is not None else []
        hint = f"did you mean {' or '.join(near)}?" if near else "check the spelling"
        msg = f"unknown key ({hint}; the command's --print-config lists every key)"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"config error in {where}: '{key}': {msg}{more}"


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise PretuneError(f"config file {p} not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise PretuneError(f"config file {p}{line}: invalid YAML ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise PretuneError(f"config file {p} must hold a mapping of keys, not {type(data).__name__}")
    return data


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] = (),
                section: str | None = None, defaults: dict[str, Any] | None = None) -> C:
    """Load ``cls`` from an optional YAML file plus ``a.b=c`` overrides; validate once.

    ``section``: when the file holds several configs under top-level keys (e.g. ``pretrain:``
    and ``finetune:``), use that key's mapping. ``defaults`` are merged under what the file and
    the overrides say (``finetune-images`` defaults the task kind to images that way)."""
    data = load_yaml(path) if path else {}
    if section and isinstance(data.get(section), dict):
        data = data[section]
    data = apply_overrides(data, list(overrides))
    if defaults:
        data = deep_merge(defaults, data)
    where = str(path) if path else "command-line overrides"
    if path and overrides:
        where = f"{path} (with overrides)"
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise PretuneError(format_validation_error(e, where, cls)) from None


def config_hash(cfg: BaseModel, exclude: set[str] | dict[str, Any] | None = None) -> str:
    """Stable short hash of a config's content (cache keys for prepared artifacts)."""
    payload = cfg.model_dump(mode="json", exclude=exclude)
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


# Settings that change how a run is shown or stored, never its numbers.
RESULT_NEUTRAL: dict[str, Any] = {
    "name": True, "output_dir": True,
    "train": {"progress", "report_to", "profile_steps", "log_every", "num_workers", "keep_last",
              "save_every"},
}


def config_identity(cfg: BaseModel) -> dict[str, Any]:
    """A config's dump without its result-neutral settings (what a cache key hashes)."""
    exclude = {k: v for k, v in RESULT_NEUTRAL.items() if k in type(cfg).model_fields}
    return cfg.model_dump(mode="json", exclude=exclude)


def dump_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
