"""Experiment trackers a run reports to (``train.report_to``): TensorBoard (default), MLflow and
Weights & Biases. Each is imported only when asked for (``pip install 'pretune[tracking]'``).

Every run records the same things in each: the loop's train/eval scalars (loss, lr,
tokens/s, grad-norm, peak memory, validation metrics) per step, its hyper-parameters, and the
final metrics. In TensorBoard the hyper-parameters and final metrics are an HParams summary in
the run's own event file, so the cells of a study (one run each) compare side by side in the
HParams view: ``tensorboard --logdir runs/<study>/cells``.

Where the records go: TensorBoard to ``<run>/tensorboard``; MLflow to ``MLFLOW_TRACKING_URI``
or else a local file store ``<root>/mlruns`` (experiment = the study/sweep name, or
"pretune"); W&B offline into ``<root>/wandb`` unless ``WANDB_MODE`` or an API key says
otherwise (``wandb sync`` uploads it later).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pretune.errors import PretuneError

TRACKERS = ("tensorboard", "mlflow", "wandb")
_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


@dataclass(frozen=True)
class RunInfo:
    """Who a run is, for the trackers: its name, the experiment it belongs to, where local
    tracker stores live, and its hyper-parameters (flat ``key: scalar``)."""

    name: str
    experiment: str = "pretune"
    root: Path = Path("runs")
    params: dict[str, Any] = field(default_factory=dict)


def flat_params(cfg: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A config's scalar leaves as ``a.b: value`` (lists as strings), for hparams."""
    data = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else dict(cfg)
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        elif not any(prefix.startswith(s) for s in skip):
            key = prefix[:-1]
            out[key] = node if isinstance(node, bool | int | float | str) or node is None \
                else str(node)

    walk(data, "")
    return {k: ("none" if v is None else v) for k, v in out.items()}


def run_trackers(cfg: Any, log_dir: Path, info: RunInfo | None = None) -> Trackers:
    """The trackers of a command's run: ``cfg.train.report_to``, named after ``cfg.name``
    with the whole config as hyper-parameters unless ``info`` says otherwise."""
    info = info or RunInfo(cfg.name, root=Path(cfg.output_dir), params=flat_params(cfg))
    return Trackers(cfg.train.report_to, log_dir, info)


class Trackers:
    """The trackers of one run; ``open(step)`` starts them (a resumed run at its step)."""

    def __init__(self, report_to: list[str] | tuple[str, ...], log_dir: Path | None,
                 info: RunInfo) -> None:
        self.report_to = [r for r in report_to if log_dir is not None or r != "tensorboard"]
        self.log_dir, self.info = log_dir, info
        for name in self.report_to:  # before any work: a missing tracker fails at once
            if name != "tensorboard" and importlib.util.find_spec(_MODULES[name]) is None:
                self._missing(name)
        self.tb = self.mlflow = self.mlflow_run = self.wandb = None
        self.opened = False

    def open(self, step: int = 0) -> Trackers:
        if self.opened:
            return self
        self.opened = True
        for name in self.report_to:
            try:
                getattr(self, f"_open_{name}")(step)
            except ImportError:
                self._missing(name)
        return self

    @staticmethod
    def _missing(name: str) -> None:
        extra = {"mlflow": "mlflow-skinny"}.get(name, name)
        raise PretuneError(f"train.report_to lists {name}, which is not installed: pip install "
                           f"'pretune[tracking]' (or {extra}), or remove it from "
                           "train.report_to")

    def _open_tensorboard(self, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(self.log_dir / "tensorboard"), purge_step=step + 1)

    def _open_mlflow(self, step: int) -> None:
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # a local file store beside the runs (MLflow 3 wants this opt-in)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (self.info.root / "mlruns").resolve().as_uri()
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(self.info.experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(self.info.experiment)
        tags = {"pretune.resumed_at_step": str(step)} if step else {}
        run = client.create_run(exp_id, run_name=self.info.name, tags=tags)
        self.mlflow, self.mlflow_run = client, run.info.run_id
        self._mlflow_params(self.info.params)

    def _mlflow_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # log_batch takes at most 100 params a call
            self.mlflow.log_batch(self.mlflow_run, params=items[i:i + 100])

    def _open_wandb(self, step: int) -> None:
        import wandb

        mode = os.environ.get("WANDB_MODE") or (
            "online" if os.environ.get("WANDB_API_KEY") else "offline")
        root = self.info.root.resolve()
        root.mkdir(parents=True, exist_ok=True)
        self.wandb = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or self.info.experiment,
            name=self.info.name, dir=str(root), mode=mode, config=self.info.params,
            reinit="create_new", settings=wandb.Settings(silent=True, console="off"))

    def log(self, record: dict[str, Any]) -> None:
        """One loop record (``kind`` train/eval, ``step``, scalars) into every tracker."""
        if not self.opened:
            self.open(record["step"] - 1)
        prefix = "train" if record.get("kind") == "train" else "eval"
        step = int(record["step"])
        scalars = {f"{prefix}/{k}": float(v) for k, v in record.items()
                   if k not in ("kind", "step") and isinstance(v, int | float)
                   and not isinstance(v, bool)}
        self.scalars(scalars, step)

    def scalars(self, scalars: dict[str, float], step: int) -> None:
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        if self.mlflow is not None and scalars:
            self._mlflow_metrics(scalars, step)
        if self.wandb is not None and scalars:
            self.wandb.log(scalars, step=step)

    def finish(self, metrics: dict[str, Any], extra_params: dict[str, Any] | None = None,
               step: int | None = None) -> None:
        """The run's final metrics (``test/accuracy``...) and its hyper-parameters as one
        HParams record; then close every tracker."""
        if not self.opened:
            self.open()
        final = {k: float(v) for k, v in metrics.items()
                 if isinstance(v, int | float) and not isinstance(v, bool)}
        params = {**self.info.params, **(extra_params or {})}
        if self.tb is not None:
            from torch.utils.tensorboard.summary import hparams

            hp = {k: v for k, v in params.items() if isinstance(v, bool | int | float | str)}
            for part in hparams(hp, final):  # in this run's own event file (HParams view)
                self.tb.file_writer.add_summary(part)
            for k, v in final.items():
                self.tb.add_scalar(k, v, step or 0)
        if self.mlflow is not None:
            if extra_params:
                self._mlflow_params(extra_params)
            if final:
                self._mlflow_metrics(final, step or 0)
        if self.wandb is not None:
            for k, v in final.items():
                self.wandb.summary[k] = v
        self.close()

    def _mlflow_metrics(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)  # MLflow keys allow no "@" (metrics like recall@1)
        self.mlflow.log_batch(self.mlflow_run, metrics=[
            Metric(k.replace("@", "_at_"), v, ts, step) for k, v in scalars.items()])

    def close(self, failed: bool = False) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.mlflow is not None:
            with contextlib.suppress(Exception):
                self.mlflow.set_terminated(self.mlflow_run, "FAILED" if failed else "FINISHED")
            self.mlflow = None
        if self.wandb is not None:
            self.wandb.finish(exit_code=1 if failed else 0)
            self.wandb = None


__all__ = ["TRACKERS", "RunInfo", "Trackers", "flat_params", "run_trackers"]
