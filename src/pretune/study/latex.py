"""``summary.tex``: the report's comparisons as a booktabs table to paste into a paper.

A fragment (no preamble): ``\\begin{table}...\\end{table}`` needing ``\\usepackage{booktabs}``.
One row per comparison with the baseline (task, start, strategy, labels): both means ± std
over seeds, the paired difference with its 95% CI, the raw and the corrected p, and d_z;
significant rows (corrected p < 0.05, CI excluding 0) in bold. Scores on the report's scale.
"""

from __future__ import annotations

from pretune.study.stats import metric_name, metric_scale
from pretune.study.verdicts import CORRECTION_NAMES, format_p

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
            "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
            "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
            "|": r"\textbar{}"}


def escape(text: str) -> str:
    return "".join(_SPECIAL.get(ch, ch) for ch in str(text))


def _num(v: float | None, scale: float, signed: bool = False) -> str:
    if v is None:
        return "--"
    v *= scale
    txt = (f"{v:+.1f}" if signed else f"{v:.1f}") if scale != 1 else \
        (f"{v:+.3g}" if signed else f"{v:.3g}")
    return txt.replace("-", "$-$") if txt.startswith("-") else txt


def _p(p: float | None) -> str:
    txt = format_p(p)
    return "--" if txt == "n/a" else txt.replace("<", "$<$")


def _ms(row: dict | None, k: float) -> str:
    """mean $\\pm$ std of a summary row."""
    if row is None:
        return "--"
    sd = f" $\\pm$ {_num(row['std'], k)}" if row.get("std") is not None else ""
    return _num(row["mean"], k) + sd


def summary_tex(table: list[dict], metrics: dict[str, str], baseline: str,
                correction: str, name: str) -> str:
    """``table``: summary rows (``stats.summary_table`` with corrected comparisons)."""
    base = {(t["task"], t["strategy"], t["budget"]): t for t in table if t["start"] == baseline}
    adj = CORRECTION_NAMES.get(correction)
    cols = ["Task", "Start", "Strategy", "Labels", escape(baseline), "Start score",
            r"$\Delta$ [95\% CI]", "$p$", *([f"$p_{{\\mathrm{{{correction}}}}}$"] if adj else []),
            "$d_z$"]
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + "llll" + "r" * (len(cols) - 4) + "}", r"\toprule",
             " & ".join(cols) + r" \\", r"\midrule"]
    n = 0
    for t in table:
        if t["start"] == baseline or t.get("delta") is None:
            continue
        k = metric_scale(metrics[t["task"]])
        b = base.get((t["task"], t["strategy"], t["budget"]))
        ci = (f" [{_num(t['delta_ci_low'], k)}, {_num(t['delta_ci_high'], k)}]"
              if t.get("delta_ci_low") is not None else "")
        labels = t["budget_label"] if t["budget_label"] in ("all", "zero-shot") else \
            f"{t['budget']:,}".replace(",", "{,}")
        cells = [escape(t["task"]), escape(t["start"]), escape(t["strategy"]), labels, _ms(b, k),
                 _ms(t, k), _num(t["delta"], k, signed=True) + ci, _p(t.get("p")),
                 *([_p(t.get("p_adj"))] if adj else []),
                 "--" if t.get("d_z") is None else _num(t["d_z"], 1.0)]
        if t.get("significant"):
            cells = [rf"\textbf{{{c}}}" for c in cells]
        lines.append(" & ".join(cells) + r" \\")
        n += 1
    if not n:
        lines.append(r"\multicolumn{" + str(len(cols)) + r"}{c}{no paired comparison} \\")
    used = sorted(set(metrics.values()))
    scale = r"points ($\times$100)" if any(metric_scale(m) != 1 for m in used) else "raw units"
    what = ", ".join(metric_name(m) for m in used)
    tested = sum(t.get("p") is not None for t in table if t["start"] != baseline)
    caption = (f"{escape(name)}: {escape(what)} in {scale}, mean "
               r"$\pm$ std over seeds; $\Delta$ = start $-$ " + escape(baseline) +
               r" over paired seeds (bootstrap 95\% CI); $p$: sign-flip or paired $t$-test" +
               (f"; $p_{{\\mathrm{{{correction}}}}}$: {escape(adj)} over {tested} comparisons"
                if adj else "") + r"; $d_z$: paired Cohen's $d$; bold: significant after "
               "correction.")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}",
              r"\label{tab:pretune-summary}", r"\end{table}", ""]
    return "\n".join(lines)
