"""Task metrics. Thin wrappers over scikit-learn/scipy: we choose and name, never re-implement.

Every function returns a flat-ish dict: scalar metrics at the top level (what reports and
model selection use), plus ``per_class`` / ``confusion_matrix`` / ``notes`` for humans.
"""

from __future__ import annotations

import math
import re
import string
from typing import Any

import numpy as np
from sklearn import metrics as skm

# Selection metrics where smaller is better (everything else is maximised).
LOWER_IS_BETTER = {"mse", "mae", "rmse", "hamming_loss", "log_loss", "loss", "perplexity"}
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def default_metric(task_type: str) -> str:
    if task_type == "token":
        return "f1"  # entity-level micro F1, the number NER papers report
    return "r2" if task_type == "regression" else "macro_f1"


def metric_mode(name: str) -> str:
    return "min" if name in LOWER_IS_BETTER else "max"


def _prf(y_true: np.ndarray, y_pred: np.ndarray, avg: str, labels: list[int]) -> tuple:
    return skm.precision_recall_fscore_support(
        y_true, y_pred, average=avg, labels=labels, zero_division=0
    )[:3]


def classification_metrics(
    y_true: np.ndarray | list, probs: np.ndarray | list, labels: list[str]
) -> dict[str, Any]:
    """Metrics for single-label (``y_true`` int ids (N,), ``probs`` (N, C)) or multi-label
    (``y_true`` multi-hot (N, C), ``probs`` sigmoid outputs (N, C)) classification."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=float)
    if y.ndim == 2:
        return multilabel_metrics(y, p, labels)
    ids = list(range(len(labels)))
    pred = p.argmax(axis=1)
    out: dict[str, Any] = {"accuracy": float(skm.accuracy_score(y, pred))}
    for avg in ("macro", "micro", "weighted"):
        prec, rec, f1 = _prf(y, pred, avg, ids)
        out[f"{avg}_precision"], out[f"{avg}_recall"], out[f"{avg}_f1"] = (
            float(prec), float(rec), float(f1))
    prec, rec, f1, sup = skm.precision_recall_fscore_support(
        y, pred, labels=ids, zero_division=0)
    out["per_class"] = {
        name: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
               "support": int(sup[i])}
        for i, name in enumerate(labels)
    }
    out["mcc"] = float(skm.matthews_corrcoef(y, pred))
    out["confusion_matrix"] = skm.confusion_matrix(y, pred, labels=ids).tolist()
    notes: list[str] = []
    present = np.unique(y)
    if len(labels) == 2:
        if len(present) == 2:
            out["roc_auc"] = float(skm.roc_auc_score(y, p[:, 1]))
        else:
            notes.append("roc_auc skipped: only one class in y_true")
    elif len(present) == len(labels):
        # One-vs-rest macro AUC needs rows that sum to 1 (softmax outputs do, up to rounding).
        norm = p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
        out["roc_auc"] = float(skm.roc_auc_score(y, norm, multi_class="ovr", average="macro",
                                                 labels=ids))
    else:
        missing = [labels[i] for i in ids if i not in set(present.tolist())]
        notes.append(f"roc_auc skipped: classes absent from y_true: {', '.join(missing[:5])}")
    if notes:
        out["notes"] = notes
    return out


def multilabel_metrics(
    y_true: np.ndarray, probs: np.ndarray, labels: list[str], threshold: float = 0.5
) -> dict[str, Any]:
    """Multi-label: ``y_true`` multi-hot (N, C), ``probs`` independent sigmoids (N, C)."""
    y = np.asarray(y_true).astype(int)
    pred = (np.asarray(probs) >= threshold).astype(int)
    out: dict[str, Any] = {
        "subset_accuracy": float(skm.accuracy_score(y, pred)),
        "micro_f1": float(skm.f1_score(y, pred, average="micro", zero_division=0)),
        "macro_f1": float(skm.f1_score(y, pred, average="macro", zero_division=0)),
        "hamming_loss": float(skm.hamming_loss(y, pred)),
    }
    per = skm.f1_score(y, pred, average=None, zero_division=0)
    out["per_class"] = {name: {"f1": float(per[i]), "support": int(y[:, i].sum())}
                        for i, name in enumerate(labels)}
    if 0 < y.sum() < y.size:
        out["roc_auc_micro"] = float(skm.roc_auc_score(y, probs, average="micro"))
    else:
        out["notes"] = ["roc_auc_micro skipped: y_true is all 0 or all 1"]
    return out


def regression_metrics(y_true: np.ndarray | list, y_pred: np.ndarray | list) -> dict[str, Any]:
    from scipy import stats

    y = np.asarray(y_true, dtype=float).reshape(-1)
    p = np.asarray(y_pred, dtype=float).reshape(-1)
    out: dict[str, Any] = {
        "mse": float(skm.mean_squared_error(y, p)),
        "mae": float(skm.mean_absolute_error(y, p)),
        "r2": float(skm.r2_score(y, p)) if len(y) > 1 else float("nan"),
    }
    constant = len(y) < 2 or np.ptp(y) == 0 or np.ptp(p) == 0
    out["pearson"] = float("nan") if constant else float(stats.pearsonr(y, p)[0])
    out["spearman"] = float("nan") if constant else float(stats.spearmanr(y, p)[0])
    if constant:
        out["notes"] = ["pearson/spearman undefined: constant targets or predictions"]
    return out


def tagging_metrics(y_true: list[list[str]], y_pred: list[list[str]]) -> dict[str, Any]:
    """Entity-level precision / recall / F1 with seqeval in strict IOB2 mode (an entity counts
    only with its exact span and type; micro = over all entities, macro = mean over types),
    plus token accuracy. ``per_class`` is per entity type."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    out: dict[str, Any] = {}
    tokens = [(t, p) for ts, ps in zip(y_true, y_pred, strict=True)
              for t, p in zip(ts, ps, strict=True)]
    report = classification_report(y_true, y_pred, mode="strict", scheme=IOB2,
                                   output_dict=True, zero_division=0)
    micro, macro = report.get("micro avg", {}), report.get("macro avg", {})
    out["f1"] = float(micro.get("f1-score", 0.0))
    out["precision"] = float(micro.get("precision", 0.0))
    out["recall"] = float(micro.get("recall", 0.0))
    out["macro_f1"] = float(macro.get("f1-score", 0.0))
    out["token_accuracy"] = float(np.mean([t == p for t, p in tokens])) if tokens else 0.0
    out["entities"] = int(micro.get("support", 0))
    out["per_class"] = {
        k: {"precision": float(v["precision"]), "recall": float(v["recall"]),
            "f1": float(v["f1-score"]), "support": int(v["support"])}
        for k, v in report.items() if not k.endswith(" avg")}
    if not out["entities"]:
        out["notes"] = ["no entities in y_true: entity scores are 0 by definition"]
    return out


class _CharTokenizer:
    """ROUGE tokens for Chinese/Japanese/Korean: each CJK character, and runs of other word
    characters (rouge-score's default keeps only [a-z0-9] and would score CJK text 0)."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+",
                          text.lower())


class _WordTokenizer:
    """ROUGE tokens for other non-Latin scripts (Cyrillic, Greek, Arabic, ...): lower-cased
    runs of Unicode word characters, unstemmed."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"[^\W_]+", text.lower())


def _scorer(types: list[str], refs: list[str]) -> Any:
    from rouge_score import rouge_scorer  # loads nltk (~2 s): only when text is scored

    sample = refs[:200]
    if any(_CJK.search(r) for r in sample):
        return rouge_scorer.RougeScorer(types, tokenizer=_CharTokenizer())
    if _mostly_non_latin(sample):
        return rouge_scorer.RougeScorer(types, tokenizer=_WordTokenizer())
    return rouge_scorer.RougeScorer(types, use_stemmer=True)


def _mostly_non_latin(texts: list[str]) -> bool:
    """More letters outside ASCII than inside (rouge-score's default keeps only a-z0-9)."""
    letters = "".join(texts)
    ascii_n = len(re.findall(r"[a-zA-Z]", letters))
    other = len(re.findall(r"[^\W\d_]", letters)) - ascii_n
    return other > ascii_n


def rouge_l_each(refs: list[str], preds: list[str]) -> list[float]:
    """ROUGE-L F-measure of each (reference, prediction) pair."""
    scorer = _scorer(["rougeL"], refs)
    return [float(scorer.score(r, p)["rougeL"].fmeasure) for r, p in zip(refs, preds, strict=True)]


def rouge_l(refs: list[str], preds: list[str]) -> float:
    return float(np.mean(rouge_l_each(refs, preds))) if refs else 0.0


def _normalise(text: str) -> str:
    return " ".join(text.lower().strip().strip(string.punctuation + "\u3002\uff0c").split())


def generation_metrics(refs: list[str], preds: list[str], nll: float | None = None,
                       tokens: int | None = None) -> dict[str, Any]:
    """ROUGE-1/2/L F-measure (rouge-score, Porter stemming; CJK by character), corpus BLEU and
    chrF (sacrebleu; ``zh`` tokenisation for CJK), exact match after lower-casing and trimming
    punctuation — all in [0, 1] like the other metrics — plus the mean output length in words,
    and (given the summed target NLL and its token count) loss and perplexity."""
    import sacrebleu

    out: dict[str, Any] = {}
    if refs:
        scorer = _scorer(["rouge1", "rouge2", "rougeL"], refs)
        scores = [scorer.score(r, p) for r, p in zip(refs, preds, strict=True)]
        for k in ("rouge1", "rouge2", "rougeL"):
            out[k] = float(np.mean([s[k].fmeasure for s in scores]))
        cjk = any(_CJK.search(r) for r in refs[:200])
        out["bleu"] = float(sacrebleu.corpus_bleu(preds, [refs],
                                                  tokenize="zh" if cjk else "13a").score) / 100
        out["chrf"] = float(sacrebleu.corpus_chrf(preds, [refs]).score) / 100
        out["exact_match"] = float(np.mean([_normalise(r) == _normalise(p)
                                            for r, p in zip(refs, preds, strict=True)]))
        out["gen_words"] = float(np.mean([len(p.split()) for p in preds]))
    if nll is not None and tokens:
        out["loss"] = float(nll / tokens)
        out["perplexity"] = float(math.exp(min(out["loss"], 50.0)))
    if refs and not any(p.strip() for p in preds):
        out["notes"] = ["every output is empty: the model stops at once (check the prompt and "
                        "that targets end with the end-of-sequence token)"]
    return out


def task_metrics(task_type: str, y_true: Any, outputs: Any, labels: list[str]) -> dict[str, Any]:
    """Dispatch on task type; ``outputs`` are probabilities (classification) or values."""
    if task_type == "regression":
        return regression_metrics(y_true, outputs)
    return classification_metrics(y_true, outputs, labels)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def format_table(metrics: dict[str, Any]) -> str:
    """Human table: scalar metrics, then per-class rows, confusion matrix and notes."""
    scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    width = max((len(k) for k in scalars), default=6)
    lines = [f"{k:<{width}}  {_fmt(v)}" for k, v in scalars.items()]
    per = metrics.get("per_class")
    if per:
        cols = list(next(iter(per.values())).keys())
        name_w = max(8, *(len(n) for n in per))
        lines.append("")
        lines.append(f"{'class':<{name_w}}  " + "  ".join(f"{c:>9}" for c in cols))
        for name, row in per.items():
            lines.append(f"{name:<{name_w}}  " + "  ".join(f"{_fmt(row[c]):>9}" for c in cols))
    cm = metrics.get("confusion_matrix")
    if cm and len(cm) <= 12:
        lines.append("")
        lines.append("confusion matrix (rows = true, columns = predicted)")
        cell = max(len(str(x)) for row in cm for x in row) + 1
        lines.extend("".join(f"{x:>{cell}}" for x in row) for row in cm)
    for note in metrics.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
