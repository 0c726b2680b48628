"""The report's plots: each a ``Plot`` (PNG for Markdown, SVG inlined in the HTML page and
written beside it, PDF for papers), drawn with matplotlib on an Agg canvas.

We build ``Figure`` objects directly instead of going through ``pyplot``: no global figure
state, no GUI backend selection, nothing left open after a call. Text stays text in the SVG
(``svg.fonttype: none``) so the page can be searched and tested; data points carry hover
tips (``Plot.tips``: element id -> text), added to the SVG as ``<title>`` + ``data-tip``.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pretune.study import units
from pretune.study.stats import metric_name, metric_scale

DPI = 100
_STYLES = ["-", "--", ":", "-."]  # per strategy
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]  # per start (with its colour)
_SVG_RC = {"svg.fonttype": "none", "svg.hashsalt": "pretune"}  # text as text, stable ids


@dataclass
class Plot:
    name: str  # file stem under plots/
    alt: str
    png: bytes
    svg: str  # a standalone SVG document
    pdf: bytes
    wide: bool = False  # drawn at the page's full content width
    tips: dict[str, str] = field(default_factory=dict)
    gid: str = ""  # the prefix of this plot's own element ids (kept as they are when inlined)


def _add_tips(svg: str, tips: dict[str, str]) -> str:
    for gid, tip in tips.items():
        t = html.escape(tip, quote=True)
        svg = svg.replace(f'<g id="{gid}">',
                          f'<g id="{gid}" class="pt" data-tip="{t}"><title>{t}</title>', 1)
    return svg


def render(fig: Figure, name: str, alt: str, tips: dict[str, str] | None = None,
           wide: bool = False, gid: str = "") -> Plot:
    FigureCanvasAgg(fig)
    out = {}
    with rc_context(_SVG_RC):
        for fmt, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None, "Format": None, "Type": None}),
                          ("pdf", {"Creator": None, "Producer": None, "CreationDate": None})):
            buf = io.BytesIO()
            # No software or date stamps: the report carries no URL, and reruns are equal.
            fig.savefig(buf, format=fmt, dpi=DPI, bbox_inches="tight", metadata=meta)
            out[fmt] = buf.getvalue()
    svg = _add_tips(out["svg"].decode("utf-8"), tips or {})
    return Plot(name, alt, out["png"], svg, out["pdf"], wide, dict(tips or {}), gid)


def inline_svg(plot: Plot) -> str:
    """The SVG as an element of an HTML page: no XML prolog, no namespace URLs (HTML's
    parser knows SVG), width in CSS pixels, or the full content width for wide plots."""
    svg = plot.svg[plot.svg.index("<svg"):]
    head, rest = svg.split(">", 1)
    width = re.search(r'width="([\d.]+)pt"', head)
    px = f"{float(width.group(1)) * 96 / 72:.0f}px" if width else "100%"
    head = re.sub(r'\s(width|height|xmlns(:xlink)?)="[^"]*"', "", head)
    style = "width:100%" if plot.wide else f"width:{px};max-width:100%"
    rest = rest.replace("xlink:href=", "href=")
    # matplotlib numbers its ids per figure (figure_1, line2d_3, ...): prefix them with the
    # plot's name so a page of many plots has unique ids; the plot's own ids stay as they are.
    own = plot.gid or "\0"

    def fix(m: re.Match) -> str:
        ident = m.group(2)
        return m.group(0) if ident.startswith(own) else f"{m.group(1)}{plot.name}--{ident}"

    rest = re.sub(r'(id="|url\(#|href="#)([^")]+)', fix, rest)
    return (f'{head} class="plot" role="img" aria-label="{html.escape(plot.alt)}" '
            f'style="{style};height:auto">{rest}')


def _fig(w: float = 6.0, h: float = 3.6) -> tuple[Figure, object]:
    fig = Figure(figsize=(w, h), dpi=DPI)
    ax = fig.add_subplot(1, 1, 1)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _tokens(x: float) -> str:
    return units.count(x) if x else "0"


def loss_curves(history: Sequence[dict], title: str = "Pre-training loss",
                unit: str = "tokens", name: str = "pretrain_loss") -> Plot:
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
    ax.set_xlabel(f"pre-training {unit}" if xkey == "tokens" else xkey)
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.xaxis.set_major_formatter(lambda v, _pos: _tokens(v))
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return render(fig, name, f"pre-training loss vs {unit}")


def probe_curves(probes: Sequence[dict], metric: str = "score", unit: str = "tokens") -> Plot:
    """Probe score vs pre-training tokens, one line per task: when to stop pre-training."""
    fig, ax = _fig()
    scale = metric_scale(metric)
    probes = [p for p in probes if p.get("score") is not None and p.get("tokens") is not None]
    tasks = sorted({p["task"] for p in probes})
    all_tokens = [p["tokens"] for p in probes]
    tips = {}
    for ti, task in enumerate(tasks):
        pts = sorted((p["tokens"], p["score"] * scale) for p in probes if p["task"] == task)
        x, y = zip(*pts, strict=True)
        ax.plot(x, y, "-", color=f"C{ti}", marker=_MARKERS[ti % len(_MARKERS)], label=task,
                markersize=5)
        for k, (xi, yi) in enumerate(pts):
            gid = f"probes-pt-{ti}-{k}"
            ax.plot([xi], [yi], "o", ms=9, alpha=0.0, gid=gid)
            tips[gid] = f"{task} · {units.count(xi, unit)}: probe {metric_name(metric)} {yi:.1f}"
    if all_tokens and min(all_tokens) > 0 and max(all_tokens) / min(all_tokens) > 20:
        ax.set_xscale("log")  # checkpoints usually double in tokens
    ax.set_xlabel(f"pre-training {unit}")
    ax.set_ylabel(f"probe {metric_name(metric)}" + (" (×100)" if scale != 1 else ""))
    ax.set_title("Linear probe on intermediate checkpoints")
    ax.xaxis.set_major_formatter(lambda v, _pos: _tokens(v))
    if tasks:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return render(fig, "probes", "probe score vs pre-training " + unit, tips, gid="probes-")


def _budget_tick(b: int, label: str) -> str:
    return f"all\n({b:,})" if label == "all" else f"{b:,}"


def efficiency_curves(summary: Sequence[dict], metric: str, task: str,
                      baseline: dict | None = None, recipes: dict | None = None) -> Plot:
    """Metric vs label budget (log x, the budgets as ticks), one line per start/strategy with
    its 95% CI band, the trivial baseline (``{name, value}``) as a labelled dashed line.

    ``summary``: rows of ``stats.summarize`` (only this task's rows are drawn). Colour and
    marker = start, line style = strategy; series are nudged apart along x so equal curves
    stay visible. The legend sits outside the axes. ``recipes``: (start, strategy, budget) ->
    the cell's settings, shown when hovering a point.
    """
    slug = "eff-" + units.slug(task)
    rows = [s for s in summary if s["task"] == task and s["budget"] > 0]
    # zero-shot runs (no labels) can't sit on a log axis: dotted horizontal reference lines
    zero_shot = [s for s in summary if s["task"] == task and s["budget"] <= 0]
    fig, ax = _fig(10.0, 4.6)
    ax.patch.set_gid(f"{slug}-area")
    scale = metric_scale(metric)
    starts = list(dict.fromkeys(s["start"] for s in rows))
    strategies = list(dict.fromkeys(s["strategy"] for s in rows))
    budgets = sorted({(s["budget"], s["budget_label"]) for s in rows})
    series = [(a, b) for a in starts for b in strategies
              if any(s["start"] == a and s["strategy"] == b for s in rows)]
    tips: dict[str, str] = {}
    unit = " (×100)" if scale != 1 else ""
    for k, (start, strategy) in enumerate(series):
        si, ti = starts.index(start), strategies.index(strategy)
        color = f"C{si % 10}"
        nudge = math.exp(0.025 * (k - (len(series) - 1) / 2))  # on the log axis: a few pixels
        pts = sorted((s["budget"], s) for s in rows
                     if s["start"] == start and s["strategy"] == strategy)
        x = np.array([b for b, _ in pts], dtype=float) * nudge
        y = np.array([s["mean"] for _, s in pts]) * scale
        label = start if len(strategies) == 1 else f"{start} / {strategy}"
        ax.plot(x, y, _STYLES[ti % len(_STYLES)], color=color, label=label, linewidth=1.8,
                marker=_MARKERS[si % len(_MARKERS)], markersize=6, zorder=3)
        band = [(xi, s["ci_low"], s["ci_high"]) for xi, (_, s) in zip(x, pts, strict=True)
                if s["ci_low"] is not None]
        if len(band) >= 2:
            bx, lo, hi = (np.array(v, dtype=float) for v in zip(*band, strict=True))
            ax.fill_between(bx, lo * scale, hi * scale, color=color, alpha=0.08, linewidth=0,
                            zorder=1)
        for j, (xi, yi, (b, s)) in enumerate(zip(x, y, pts, strict=True)):
            gid = f"{slug}-pt-{k}-{j}"
            ax.plot([xi], [yi], "o", ms=12, alpha=0.0, gid=gid, zorder=5)  # the hover target
            spread = f" ± {s['std'] * scale:.1f}" if s.get("std") is not None else ""
            ci = (f" (95% CI [{s['ci_low'] * scale:.1f}, {s['ci_high'] * scale:.1f}])"
                  if s.get("ci_low") is not None else "")
            recipe = (recipes or {}).get((start, strategy, b), "")
            tips[gid] = (f"{start} / {strategy} · {_budget_tick(b, s['budget_label'])} labels: "
                         f"{metric_name(metric)}{unit} {yi:.1f}{spread}{ci}, n = {s['n']} "
                         f"seed{'s' if s['n'] != 1 else ''}" + (f" · {recipe}" if recipe else ""))
    for zi, z in enumerate(zero_shot):
        ax.axhline(z["mean"] * scale, color=f"C{(len(starts) + zi) % 10}", linestyle=":",
                   linewidth=1.4, label=f"{z['start']} / {z['strategy']} (zero-shot)", zorder=2)
    if baseline and baseline.get("value") is not None and math.isfinite(baseline["value"]):
        v = float(baseline["value"]) * scale
        line = ax.axhline(v, color="0.3", linestyle=(0, (6, 3)), linewidth=1.3, zorder=2,
                          label=f"{baseline['name']} baseline ({v:.1f})")
        line.set_gid(f"{slug}-baseline")
        ax.annotate(f"{baseline['name']}: {v:.1f}", xy=(0.995, v),
                    xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=9,
                    color="0.25", gid=f"{slug}-baseline-label")
    if budgets and min(b for b, _ in budgets) > 0:
        ax.set_xscale("log")
        ax.set_xticks([b for b, _ in budgets])
        ax.set_xticklabels([_budget_tick(b, lab) for b, lab in budgets])
        ax.minorticks_off()
        lo, hi = budgets[0][0], budgets[-1][0]
        ax.set_xlim(lo / 1.35, hi * 1.35)  # room for the nudged points at both ends
    ax.set_xlabel("labeled training examples (log scale)")
    ax.set_ylabel(metric_name(metric) + unit)
    ax.set_title(f"{task}: data efficiency")
    if ax.get_legend_handles_labels()[0]:
        legend = ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                           borderaxespad=0.0, frameon=False, title="start / strategy")
        legend.set_gid(f"{slug}-legend")
    return render(fig, f"efficiency_{units.slug(task)}",
                  f"{task}: {metric_name(metric)} vs label budget", tips, wide=True, gid=slug)


def confusion_heatmap(confusion: Sequence[Sequence[float]], labels: Sequence[str],
                      title: str = "Confusion matrix", name: str = "confusion") -> Plot:
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
    return render(fig, name, title)


def compute_bars(compute: Sequence[dict], unit: str = "tokens") -> Plot:
    """Wall time per phase (bars), annotated with tokens and FLOPs where known."""
    fig, ax = _fig(7.0, 0.8 + 0.5 * max(1, len(compute)))
    phases = [str(c["phase"]) for c in compute]
    secs = [float(c.get("seconds") or 0.0) for c in compute]
    div, tunit = units.time_axis(max(secs, default=0.0))
    y = np.arange(len(phases))
    ax.barh(y, [s / div for s in secs], color="C0")
    ax.set_yticks(y)
    ax.set_yticklabels(phases, fontsize=8)
    ax.invert_yaxis()  # first phase on top, as in the table
    ax.set_xlabel(f"wall time ({tunit})")
    ax.set_title("Compute cost per phase")
    for yi, c, s in zip(y, compute, secs, strict=True):
        bits = [units.seconds(s)]
        if c.get("tokens"):
            bits.append(units.count(c["tokens"], "images" if unit == "images" else "tokens"))
        if c.get("flops"):
            bits.append(units.flops(c["flops"]))
        ax.text(s / div, yi, "  " + " · ".join(bits), va="center", fontsize=7)
    ax.set_xlim(0, (max(secs) / div if secs and max(secs) > 0 else 1.0) * 1.6)
    return render(fig, "compute", "compute per phase")
