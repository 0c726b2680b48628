"""write_report on a synthetic study: 2 tasks x 3 starts x 2 strategies x 2 budgets x 3 seeds."""

from __future__ import annotations

import csv
import json
import re
import statistics

import pytest

from pretune.errors import PretuneError
from pretune.study.contamination import ngram_overlap
from pretune.study.report import RESULT_COLUMNS, write_report

TASKS = {"rotten-tomatoes": (["fresh", "rotten"], 0.55), "wiki-topics": (["art", "sport", "war"], 0.40)}
STARTS = ["scratch", "pretrained", "builtin:minilm"]
STRATEGIES = ["full", "linear-probe"]
BUDGETS = [(32, "32"), (400, "all")]
# Effect of each start over scratch (metric units) at (32 labels, all labels).
EFFECT = {"scratch": (0.0, 0.0), "pretrained": (0.08, 0.01), "builtin:minilm": (0.15, 0.05)}


def value(task, start, strategy, budget_index, seed):
    base = TASKS[task][1] + (0.0 if budget_index == 0 else 0.2)
    noise = 0.01 * ((seed * 7 + STARTS.index(start)) % 3 - 1)  # differs per start: not constant Δ
    return round(base + EFFECT[start][budget_index] + 0.02 * STRATEGIES.index(strategy) + noise, 4)


def synthetic_results():
    rows = []
    for task, (labels, _) in TASKS.items():
        for start in STARTS:
            for strategy in STRATEGIES:
                for bi, (budget, label) in enumerate(BUDGETS):
                    for seed in range(3):
                        v = value(task, start, strategy, bi, seed)
                        k = len(labels)
                        confusion = [[10 + 5 * (i == j) + seed for j in range(k)] for i in range(k)]
                        rows.append({
                            "task": task, "start": start, "strategy": strategy, "budget": budget,
                            "budget_label": label, "seed": seed, "status": "ok", "error": None,
                            "seconds": 1.5 + seed, "train_examples": budget,
                            "trainable_params": 1000 if strategy == "linear-probe" else 90_000,
                            "macro_f1": v, "accuracy": v + 0.03, "roc_auc": min(1.0, v + 0.1),
                            "confusion": confusion, "labels": labels,
                        })
    rows.append({"task": "wiki-topics", "start": "pretrained", "strategy": "full", "budget": 32,
                 "budget_label": "32", "seed": 3, "status": "failed",
                 "error": "RuntimeError: NaN loss <at step 7>", "seconds": 0.3,
                 "train_examples": 0, "trainable_params": 0})
    return rows


def extras():
    history = [{"tokens": 4096 * i, "step": i, "train_loss": 7.0 - 0.3 * i,
                "val_loss": (7.1 - 0.3 * i) if i % 2 == 0 else None} for i in range(1, 11)]
    pretrain = {"history": history, "tokens": 40960, "seconds": 12.5, "flops": 3.2e12,
                "corpus": "news"}
    probes = [{"task": t, "checkpoint": f"step-{s}", "tokens": 4096 * s, "score": 0.5 + 0.02 * s + d}
              for t, d in (("rotten-tomatoes", 0.0), ("wiki-topics", -0.1)) for s in (2, 4, 8)]
    corpus = ["the movie was a triumph of style over substance and the cast never once looked bored"]
    clean = ngram_overlap(iter(corpus), ["an entirely different sentence with many words in it, yes"], n=5)
    leaked = ngram_overlap(iter(corpus), ["The movie was a triumph of style over substance!"], n=5)
    contamination = [{"task": "wiki-topics", **clean}, {"task": "rotten-tomatoes", **leaked}]
    compute = [{"phase": "prepare", "tokens": 50_000, "seconds": 3.0, "flops": None},
               {"phase": "pretrain", "tokens": 40960, "seconds": 12.5, "flops": 3.2e12},
               {"phase": "fine-tuning matrix", "tokens": None, "seconds": 150.0, "flops": None}]
    return pretrain, probes, contamination, compute


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    pretrain, probes, contamination, compute = extras()
    paths = write_report(
        out, name="synthetic <study>", results=synthetic_results(), metric="macro_f1",
        pretrain=pretrain, probes=probes, contamination=contamination, compute=compute,
        config_yaml="name: synthetic\nbudgets: [32, all]\n",
        notes=["seeds are made up", "<script>alert(1)</script>"], correction="none",
    )
    return paths


def test_holm_correction_decides_the_verdicts(tmp_path):
    """Over the 16 comparisons of the synthetic study, Holm lifts p = 0.015 (the headline of
    the uncorrected report) to 16 x 0.015 - the verdicts say so and stop calling it an
    improvement; the table shows raw and corrected p side by side."""
    paths = write_report(tmp_path, name="holm", results=synthetic_results(), metric="macro_f1")
    md = paths["md"].read_text()
    verdicts = md.split("## Task:")[0]
    assert "Holm-Bonferroni over all 16 comparisons" in verdicts
    assert "improved" not in verdicts
    assert ("(paired t-test p = 0.015, Holm-adjusted p = 0.18 over 16 comparisons, d_z = "
            in verdicts) and "not significant after correcting for 16 comparisons" in verdicts
    with paths["summary"].open() as f:
        rows = list(csv.DictReader(f))
    tested = [r for r in rows if r["p"]]
    assert len(tested) == 16 and all(float(r["p_adj"]) >= float(r["p"]) for r in tested)
    assert all(r["p_adj_method"] == "holm" for r in tested)
    assert "| p | p (Holm) | d_z |" in md


def test_files_written(report):
    for key in ("results", "summary", "md", "html"):
        assert report[key].is_file() and report[key].stat().st_size > 0
    pngs = sorted(p.name for p in report["plots"].glob("*.png"))
    assert "efficiency_rotten-tomatoes.png" in pngs and "pretrain_loss.png" in pngs
    assert "probes.png" in pngs and "compute.png" in pngs
    assert sum(p.startswith("confusion_") for p in pngs) == 6  # 2 tasks x 3 starts


def test_results_csv_one_row_per_run_stable_columns(report):
    with report["results"].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 3 * 2 * 2 * 3 + 1
    header = list(rows[0])
    assert header[: len(RESULT_COLUMNS)] == RESULT_COLUMNS
    assert header[-2:] == ["labels", "confusion"]
    assert {"accuracy", "macro_f1", "roc_auc"} <= set(header)
    assert json.loads(rows[0]["confusion"])[0][0] == 15
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["macro_f1"] == ""


def test_summary_csv_numbers(report):
    with report["summary"].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 3 * 2 * 2
    cell = next(r for r in rows if (r["task"], r["start"], r["strategy"], r["budget"])
                == ("rotten-tomatoes", "pretrained", "full", "32"))
    vals = [value("rotten-tomatoes", "pretrained", "full", 0, s) for s in range(3)]
    base = [value("rotten-tomatoes", "scratch", "full", 0, s) for s in range(3)]
    assert float(cell["mean"]) == pytest.approx(statistics.mean(vals))
    assert float(cell["std"]) == pytest.approx(statistics.stdev(vals))
    assert float(cell["delta"]) == pytest.approx(statistics.mean(vals) - statistics.mean(base))
    assert float(cell["p_perm"]) == pytest.approx(0.25)  # 3 seeds, every seed better
    assert cell["n"] == "3" and cell["baseline"] == "scratch"
    failed = next(r for r in rows if (r["task"], r["start"], r["strategy"], r["budget"])
                  == ("wiki-topics", "pretrained", "full", "32"))
    assert failed["failed"] == "1" and failed["n"] == "3"
    assert {r["budget_label"] for r in rows} == {"32", "all"}


def test_markdown_verdicts_first_then_tables(report):
    md = report["md"].read_text()
    h2 = re.findall(r"^## (.+)$", md, flags=re.M)
    assert h2[0] == "Verdict" and h2[1] == "Task: rotten-tomatoes"
    verdict_part = md.split("## Task:")[0]
    assert "Starting from builtin:minilm" in verdict_part
    # 3 seeds: the sign-flip test can't go below 0.25, so the headline p is the paired t-test
    assert "improved macro-F1 on rotten-tomatoes by +8.0 ± 1.7 points" in verdict_part
    assert "(paired t-test p = 0.015, d_z = 4.62, n = 3 seeds)" in verdict_part
    vals = [value("rotten-tomatoes", "pretrained", "full", 0, s) for s in range(3)]
    mean, sd = statistics.mean(vals) * 100, statistics.stdev(vals) * 100
    assert f"| pretrained | full | 32 | 3 | {mean:.1f} ± {sd:.1f} [" in md
    assert "| all (400) |" in md
    assert "![rotten-tomatoes: macro-F1 vs label budget](plots/efficiency_rotten-tomatoes.png)" in md
    assert "RuntimeError: NaN loss <at step 7>" in md  # failed cell listed
    assert "```yaml\nname: synthetic" in md


def test_html_sections_escaping_and_self_contained(report):
    html = report["html"].read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "<title>pretune study: synthetic &lt;study&gt;</title>" in html
    for section in ("Verdict", "Task: rotten-tomatoes", "Task: wiki-topics", "Labels saved",
                    "Pre-training and probes", "Confusion matrices", "Contamination", "Compute",
                    "Failed runs", "Notes", "Configuration"):
        assert f"{section}" in html, section
    # Verdicts come before the first task section.
    assert html.index("paired t-test p = 0.015") < html.index("Task: rotten-tomatoes")
    # User strings are escaped; nothing executable or external.
    # the one script is ours (the plots' hover tips): the note's script is text
    assert html.count("<script") == 1 and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "NaN loss &lt;at step 7&gt;" in html
    assert not re.search(r"https?:", html) and "<link" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(?!data:image/png;base64,)[a-z]+:""", html)
    # every plot inline SVG: efficiency x2, loss + probes, confusion x6, compute
    assert html.count('class="plot"') == html.count("<svg") == 2 + 2 + 6 + 1
    # Contamination: the leaked task is flagged in red, the clean one is not.
    flagged = re.findall(r'<tr class="flag"><td>([^<]+)</td>', html)
    assert flagged == ["rotten-tomatoes"]
    assert "<pre>name: synthetic\nbudgets: [32, all]\n</pre>" in html
    assert "41k" in html and "3.2 TFLOP" in html  # pre-training tokens and FLOPs, human units


def test_missing_metric_is_a_user_error(tmp_path):
    with pytest.raises(PretuneError, match="'mcc' is in no result row"):
        write_report(tmp_path, name="x", results=synthetic_results(), metric="mcc")


def test_all_failed_still_writes_a_report(tmp_path):
    rows = [{"task": "t", "start": s, "strategy": "full", "budget": -1, "budget_label": "all",
             "seed": 0, "status": "failed", "error": "OOM"} for s in ("scratch", "pretrained")]
    paths = write_report(tmp_path, name="broken", results=rows, metric="macro_f1")
    html = paths["html"].read_text()
    assert html.count("OOM") == 2 and "No paired comparison" in html


def test_partial_inputs_probes_without_score_and_history_without_tokens(tmp_path):
    rows = [r for r in synthetic_results() if r["task"] == "rotten-tomatoes"]
    pretrain = {"history": [{"step": s, "train_loss": 5.0 - s / 10} for s in range(1, 6)],
                "corpus": "wiki-summaries"}
    probes = [{"task": "rotten-tomatoes", "checkpoint": "bert-mini", "tokens": 0, "score": 0.51,
               "metric": "macro_f1"},
              {"task": "rotten-tomatoes", "checkpoint": "/x/checkpoints/step-50", "tokens": 6400,
               "score": None, "metric": "macro_f1"}]
    paths = write_report(tmp_path, name="partial", results=rows, metric="accuracy",
                         pretrain=pretrain, probes=probes)
    html = paths["html"].read_text()
    assert "Pre-training on wiki-summaries" in html and "<td>step-50</td>" in html
    assert "accuracy on rotten-tomatoes" in html
    assert (paths["plots"] / "pretrain_loss.png").stat().st_size > 1000


def test_plot_files_of_non_ascii_tasks_do_not_collide(tmp_path):
    rows = []
    for task in ("情感", "新闻"):
        for r in synthetic_results():
            if r["task"] == "rotten-tomatoes":
                rows.append(r | {"task": task})
    paths = write_report(tmp_path, name="zh", results=rows, metric="macro_f1")
    effs = sorted(p.name for p in paths["plots"].glob("efficiency_*.svg"))
    assert len(effs) == 2 and effs[0] != effs[1]
    md = paths["md"].read_text()
    assert md.count("](plots/efficiency_") == 2 and all(f"plots/{e[:-4]}.png" in md for e in effs)
    for ext in ("png", "svg", "pdf"):  # every plot in all three formats
        assert len(list(paths["plots"].glob(f"*.{ext}"))) == len(list(paths["plots"].glob("*.png")))
