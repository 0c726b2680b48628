"""The report's document model and its two renderings: sections of blocks (paragraphs,
tables, plots, lists, preformatted text) rendered to a self-contained HTML page and to
Markdown with the plots beside it. Studies, sweeps and comparisons all render through here.

The page opens offline and loads nothing: inline CSS, plots as inline SVG (text stays text;
hovering a data point shows its mean ± CI, n and settings), every user string escaped, and
one script of a few lines, ours, that shows those hover tips (a plain ``<title>`` tooltip
still works with scripts off). No bundled chart library: inline SVG from matplotlib needs
none, and keeps the page a few hundred kB."""

from __future__ import annotations

import html
from pathlib import Path

from pretune.study.plots import inline_svg
from pretune.study.units import slug

Block = tuple  # ("p", text, cls) | ("table", headers, rows, classes) | ("fig", Plot) ...

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1100px;padding:0 16px;color:#1d232a}
h1{font-size:24px;margin-bottom:4px}h2{border-bottom:2px solid #dde3ea;padding-bottom:4px;
margin-top:32px}h3{margin-bottom:6px}.meta{color:#5b6570}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #d5dbe1;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f3f6}tr.good td{background:#eaf7ea}tr.bad td{background:#fdecea}
tr.flag td{background:#fdecea;color:#b00020;font-weight:600}
p.verdict{padding:8px 12px;border-left:5px solid #9aa5b1;background:#f6f8fa;margin:6px 0}
p.good{border-color:#2e7d32}p.bad{border-color:#c62828}
svg.plot{border:1px solid #e3e7eb;margin:4px 8px 12px 0;background:#fff}
pre{background:#f6f8fa;padding:12px;overflow:auto;font-size:12px}
.imgs{display:flex;flex-wrap:wrap;align-items:flex-start}
.pt{cursor:pointer}#tip{position:fixed;display:none;max-width:420px;padding:6px 9px;
background:#1d232a;color:#fff;font-size:12px;border-radius:4px;pointer-events:none;z-index:9}
td.num{text-align:right;font-variant-numeric:tabular-nums}
"""
# Hover tips for the plots' data points (their text is in data-tip, escaped).
SCRIPT = """(function(){var t=document.getElementById('tip');
document.querySelectorAll('.pt').forEach(function(g){
g.addEventListener('mouseenter',function(){t.textContent=g.dataset.tip;t.style.display='block';});
g.addEventListener('mousemove',function(e){t.style.left=(e.clientX+14)+'px';
t.style.top=(e.clientY+14)+'px';});
g.addEventListener('mouseleave',function(){t.style.display='none';});});})();"""



def render_html(title: str, sections: list[tuple[str, list[Block]]]) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(title)}</title><style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]

    for head, blocks in sections:
        out.append(f'<section id="{slug(head.lower())}"><h2>{e(head)}</h2>')
        for b in blocks:
            kind = b[0]
            if kind == "h3":
                out.append(f"<h3>{e(b[1])}</h3>")
            elif kind == "p":
                out.append(f'<p class="{e(b[2])}">{e(b[1])}</p>')
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in b[1]) + "</ul>")
            elif kind == "details":
                items = "".join(f'<p class="verdict">{e(x)}</p>' for x in b[2])
                out.append(f"<details><summary>{e(b[1])}</summary>{items}</details>")
            elif kind == "table":
                _, headers, body, classes = b
                rows = "".join(
                    f'<tr class="{e(classes[i] if i < len(classes) else "")}">'
                    + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for i, r in enumerate(body))
                out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in headers)
                           + f"</tr>{rows}</table>")
            elif kind == "fig":
                out.append(inline_svg(b[1]))
            elif kind == "figs":
                out.append('<div class="imgs">' + "".join(inline_svg(p) for p in b[1]) + "</div>")
            elif kind == "pre":
                out.append(f"<pre>{e(b[1])}</pre>")
        out.append("</section>")
    out.append(f'<div id="tip"></div><script>{SCRIPT}</script></body></html>')
    return "\n".join(out)


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_md(title: str, sections: list[tuple[str, list[Block]]]) -> str:
    out = [f"# {title}", ""]
    for head, blocks in sections:
        out += [f"## {head}", ""]
        for b in blocks:
            kind = b[0]
            if kind == "h3":
                out += [f"### {b[1]}", ""]
            elif kind == "p":
                out += [f"**{b[1]}**" if "verdict" in b[2] else b[1], ""]
            elif kind == "ul":
                out += [f"- {x}" for x in b[1]] + [""]
            elif kind == "details":
                out += [f"{b[1]}:", ""] + [f"- {x}" for x in b[2]] + [""]
            elif kind == "table":
                _, headers, body, _cls = b
                out.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
                out.append("|" + "---|" * len(headers))
                out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in body]
                out.append("")
            elif kind == "fig":
                out += [f"![{b[1].alt}](plots/{b[1].name}.png)", ""]
            elif kind == "figs":
                out += [f"![{p.alt}](plots/{p.name}.png)" for p in b[1]] + [""]
            elif kind == "pre":
                out += ["```yaml", b[1].rstrip("\n"), "```", ""]
    return "\n".join(out)


def write_plots(plot_dir: Path, sections: list[tuple[str, list[Block]]]) -> None:
    """Every plot of the report as plots/<name>.png, .svg and .pdf."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    for _, blocks in sections:
        for b in blocks:
            for p in [b[1]] if b[0] == "fig" else b[1] if b[0] == "figs" else []:
                (plot_dir / f"{p.name}.png").write_bytes(p.png)
                (plot_dir / f"{p.name}.svg").write_text(p.svg, encoding="utf-8")
                (plot_dir / f"{p.name}.pdf").write_bytes(p.pdf)
