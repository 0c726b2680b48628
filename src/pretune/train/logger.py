"""The loop's record keeping: ``metrics.jsonl`` (one JSON line per log/eval step), the
experiment trackers (``train.report_to``: TensorBoard, MLflow, W&B) and the console.

The console shows a live bar on a terminal, and a plain line every ``log_every`` steps and
every evaluation when stdout is not one (batch jobs, ``nohup``, SLURM): step, loss, lr,
tokens/s, grad-norm, elapsed, ETA. Only rank 0 writes; a resumed run truncates what came after
its checkpoint so the files read as one uninterrupted run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from pretune.config import LoopConfig
from pretune.train.trackers import RunInfo, Trackers


def duration(seconds: float) -> str:
    """``4s``, ``3m05s``, ``2h07m``."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class RunLog:
    """metrics.jsonl + trackers + console; only rank 0 writes. ``trackers`` given by the
    caller stay open after ``close`` (the caller adds the final metrics and closes them)."""

    def __init__(self, out_dir: Path | None, loop: LoopConfig, enabled: bool, step: int,
                 total: int | None, trackers: Trackers | None = None) -> None:
        self.out_dir = out_dir if enabled else None
        self.total, self.first_step, self.t_start = total, step, time.perf_counter()
        self.own_trackers = trackers is None
        if trackers is None and self.out_dir is not None:
            trackers = Trackers(loop.report_to, self.out_dir, RunInfo(self.out_dir.name))
        self.trackers = trackers if enabled else None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._truncate_after(step)  # a resumed run rewrites what came after its checkpoint
        if self.trackers is not None:
            self.trackers.open(step)
        self.bar = None
        self.lines = enabled and loop.progress and not sys.stdout.isatty()
        if enabled and loop.progress and not self.lines:
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
        if self.trackers is not None:
            self.trackers.log(record)
        if self.lines or (self.bar is not None and record["kind"] != "train"):
            self.say(self.line(record))

    def line(self, rec: dict[str, Any]) -> str:
        """One plain line for a train or eval record."""
        step = rec["step"]
        of = f"/{self.total}" if self.total else ""
        if rec["kind"] != "train":
            shown = " | ".join(f"{k} {_num(v)}" for k, v in rec.items()
                               if k not in ("kind", "step", "tokens")
                               and isinstance(v, int | float))
            return f"eval step {step}{of} | {shown}"
        parts = [f"step {step}{of}", f"loss {rec['loss']:.4f}", f"lr {rec['lr']:.3g}",
                 f"{rec['tokens_per_s']:,.0f} tok/s"]
        if rec.get("grad_norm") is not None:
            parts.append(f"grad {rec['grad_norm']:.3g}")
        if rec.get("peak_mem_mb") is not None:
            parts.append(f"mem {rec['peak_mem_mb']:,.0f} MB")
        parts.append(f"elapsed {duration(rec['elapsed_s'])}")
        done = step - self.first_step
        if self.total and done > 0:
            left = (time.perf_counter() - self.t_start) / done * (self.total - step)
            parts.append(f"ETA {duration(left)}")
        return " | ".join(parts)

    def say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text)
        else:
            print(text, flush=True)

    def advance(self, step: int, info: str | None = None) -> None:
        if self.bar is not None:
            kw = {"info": info} if info is not None else {}
            self.bar.update(self.task, completed=step, **kw)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.trackers is not None and self.own_trackers:
            self.trackers.close()


__all__ = ["RunLog", "duration"]
