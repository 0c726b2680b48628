"""``pretune sweep``'s config: the search space over any FinetuneConfig key, the sampler, k-fold,
and every check of the space that pydantic types cannot say (unknown keys, grid-only specs,
each end of a range a valid setting). Kept free of torch/optuna imports."""

from __future__ import annotations

import difflib
import json
import math
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pretune.config.base import RunName, Section, load_yaml
from pretune.config.finetune import FinetuneConfig
from pretune.errors import PretuneError


class ParamSpec(Section):
    """One search dimension: ``choices: [...]`` or a range ``low``..``high`` (``log``, ``int``,
    ``step``). A plain YAML list is shorthand for ``choices``."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True,
                              validate_by_alias=True)

    choices: list[str | int | float | bool | None] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = Field(False, alias="int")  # `int: true` in YAML
    step: float | None = Field(None, gt=0)  # checked with its key by SweepConfig


class SweepConfig(Section):
    """``pretune sweep``: Optuna / grid search (optionally k-fold CV) over a FinetuneConfig."""

    name: RunName = "sweep"
    output_dir: str = "runs"  # the sweep lives in <output_dir>/<name>/ (optuna.db, trials/...)
    base: FinetuneConfig = FinetuneConfig()  # or a path to a finetune YAML
    space: dict[str, ParamSpec] = Field(default_factory=dict)  # dotted FinetuneConfig key -> spec
    sampler: Literal["tpe", "grid", "random"] = "tpe"
    n_trials: int | None = Field(20, ge=1)  # None: the whole grid, or until timeout_minutes
    timeout_minutes: float | None = Field(None, gt=0)
    pruner: Literal["median", "none"] = "median"
    metric: str = "auto"  # VALIDATION metric to optimise; auto: macro_f1 / r2; direction from it
    kfold: int | None = Field(None, ge=2)  # k-fold CV on train+val; the search optimises the mean
    seed: int = 0  # sampler seed (training seeds come from base.train.seed)
    n_jobs: int = Field(1, ge=1)  # parallel trials (threads)
    save_models: bool = False  # keep each trial's model dir (best.yaml retrains the winner)

    @field_validator("base", mode="before")
    @classmethod
    def _base_from_file(cls, v: Any) -> Any:
        return load_yaml(v) if isinstance(v, str) else v

    @field_validator("space", mode="before")
    @classmethod
    def _space_shorthand(cls, v: Any) -> Any:
        # A list is `choices`; nested mappings flatten to dotted keys, so the CLI override
        # `space.optim.lr=[1e-4,1e-3]` means the key "optim.lr".
        if not isinstance(v, dict):
            return v
        spec_keys = set(ParamSpec.model_fields) | {"int"}
        out: dict[str, Any] = {}
        for k, s in v.items():
            if isinstance(s, list):
                out[k] = {"choices": s}
            elif isinstance(s, dict) and s and not set(s) <= spec_keys:
                out.update({f"{k}.{sub}": spec for sub, spec in cls._space_shorthand(s).items()})
            else:
                out[k] = s
        return out

    def model_post_init(self, _context: Any) -> None:
        check_sweep(self)  # unknown keys, empty space, grid-only specs: PretuneError


# Set by the sweep itself for every trial: searching them would break the output layout.
RESERVED = {"name", "output_dir"}
MAX_GRID = 100_000  # product of the grid's dimensions


def _section(annotation: Any) -> type[BaseModel] | None:
    """The pydantic section class behind an annotation (``X`` or ``X | None``), else None."""
    for cand in (annotation, *typing.get_args(annotation)):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def _is_dict(annotation: Any) -> bool:
    return any(typing.get_origin(c) is dict or c is dict
               for c in (annotation, *typing.get_args(annotation)))


def check_key(key: str, base: FinetuneConfig | None = None) -> None:
    """PretuneError unless ``key`` names a setting (not a section) of ``base`` (a
    FinetuneConfig of any task kind; the default one when not given).

    A key may go one level into a dict setting (``model.overrides.hidden_size``)."""
    parts = key.split(".")
    if not all(parts):
        raise PretuneError(f"sweep space key '{key}' has an empty part; write e.g. optim.lr")
    if parts[0] in RESERVED and len(parts) == 1:
        raise PretuneError(f"sweep space key '{key}' is set by the sweep itself; remove it")
    node: BaseModel = base if base is not None else FinetuneConfig()
    for i, part in enumerate(parts):
        cls = type(node)  # the concrete section: `task` is the task kind's own config
        fields = cls.model_fields
        if part not in fields:
            where = ".".join(parts[:i]) or "FinetuneConfig"
            close = difflib.get_close_matches(part, list(fields), n=1)
            hint = f" (did you mean '{'.'.join([*parts[:i], close[0]])}'?)" if close else ""
            raise PretuneError(
                f"sweep space key '{key}' is not a FinetuneConfig setting: {where} has no "
                f"'{part}'{hint}")
        ann = fields[part].annotation
        last = i == len(parts) - 1
        if _is_dict(ann):
            if len(parts) - i > 2:
                raise PretuneError(f"sweep space key '{key}': {'.'.join(parts[:i + 1])} is a "
                                   "mapping; name one entry of it (e.g. model.overrides.hidden_size)")
            if last:
                raise PretuneError(f"sweep space key '{key}' is a mapping; search one entry of it "
                                   f"({key}.<name>)")
            return
        sub = _section(ann)
        value = getattr(node, part)
        if isinstance(value, BaseModel):
            sub = type(value)
        if last:
            if sub is not None:
                raise PretuneError(f"sweep space key '{key}' is a section; name one of its "
                                   f"settings ({key}.{next(iter(sub.model_fields))}, ...)")
            return
        if sub is None:
            raise PretuneError(f"sweep space key '{key}': {'.'.join(parts[:i + 1])} is a "
                               "setting, not a section")
        if not isinstance(value, BaseModel):  # an optional section left unset
            return
        node = value


def _spec_error(key: str, msg: str) -> PretuneError:
    return PretuneError(f"sweep space '{key}': {msg}")


def check_spec(key: str, spec: ParamSpec, sampler: str) -> None:
    """One spec is either ``choices`` or a ``low``..``high`` range; grid needs finite values."""
    ranged = spec.low is not None or spec.high is not None
    if spec.choices is not None:
        if ranged or spec.log or spec.integer or spec.step is not None:
            raise _spec_error(key, "give either choices or low/high (log/int/step), not both")
        if not spec.choices:
            raise _spec_error(key, "choices is empty; list at least one value")
        return
    if spec.low is None or spec.high is None:
        raise _spec_error(key, "give choices: [...] or both low and high")
    if spec.low > spec.high:
        raise _spec_error(key, f"low={spec.low:g} is larger than high={spec.high:g}")
    if spec.log and spec.low <= 0:
        raise _spec_error(key, "log: true needs low > 0")
    if spec.log and spec.step is not None:
        raise _spec_error(key, "log and step cannot be combined (Optuna); drop one")
    if spec.integer:
        for name, v in (("low", spec.low), ("high", spec.high), ("step", spec.step)):
            if v is not None and not float(v).is_integer():
                raise _spec_error(key, f"int: true needs a whole-number {name} (got {v:g})")
    if sampler == "grid":
        if spec.log:
            raise _spec_error(key, "the grid sampler needs choices or a stepped range; drop log")
        if not spec.integer and spec.step is None:
            raise _spec_error(key, "the grid sampler needs choices, int: true, or a step for "
                                   "a float range")


def spec_values(spec: ParamSpec) -> list[Any]:
    """Every value of a finite spec (choices, int range, stepped float range), in order."""
    if spec.choices is not None:
        return list(spec.choices)
    assert spec.low is not None and spec.high is not None
    if spec.integer:
        return list(range(int(spec.low), int(spec.high) + 1, int(spec.step or 1)))
    assert spec.step is not None
    n = int(math.floor((spec.high - spec.low) / spec.step + 1e-9)) + 1
    # round(): 0.1 + 2 * 0.1 prints as 0.30000000000000004 in best.yaml otherwise
    return [round(spec.low + i * spec.step, 12) for i in range(n)]


def grid_space(space: dict[str, ParamSpec]) -> dict[str, list[Any]]:
    return {k: spec_values(s) for k, s in space.items()}


def _endpoints(spec: ParamSpec) -> list[Any]:
    if spec.choices is not None:
        return list(spec.choices)
    assert spec.low is not None and spec.high is not None
    if spec.integer:
        return [int(spec.low), int(spec.high)]
    return [spec.low, spec.high]


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def apply_params(base: FinetuneConfig, params: dict[str, Any]) -> FinetuneConfig:
    """``base`` with each dotted key set; a value the config rejects is a PretuneError."""
    data = json.loads(json.dumps(base.model_dump(mode="json")))
    for key, value in params.items():
        set_dotted(data, key, value)
    try:
        return FinetuneConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        raise PretuneError(f"sweep space: {shown} is not a valid FinetuneConfig ('{loc}': "
                           f"{first['msg']}); narrow the range or choices") from None


def check_sweep(cfg: SweepConfig) -> None:
    """Everything about a sweep config that pydantic types cannot say. Raises PretuneError."""
    if not cfg.space:
        raise PretuneError(
            "sweep config: 'space' is empty; add at least one dotted FinetuneConfig key, e.g. "
            "space: {optim.lr: {low: 1.0e-5, high: 1.0e-3, log: true}}")
    for key, spec in cfg.space.items():
        check_key(key, cfg.base)
        check_spec(key, spec, cfg.sampler)
        for value in _endpoints(spec):  # each end of the range must be a valid setting
            apply_params(cfg.base, {key: value})
    if cfg.sampler == "grid":
        size = math.prod(len(spec_values(s)) for s in cfg.space.values())
        if size > MAX_GRID:
            raise PretuneError(f"sweep grid has {size:,} points (> {MAX_GRID:,}); use larger "
                               "steps, fewer choices or sampler: tpe")
    elif cfg.n_trials is None and cfg.timeout_minutes is None:
        raise PretuneError(f"sweep config: sampler {cfg.sampler} needs n_trials or "
                           "timeout_minutes (only the grid sampler knows when it is done)")
