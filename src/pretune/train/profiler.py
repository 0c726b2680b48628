"""``train.profile_steps: [start, end]``: a ``torch.profiler`` trace of those optimizer steps.

CPU activities always, CUDA ones on a GPU. The trace is a Chrome/Perfetto JSON file
(``<run>/tensorboard/profile/steps-<start>-<end>.pt.trace.json``: open it in
https://ui.perfetto.dev or chrome://tracing, or TensorBoard's profiler plugin), and one line
names the top ops by self time.
"""

from __future__ import annotations

from pathlib import Path

import torch


class StepProfiler:
    """Starts before the first micro-batch of step ``start``, stops after step ``end``."""

    def __init__(self, steps: tuple[int, int] | None, out_dir: Path | None) -> None:
        self.start, self.end = steps or (0, -1)  # None: never starts
        self.dir = (out_dir / "tensorboard" / "profile") if out_dir is not None else None
        self.prof: torch.profiler.profile | None = None
        self.done = False
        self.trace: Path | None = None
        self.summary = ""

    def before_step(self, step: int) -> None:
        """Called before each micro-batch with the optimizer step it belongs to."""
        if self.prof is None and not self.done and self.start <= step <= self.end:
            acts = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                acts.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=acts, record_shapes=False)
            self.prof.__enter__()
            self.first = step

    def after_step(self, step: int) -> str | None:
        """Called after each optimizer step; returns the summary line when it stopped."""
        if self.prof is None or step < self.end:
            return None
        self.prof.__exit__(None, None, None)
        prof, self.prof, self.done = self.prof, None, True
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.trace = self.dir / f"steps-{self.first}-{step}.pt.trace.json"
            prof.export_chrome_trace(str(self.trace))
        self.summary = f"profile of steps {self.first}-{step}: {top_ops(prof)}" + (
            f"; trace: {self.trace}" if self.trace else "")
        return self.summary

    def close(self) -> None:
        if self.prof is not None:  # training ended inside the window
            self.after_step(self.end)


def top_ops(prof: torch.profiler.profile, n: int = 4) -> str:
    """``aten::addmm 31% · aten::mm 12% ...`` by self time (device time on a GPU)."""
    # ops and kernels; not the user scopes around them (ProfilerStep#, Optimizer.step#...)
    events = [e for e in prof.key_averages() if "#" not in e.key]
    cuda = any(getattr(e, "self_device_time_total", 0) for e in events)

    def self_time(e: object) -> float:
        return float(getattr(e, "self_device_time_total", 0) if cuda else
                     getattr(e, "self_cpu_time_total", 0))

    total = sum(self_time(e) for e in events) or 1.0
    top = sorted(events, key=self_time, reverse=True)[:n]
    where = "device" if cuda else "CPU"
    return f"top ops by self {where} time: " + ", ".join(
        f"{e.key} {100 * self_time(e) / total:.0f}%" for e in top)


__all__ = ["StepProfiler", "top_ops"]
