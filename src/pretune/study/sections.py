"""The report's secondary sections: confusion matrices, example generations, contamination."""

from __future__ import annotations

from pretune.study import plots
from pretune.study.render import Block, slug
from pretune.study.stats import LOWER_IS_BETTER, metric_name
from pretune.study.units import budget, first_order, maybe_json, score


def confusion_blocks(rows: list[dict], metric: str, tasks: list[str]) -> list[Block]:
    """Best run per start at the task's largest budget that has a confusion matrix."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    blocks: list[Block] = []
    for task in tasks:
        have = [r for r in rows if r["task"] == task and r.get("status") == "ok"
                and maybe_json(r.get("confusion")) and r.get(metric) is not None]
        if not have:
            continue
        top = max(r["budget"] for r in have)
        imgs = []
        for start in first_order([r["start"] for r in have]):
            cands = [r for r in have if r["start"] == start and r["budget"] == top]
            if not cands:
                continue
            best = max(cands, key=lambda r: sign * float(r[metric]))
            title = (f"{task} · {start} ({best['strategy']}, seed {best.get('seed')}): "
                     f"{metric_name(metric)} {score(float(best[metric]), metric)}")
            imgs.append(plots.confusion_heatmap(maybe_json(best["confusion"]),
                                                maybe_json(best.get("labels")) or [], title,
                                                f"confusion_{slug(task)}_{slug(start)}"))
        label = next(r["budget_label"] for r in have if r["budget"] == top)
        blocks += [("h3", f"{task} at {budget({'budget': top, 'budget_label': label})} labels"),
                   ("figs", imgs)]
    return blocks


def examples_blocks(rows: list[dict], metric: str, task: str) -> list[Block]:
    """Generation: the same test inputs, the reference and each start x strategy's output (its
    best run at its largest budget), side by side."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    have = [r for r in rows if r["task"] == task and r.get("status") == "ok"
            and maybe_json(r.get("examples")) and r.get(metric) is not None]
    if not have:
        return []
    runs = []
    for key in first_order([f"{r['start']} · {r['strategy']}" for r in have]):
        cands = [r for r in have if f"{r['start']} · {r['strategy']}" == key]
        top = max(r["budget"] for r in cands)
        best = max((r for r in cands if r["budget"] == top), key=lambda r: sign * float(r[metric]))
        labels = best["budget_label"] if best["budget_label"] == "zero-shot" else budget(best)
        runs.append((f"{key} ({labels})", maybe_json(best["examples"])))
    first = runs[0][1]
    body = [[str(ex["input"]), str(ex["target"]),
             *(str(r[i]["generated"]) if i < len(r) else "–" for _, r in runs)]
            for i, ex in enumerate(first)]
    return [("h3", f"{task}: example generations (best run per start and strategy, largest "
                   "budget; the first test inputs)"),
            ("table", ["input", "reference", *(name for name, _ in runs)], body, [])]



def contamination_section(contamination: list[dict]) -> tuple[str, list[Block]]:
    body, cls = [], []
    if all(c.get("kind") == "image" for c in contamination):
        for c in contamination:
            ex = "; ".join(f"test #{e['id']} = pre-training #{e['match']}"
                           for e in c.get("examples", [])[:3])
            body.append([str(c.get("task", "")), str(c["test_examples"]), str(c["affected"]),
                         f"{100 * c['fraction']:.2f}%", "FLAGGED" if c["flag"] else "ok", ex])
            cls.append("flag" if c["flag"] else "")
        return ("Contamination (test images also in the pre-training data)", [
            ("table", ["task", "test images", "also in pre-training", "fraction", "flag",
                       "examples"], body, cls),
            ("p", "A test image counts when it is pixel-identical to a pre-training image once "
                  "both are resized to the task's format; flagged above 1%.", "")])
    held = any(c.get("held_out_docs") is not None for c in contamination)
    for c in contamination:
        ex = "; ".join(f"#{e['id']}: “{e['ngram']}”" for e in c.get("examples", [])[:2])
        row = [str(c.get("task", "")), str(c["n"]), str(c["test_examples"]),
               str(c["checked"]), str(c["short"]), str(c["affected"]),
               f"{100 * c['fraction']:.2f}%", "FLAGGED" if c["flag"] else "ok", ex]
        if held:
            docs = c.get("held_out_docs")
            row.insert(1, "–" if docs is None else f"{docs:,}")
        body.append(row)
        cls.append("flag" if c["flag"] else "")
    headers = ["task", "n", "test examples", "checked", "too short", "affected",
               "affected / checked", "flag", "examples"]
    if held:
        headers.insert(1, "corpus docs held out")
    note = ("Flagged when more than 1% of checkable test examples share an n-gram with the "
            "pre-training corpus; examples shorter than n words cannot be checked (a Chinese "
            "character counts as a word).")
    if held:
        note += (" A task made from the corpus's own source has its test and validation texts "
                 "held out: the corpus documents holding one were dropped before pre-training.")
    return ("Contamination (n-gram overlap of the corpus with test splits)", [
        ("table", headers, body, cls), ("p", note, "")])
