"""The types of the one loop: what ``fit`` takes (a batch stream, an ``Evaluation``, ``Hooks``),
what it keeps (``TrainState``, saved in every checkpoint) and what it returns (``FitResult``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol

from torch import Tensor, nn

LossFn = Callable[[nn.Module, dict[str, Tensor]], Tensor]


class BatchStream(Protocol):
    def __iter__(self) -> Iterator[dict[str, Tensor]]: ...
    def __len__(self) -> int: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def set_epoch(self, epoch: int) -> None: ...


@dataclass
class Evaluation:
    """``fn(model) -> metrics`` on held-out data; ``metric`` (default ``val_loss`` or the
    first key) drives early stopping, the best checkpoint and ``restore_best``."""

    fn: Callable[[nn.Module], dict[str, float]]
    metric: str | None = None
    mode: Literal["min", "max"] = "min"
    restore_best: bool = False

    def better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b


@dataclass
class Hooks:
    """Everything a caller may run inside the loop."""

    on_epoch_start: Callable[[int, nn.Module], None] | None = None  # (epoch, model)
    # (i-th evaluation, metrics); may raise to end the run (a sweep prunes a trial so)
    on_evaluate: Callable[[int, dict[str, float]], None] | None = None
    extra_loss: Callable[[nn.Module], Tensor] | None = None  # added once per optimizer step


@dataclass
class TrainState:
    """The loop's counters: saved in every checkpoint, restored on resume."""

    step: int = 0  # optimizer steps
    micro: int = 0  # micro-batches
    tokens: int = 0
    elapsed: float = 0.0  # training seconds before this process (resumes add up)
    epoch: int = 0
    total_steps: int | None = None  # schedule length once known
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0  # evaluations since the best one
    last_eval_step: int = -1
    last_metric: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    ckpt_metrics: dict[int, float] = field(default_factory=dict)  # step -> selection metric

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        names = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in data.items() if k in names})
        state.ckpt_metrics = {int(k): v for k, v in state.ckpt_metrics.items()}
        return state


@dataclass
class FitResult:
    steps: int
    tokens: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    best_step: int | None = None
    stopped_reason: str = ""
    last_checkpoint: Path | None = None
    already_finished: bool = False  # resumed from a checkpoint whose budget was spent
