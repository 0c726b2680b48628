"""The report's plots, each returned as PNG bytes (matplotlib, Agg canvas, dpi 100).

We build ``Figure`` objects directly instead of going through ``pyplot``: no global figure
state, no GUI backend selection, nothing left open after a call.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pretune.study.stats import metric_name, metric_scale

DPI = 100
_STYLES = ["-", "--", ":", "-."]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No "Software" text chunk: the report must not carry any URL, even inside a PNG.
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _fig(w: float = 6.0, h: float = 3.6) -> tuple[Figure, object]:
    fig = Figure(figsize=(w, h), dpi=DPI)
    ax = fig.add_subplot(1, 1, 1)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _tokens(x: float) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:g}{unit}"
    return f"{x:g}"


def loss_curves(history: Sequence[dict], title: str = "Pre-training loss",
                unit: str = "tokens") -> bytes:
    """Train and validation loss vs tokens (or images) seen. ``history``: {tokens, step,
    train_loss, val_loss}; ``unit`` names what ``tokens`` counts on the x axis."""
    fig, ax = _fig()
    xkey = "tokens" if any(h.get("tokens") is not None for h in history) else "step"
    for key, label, style in (("train_loss", "train", "-"), ("val_loss", "validation", "o-")):
        pts = [(h[xkey], float(h[key])) for h in history if h.get(xkey) is not None
               and h.get(key) is not None and math.isfinite(float(h[key]))]
        if pts:
            x, y = zip(*pts, strict=True)
            ax.plot(x, y, style, label=label, markersize=3)
    ax.set_xlabel(unit if xkey == "tokens" else xkey)
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.xaxis.set_major_formatter(lambda v, _pos: _tokens(v))
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return _png(fig)


def probe_curves(probes: Sequence[dict], metric: str = "score") -> bytes:
    """Probe score vs pre-training tokens, one line per task: when to stop pre-training."""
    fig, ax = _fig()
    probes = [p for p in probes if p.get("score") is not None and p.get("tokens") is not None]
    tasks = sorted({p["task"] for p in probes})
    all_tokens = [p["tokens"] for p in probes]
    for task in tasks:
        pts = sorted((p["tokens"], p["score"]) for p in probes if p["task"] == task)
        x, y = zip(*pts, strict=True)
        ax.plot(x, y, "o-", label=task, markersize=4)
    if all_tokens and min(all_tokens) > 0 and max(all_tokens) / min(all_tokens) > 20:
        ax.set_xscale("log")  # checkpoints usually double in tokens
    ax.set_xlabel("pre-training tokens")
    ax.set_ylabel(f"probe {metric_name(metric)}")
    ax.set_title("Linear probe on intermediate checkpoints")
    ax.xaxis.set_major_formatter(lambda v, _pos: _tokens(v))
    if tasks:
        ax.legend()
    return _png(fig)


def efficiency_curves(summary: Sequence[dict], metric: str, task: str) -> bytes:
    """Metric vs label budget (log x), one line per start/strategy, 95% CI band.

    ``summary``: rows of ``stats.summarize`` (only this task's rows are drawn).
    Colour = start, line style = strategy, so the same start reads as one family.
    """
    rows = [s for s in summary if s["task"] == task and s["budget"] > 0]
    # zero-shot runs (no labels) can't sit on a log axis: dashed horizontal reference lines
    zero_shot = [s for s in summary if s["task"] == task and s["budget"] <= 0]
    fig, ax = _fig(6.4, 3.8)
    scale = metric_scale(metric)
    starts = sorted({s["start"] for s in rows})
    strategies = sorted({s["strategy"] for s in rows})
    colors = [f"C{i % 10}" for i in range(len(starts))]
    budgets = sorted({(s["budget"], s["budget_label"]) for s in rows})
    for si, start in enumerate(starts):
        for ti, strategy in enumerate(strategies):
            pts = sorted((s["budget"], s) for s in rows
                         if s["start"] == start and s["strategy"] == strategy)
            if not pts:
                continue
            x = np.array([b for b, _ in pts], dtype=float)
            y = np.array([s["mean"] for _, s in pts]) * scale
            label = start if len(strategies) == 1 else f"{start} / {strategy}"
            ax.plot(x, y, _STYLES[ti % len(_STYLES)], marker="o", color=colors[si],
                    label=label, markersize=4)
            band = [(b, s["ci_low"], s["ci_high"]) for b, s in pts if s["ci_low"] is not None]
            if len(band) >= 2:
                bx, lo, hi = (np.array(v, dtype=float) for v in zip(*band, strict=True))
                ax.fill_between(bx, lo * scale, hi * scale, color=colors[si], alpha=0.12)
    for zi, z in enumerate(zero_shot):
        ax.axhline(z["mean"] * scale, color=f"C{(len(starts) + zi) % 10}", linestyle=":",
                   linewidth=1.2, label=f"{z['start']} / {z['strategy']} (zero-shot)")
    if budgets and min(b for b, _ in budgets) > 0:
        ax.set_xscale("log")
        ax.set_xticks([b for b, _ in budgets])
        ax.set_xticklabels([f"all\n({b:,})" if lab == "all" else f"{b:,}" for b, lab in budgets])
        ax.minorticks_off()
    ax.set_xlabel("labeled training examples")
    ax.set_ylabel(metric_name(metric) + (" (×100)" if scale != 1 else ""))
    ax.set_title(f"{task}: data efficiency")
    if rows or zero_shot:
        ax.legend(fontsize=8)
    return _png(fig)


def confusion_heatmap(confusion: Sequence[Sequence[float]], labels: Sequence[str],
                      title: str = "Confusion matrix") -> bytes:
    """Heatmap of counts (rows = true label, columns = predicted), counts written in cells."""
    cm = np.asarray(confusion, dtype=float)  # [n_labels, n_labels]
    k = cm.shape[0]
    side = min(7.0, 2.2 + 0.45 * k)
    fig = Figure(figsize=(side, side * 0.85), dpi=DPI)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(cm, cmap="Blues", vmin=0)  # counts: colour scale from zero
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    names = [str(x) for x in labels] if len(labels) == k else [str(i) for i in range(k)]
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(names, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center",
                       fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    if k <= 12:
        thresh = cm.max() / 2 if cm.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{cm[i, j]:g}", ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > thresh else "black")
    return _png(fig)


def compute_bars(compute: Sequence[dict], unit: str = "tokens") -> bytes:
    """Wall time per phase (bars), annotated with tokens and FLOPs where known."""
    fig, ax = _fig(6.0, 0.6 + 0.5 * max(1, len(compute)))
    phases = [str(c["phase"]) for c in compute]
    secs = [float(c.get("seconds") or 0.0) for c in compute]
    y = np.arange(len(phases))
    ax.barh(y, secs, color="C0")
    ax.set_yticks(y)
    ax.set_yticklabels(phases, fontsize=8)
    ax.invert_yaxis()  # first phase on top, as in the table
    ax.set_xlabel("wall time (s)")
    ax.set_title("Compute cost per phase")
    for yi, c, s in zip(y, compute, secs, strict=True):
        bits = []
        if c.get("tokens"):
            bits.append(f"{_tokens(float(c['tokens']))} {'img' if unit == 'images' else 'tok'}")
        if c.get("flops"):
            bits.append(f"{float(c['flops']):.2g} FLOPs")
        if bits:
            ax.text(s, yi, "  " + ", ".join(bits), va="center", fontsize=7)
    ax.set_xlim(0, (max(secs) if secs and max(secs) > 0 else 1.0) * 1.5)
    return _png(fig)
