"""A real tiny study's per-example evidence, exports and `pretune compare` (no browser)."""

from __future__ import annotations

import csv
import json
import re

from pretune.cli import main
from pretune.evaluate.examples import PREDICTIONS, read_predictions


def test_every_cell_saves_its_test_predictions(tiny_studies):
    out, _ = tiny_studies
    rows = json.loads((out / "report.json").read_text())["results"]
    assert rows and all(r["cell"] for r in rows)
    for r in rows:
        recs = read_predictions(out / "cells" / r["cell"] / PREDICTIONS)
        assert recs is not None and len(recs) == 60, r["cell"]  # test_size: 60
        assert {"id", "text", "true", "pred", "p", "score"} <= set(recs[0])
        assert {x["true"] for x in recs} <= {"fresh", "rotten"}
        # the saved per-example scores reproduce the cell's accuracy
        assert abs(sum(x["score"] for x in recs) / len(recs) - r["accuracy"]) < 1e-9
    ids = [x["id"] for x in read_predictions(out / "cells" / rows[0]["cell"] / PREDICTIONS)]
    assert len(set(ids)) == 60  # row numbers of the source, one per test example


def test_changed_answers_quote_the_saved_examples(tiny_studies):
    out, _ = tiny_studies
    md = (out / "report.md").read_text()
    part = md.split("## Where pre-training changed the answer")[1].split("\n## ")[0]
    assert "exact McNemar test" in part and "paired seeds" in part
    texts = {x["text"]: x for r in json.loads((out / "report.json").read_text())["results"]
             for x in read_predictions(out / "cells" / r["cell"] / PREDICTIONS)}
    quoted = [line.split(" | ")[1] for line in part.splitlines()
              if re.match(r"^\| \d+ \| ", line)]
    if quoted:  # the two starts disagree somewhere: the rows are real test examples
        assert all(q.replace("\\|", "|") in texts for q in quoted)
    assert "Per-class F1" in part and "| fresh |" in part and "| rotten |" in part


def test_trivial_baseline_correction_and_compute_units(tiny_studies):
    out, _ = tiny_studies
    rep = json.loads((out / "report.json").read_text())
    base = rep["baselines"]["rotten-tomatoes"]
    assert base["name"] == "majority class"
    assert 0.2 < base["metrics"]["macro_f1"] < 0.5  # majority of 2 classes: <= 1/2 x F1
    md = (out / "report.md").read_text()
    assert "Trivial baseline, majority class" in md and "Holm-Bonferroni over all" in md
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert any(r["p_adj"] for r in rows) and "d_z" in rows[0]
    compute = md.split("## Compute")[1].split("\n## ")[0]
    matrix = next(line for line in compute.splitlines() if "fine-tuning matrix" in line)
    assert re.search(r"\d(\.\d)?k", matrix) and "FLOP" in matrix  # tokens and FLOPs, human


def test_summary_tex_is_a_balanced_booktabs_fragment(tiny_studies):
    tex = (tiny_studies[0] / "summary.tex").read_text()
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex).group(1)
    for line in body:  # every row has as many cells as the column spec
        assert line.endswith(r"\\") and line.count("&") - line.count(r"\&") == len(spec) - 1
    assert tex.count("{") - tex.count(r"\{") == tex.count("}") - tex.count(r"\}")
    assert "pretrained" in tex and r"$p_{\mathrm{holm}}$" in tex


def test_compare_lays_two_studies_side_by_side(tiny_studies, tmp_path, capsys):
    full, short = tiny_studies
    assert main(["compare", str(full), str(short), "-o", str(tmp_path / "cmp")]) == 0
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "pretune compare: tiny vs tiny-short" in md
    diff = md.split("## What differs in their configs")[1].split("\n## ")[0]
    assert "| pretrain.train.max_steps | 6 | 3 |" in diff and "| seeds | [0, 1] | [0] |" in diff
    assert "| strategies[0].name | linear-probe | full |" in diff
    task = md.split("## Task: rotten-tomatoes")[1]
    assert "tiny: pretrained" in (tmp_path / "cmp" / "report.html").read_text()
    assert "| start | strategy | labels | tiny | tiny-short |" in task
    assert (tmp_path / "cmp" / "plots" / "compare_rotten-tomatoes.svg").is_file()


def test_compare_refuses_a_directory_without_a_report(tiny_studies, tmp_path, capsys):
    assert main(["compare", str(tiny_studies[0]), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "report.json not found" in err and len(err.strip().splitlines()) == 1
