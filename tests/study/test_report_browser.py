"""Render real study reports in headless Chromium (1400 px wide), driven by Playwright: the
page opens offline and reads as a researcher would need it to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pretune.study.compare import compare

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright (dev extra)")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium"),
]
PLOT = "eff-rotten-tomatoes"


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    requests: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    yield pg, requests
    pg.close()


def _open(pg, path: Path) -> None:
    pg.goto(path.resolve().as_uri())
    pg.wait_for_load_state("load")


def test_report_plot_baseline_legend_scale_and_hover(page, tiny_studies, tmp_path):
    pg, requests = page
    _open(pg, tiny_studies[0] / "report.html")
    assert requests == [tiny_studies[0].joinpath("report.html").resolve().as_uri()]  # offline
    pg.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 20_000

    # many inline SVGs on one page, and still every element id is unique
    dup = pg.evaluate("""() => { const seen = {}, dup = [];
        document.querySelectorAll('[id]').forEach(e => { if (seen[e.id]) dup.push(e.id);
                                                         seen[e.id] = 1; });
        return dup; }""")
    assert not dup, dup[:5]

    # the trivial baseline: a dashed line with its label, named in the legend
    assert pg.locator(f"#{PLOT}-baseline").count() == 1
    label = pg.locator(f"#{PLOT}-baseline-label").text_content().strip()
    assert label.startswith("majority class: ")
    assert "majority class baseline" in pg.locator(f"#{PLOT}-legend").text_content()

    # the plot spans the content width, and the legend sits outside the data area
    area = pg.locator(f"#{PLOT}-area").bounding_box()
    legend = pg.locator(f"#{PLOT}-legend").bounding_box()
    svg = pg.locator(f"svg:has(#{PLOT}-area)").bounding_box()
    content = pg.locator("section").first.bounding_box()
    assert svg["width"] >= 0.95 * content["width"] and svg["width"] > 900
    assert legend["x"] >= area["x"] + area["width"] or \
        legend["y"] >= area["y"] + area["height"], (legend, area)

    # one scale: the verdict says ×100, and no score cell (nor probe score) is a fraction
    assert "×100 (points)" in pg.locator("#verdict").inner_text()
    cells = pg.evaluate("""() => {
        const out = [];
        for (const t of document.querySelectorAll('table')) {
            const heads = [...t.querySelectorAll('th')].map(h => h.textContent);
            heads.forEach((h, i) => {
                if (/macro-F1: mean|probe macro-F1|^(scratch|pretrained)$/.test(h))
                    t.querySelectorAll('tr').forEach(r => {
                        const c = r.children[i];
                        if (c && c.tagName === 'TD') out.push(c.textContent);
                    });
            });
        }
        return out;
    }""")
    assert len(cells) > 10
    bad = [c for c in cells if re.match(r"^-?0\.\d{2,}", c)]  # ×100 shows one decimal
    assert not bad, bad

    # corrected p-values beside the raw ones, in the verdicts and the table
    verdicts = pg.locator("#verdict").inner_text()
    assert "Holm-Bonferroni over all" in verdicts
    assert pg.locator("th", has_text="p (Holm)").count() >= 1

    # hovering a data point shows its mean ± CI, n and the cell's settings
    def hover(gid: str) -> str:
        pt = pg.locator(f"#{gid}")
        pt.scroll_into_view_if_needed()
        box = pt.bounding_box()
        pg.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        tip = pg.locator("#tip")
        tip.wait_for(state="visible", timeout=5000)
        return tip.inner_text()

    probe = hover(f"{PLOT}-pt-0-0")  # scratch / linear-probe-sklearn at 16 labels
    assert probe.startswith("scratch / linear-probe-sklearn · 16 labels: macro-F1 (×100) ")
    assert "±" in probe and "95% CI" in probe and "n = 2 seeds" in probe
    assert "scikit-learn logistic regression" in probe
    full = hover(f"{PLOT}-pt-1-0")  # scratch / full: the loop's settings
    assert full.startswith("scratch / full · 16 labels") and "lr " in full and "batch 8" in full
    pg.mouse.move(5, 5)
    pg.locator("#tip").wait_for(state="hidden", timeout=5000)


def test_changed_answers_list_the_saved_examples(page, tiny_studies):
    import json

    from pretune.evaluate.examples import PREDICTIONS, read_predictions

    pg, _ = page
    out = tiny_studies[0]
    _open(pg, out / "report.html")
    section = pg.locator("#where_pre-training_changed_the_answer")
    assert section.count() == 1
    texts = {x["text"] for r in json.loads((out / "report.json").read_text())["results"]
             for x in read_predictions(out / "cells" / r["cell"] / PREDICTIONS)}
    shown = section.locator("table:has(th:text-is('example')) td:nth-child(2)").all_inner_texts()
    assert "exact McNemar test" in section.inner_text()
    assert all(s in texts for s in shown)
    if "is right where scratch is wrong on 0 " not in section.inner_text():
        assert shown, "examples that changed must be listed"


def test_compare_page_shows_both_studies(page, tiny_studies, tmp_path):
    pg, requests = page
    out = compare(list(tiny_studies), tmp_path / "cmp")
    _open(pg, out / "report.html")
    assert len(requests) == 1
    legend = pg.locator(f"#{PLOT}-legend").text_content()
    assert "tiny: pretrained" in legend and "tiny-short: pretrained" in legend
    head = pg.locator("#task_rotten-tomatoes table").inner_text()
    assert "tiny" in head and "tiny-short" in head
    assert "pretrain.train.max_steps" in pg.locator("#what_differs_in_their_configs").inner_text()
