"""The loop's record keeping: ``metrics.jsonl`` (one JSON line per log/eval step), TensorBoard
events and a rich progress bar. Only rank 0 writes; a resumed run truncates what came after
its checkpoint so the files read as one uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pretune.config import LoopConfig


class RunLog:
    """metrics.jsonl + TensorBoard + a rich progress bar; only rank 0 writes."""

    def __init__(self, out_dir: Path | None, loop: LoopConfig, enabled: bool, step: int,
                 total: int | None) -> None:
        self.out_dir = out_dir if enabled else None
        self.tb = None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._truncate_after(step)  # a resumed run rewrites what came after its checkpoint
            if loop.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=step + 1)
        self.bar = None
        if enabled and loop.progress:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("step {task.completed}"), BarColumn(), TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(), transient=False,
            )
            self.task = self.bar.add_task("train", total=total, completed=step, info="")
            self.bar.start()

    def _truncate_after(self, step: int) -> None:
        path = self.out_dir / "metrics.jsonl"
        if path.is_file():
            keep = [ln for ln in path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= step]
            path.write_text("".join(k + "\n" for k in keep))

    def write(self, record: dict[str, Any]) -> None:
        if self.out_dir is not None:
            with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            prefix = "train" if record["kind"] == "train" else "eval"
            for k, v in record.items():
                if k not in ("kind", "step") and isinstance(v, int | float):
                    self.tb.add_scalar(f"{prefix}/{k}", v, record["step"])

    def advance(self, step: int, info: str | None = None) -> None:
        if self.bar is not None:
            kw = {"info": info} if info is not None else {}
            self.bar.update(self.task, completed=step, **kw)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.tb is not None:
            self.tb.close()


