"""Token classification: NER, word segmentation, POS tagging — one BIO tag per word (or per
character for Chinese).

Reading, BIO checks, splits and budgets live in ``pretune.data.tags``; this module adds the
kind's parts: word-level tags aligned to sub-word tokens (the first sub-word of a word carries
its tag, the rest are ignored by the loss unless ``label_all_subwords``), an
``AutoModelForTokenClassification`` head, cross-entropy over tokens, per-word probabilities as
outputs, seqeval entity metrics (strict IOB2), the saved directory (works in
``pipeline("token-classification", aggregation_strategy="simple")``), and ``predict``'s JSONL of
the entities found in each input, with character offsets.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pretune.config import FinetuneConfig, TagTaskConfig, apply_overrides
from pretune.data.batches import Encoded, LabeledBatches, sorted_batches
from pretune.data.builtin import is_builtin
from pretune.data.rows import open_text
from pretune.data.split_ids import scored_rows
from pretune.data.tags import (
    TagSplit,
    TagTask,
    apply_tag_budget,
    load_tag_task,
    read_tags,
    task_name,
    text_tokens,
)
from pretune.errors import PretuneError
from pretune.evaluate.examples import bio_entities, cut
from pretune.evaluate.metrics import tagging_metrics
from pretune.models.registry import load_model, load_tokenizer_for
from pretune.models.start import Start
from pretune.tasks.base import TASK_FILE, Loaded, Saved, TaskKind, read_info


@dataclass
class TagInputs:
    """Sub-word inputs of tagged sentences: ids, per-position label ids (-100 = not scored)
    and, per sentence, the position of each word's first sub-word (-1: cut by max_length)."""

    enc: Encoded
    labels: list[list[int]]
    first: list[list[int]]
    truncated: int  # sentences with words cut off by max_length


@dataclass(frozen=True)
class TagProcessor:
    """What turns tagged sentences into model inputs: the tokenizer and the tag list."""

    tokenizer: Any
    labels: list[str]

    def save_pretrained(self, path: Path) -> None:
        self.tokenizer.save_pretrained(path)


def encode_tagged(tokenizer: Any, split: TagSplit, labels: list[str], max_length: int,
                  label_all_subwords: bool = False) -> TagInputs:
    """Align word tags to sub-word tokens (``is_split_into_words``)."""
    index = {t: i for i, t in enumerate(labels)}
    if not len(split):
        return TagInputs(Encoded([], None, 0), [], [], 0)
    try:
        enc = tokenizer(split.tokens, is_split_into_words=True, truncation=True,
                        max_length=max_length)
    except (ValueError, TypeError, AssertionError) as e:
        raise PretuneError(f"this tokenizer cannot take pre-split words ({str(e)[:100]}); token "
                           "classification needs an encoder start (BERT-style tokenizer)") from None
    out_labels, firsts, truncated = [], [], 0
    for i, tags in enumerate(split.tags):
        word_ids = enc.word_ids(i)
        first = [-1] * len(tags)
        row = []
        prev = None
        for pos, wid in enumerate(word_ids):
            if wid is None:
                row.append(-100)
            elif wid != prev:
                first[wid] = pos
                row.append(index[tags[wid]])
            elif label_all_subwords:  # a continuation of the word: its I- tag
                tag = tags[wid]
                row.append(index["I-" + tag[2:]] if tag != "O" else index["O"])
            else:
                row.append(-100)
            prev = wid
        truncated += int(bool(first) and first[-1] < 0)
        out_labels.append(row)
        firsts.append(first)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    types = enc.get("token_type_ids")
    return TagInputs(Encoded(list(enc["input_ids"]), list(types) if types is not None else None,
                             int(pad)), out_labels, firsts, truncated)


def decode_entities(tags: list[str], spans: list[tuple[int, int]], text: str,
                    scores: list[float]) -> list[dict[str, Any]]:
    """BIO tags of words at character ``spans`` -> entities (an I- after O starts one)."""
    out: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for tag, (a, b), score in zip(tags, spans, scores, strict=True):
        kind = tag[2:] if tag != "O" else None
        if kind is not None and tag.startswith("I-") and cur is not None and cur["type"] == kind:
            cur["end"], cur["_scores"] = b, [*cur["_scores"], score]
            continue
        if cur is not None:
            out.append(cur)
        cur = {"type": kind, "start": a, "end": b, "_scores": [score]} if kind else None
    if cur is not None:
        out.append(cur)
    for e in out:
        e["text"] = text[e["start"]:e["end"]]
        e["score"] = round(float(np.mean(e.pop("_scores"))), 6)
    return out


class TokenClassification(TaskKind):
    name = "token-classification"
    modality = "text"
    pipeline_tag = "token-classification"
    auto_class = "AutoModelForTokenClassification"
    peft_task_type = "TOKEN_CLS"
    example_word = "sentences"

    # ------------------------------------------------------------------ data

    def load(self, cfg: FinetuneConfig, start: Start | None = None) -> TagTask:
        return load_tag_task(cfg.task, seed=cfg.train.seed)

    def with_budget(self, task: TagTask, budget: int | None, seed: int) -> TagTask:
        return apply_tag_budget(task, budget, seed)

    def pool(self, task: TagTask) -> TagSplit:
        return TagSplit.concat(task.train, task.val)

    def refold(self, task: TagTask, train: TagSplit, val: TagSplit, fold: int, k: int
               ) -> TagTask:
        return replace(task, train=train, val=val, info={**task.info, "fold": fold, "k": k})

    def fold_labels(self, split: TagSplit) -> list[Any]:
        return split.tags

    def default_metric(self, task: TagTask) -> str:
        return "f1"

    def metrics(self, task: TagTask, split: TagSplit, outputs: np.ndarray) -> dict[str, Any]:
        pred = [[task.labels[int(j)] for j in np.argmax(p, axis=1)] if len(p) else []
                for p in outputs]
        return tagging_metrics(split.tags, pred)

    def example_records(self, task: TagTask, split: TagSplit, outputs: np.ndarray
                        ) -> list[dict[str, Any]]:
        """Per sentence: its entities, gold and predicted; score 1 when they are the same."""
        join = "" if task.char_level else " "
        recs = []
        for toks, gold, p in zip(split.tokens, split.tags, outputs, strict=True):
            pred = [task.labels[int(j)] for j in np.argmax(p, axis=1)] if len(p) else []
            want, got = bio_entities(toks, gold, join), bio_entities(toks, pred, join)
            recs.append({"text": cut(join.join(toks)), "true": "; ".join(want) or "(none)",
                         "pred": "; ".join(got) or "(none)", "p": None,
                         "score": float(want == got)})
        return recs

    def trivial(self, task: TagTask) -> tuple[str, np.ndarray]:
        o = task.labels.index("O")
        out = np.empty(len(task.test), dtype=object)
        for i, toks in enumerate(task.test.tokens):
            out[i] = np.zeros((len(toks), task.num_labels))
            out[i][:, o] = 1.0
        return "all-O", out

    def metric_names(self, task: TagTask) -> set[str]:
        return {"f1", "precision", "recall", "macro_f1", "token_accuracy", "entities"}

    # ------------------------------------------------------------------ model

    def load_model(self, cfg: FinetuneConfig, task: TagTask, start: Start) -> Loaded:
        tokenizer = load_tokenizer_for(cfg.model, cfg.tokenizer, start=start)
        torch.manual_seed(cfg.train.seed)  # the new head and random-init starts depend on it
        model = load_model(cfg.model, "token", tokenizer, start=start, num_labels=task.num_labels,
                           id2label=dict(enumerate(task.labels)))
        return Loaded(model, TagProcessor(tokenizer, task.labels))

    def encode(self, processor: TagProcessor, split: TagSplit, task_cfg: TagTaskConfig
               ) -> TagInputs:
        return encode_tagged(processor.tokenizer, split, processor.labels, task_cfg.max_length,
                             task_cfg.label_all_subwords)

    def train_batches(self, task: TagTask, processor: TagProcessor, cfg: FinetuneConfig
                      ) -> LabeledBatches:
        tokenizer = processor.tokenizer
        inputs = self.encode(processor, task.train, cfg.task)
        if inputs.truncated:
            print(f"note: {inputs.truncated} of {len(task.train)} training sentences are longer "
                  f"than task.max_length={cfg.task.max_length} tokens; their last words are not "
                  "trained on (and predicted O when scored)", file=sys.stderr)
        mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None \
            else tokenizer.unk_token_id
        return LabeledBatches(inputs.enc, inputs.labels, "token", cfg.train.batch_size,
                              seed=cfg.train.seed, augment=cfg.augment,
                              special_ids=set(tokenizer.all_special_ids), mask_id=mask_id)

    def loss_fn(self, task: TagTask, cfg: FinetuneConfig) -> Any:
        weight = None
        if cfg.class_weights:  # inverse tag frequency over the training tokens
            counts = np.bincount([task.labels.index(t) for seq in task.train.tags for t in seq],
                                 minlength=task.num_labels).astype(float)
            weight = torch.tensor(counts.sum() / (task.num_labels * np.clip(counts, 1, None)),
                                  dtype=torch.float32)

        def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            logits = model(**inputs).logits.float()  # (B, T, C)
            w = weight.to(logits.device) if weight is not None else None
            return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                               batch["labels"].reshape(-1), weight=w,
                                               ignore_index=-100)

        return loss_fn

    @torch.no_grad()
    def outputs(self, model: nn.Module, inputs: TagInputs, task: TagTask, batch_size: int,
                device: torch.device) -> np.ndarray:
        """Per sentence, (words, labels) probabilities; a word cut by max_length is O (p = 1)."""
        was = model.training
        model.eval()
        out = np.empty(len(inputs.first), dtype=object)
        o = task.labels.index("O")
        for idx, batch in sorted_batches(inputs.enc, batch_size):
            batch = {k: v.to(device) for k, v in batch.items()}
            probs = model(**batch).logits.float().softmax(-1).cpu().numpy()  # (B, T, C)
            for row, i in enumerate(idx):
                first = np.asarray(inputs.first[i], dtype=np.int64)
                p = np.zeros((len(first), task.num_labels))
                p[:, o] = 1.0
                kept = first >= 0
                p[kept] = probs[row, first[kept]]
                out[i] = p
        model.train(was)
        return out

    # ------------------------------------------------------------------ export

    def save(self, model: nn.Module, processor: TagProcessor, path: Path, cfg: FinetuneConfig,
             task: TagTask, extra: dict[str, Any] | None = None) -> None:
        model.save_pretrained(path, safe_serialization=True)
        processor.save_pretrained(path)
        info = {"kind": self.name, "task": task.name, "labels": task.labels,
                "char_level": task.char_level, "max_length": cfg.task.max_length,
                "strategy": cfg.strategy.name, "start": cfg.model.name,
                "task_config": cfg.task.model_dump(mode="json"), **(extra or {})}
        (path / TASK_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False))

    def card_facts(self, cfg: FinetuneConfig, task: TagTask) -> list[tuple[str, Any]]:
        level = "characters" if task.char_level else "words"
        return [("task", f"`{cfg.task.path}` (BIO over {level}; entity types: "
                         f"{', '.join(task.entity_types)})"),
                ("all-O baseline token accuracy", f"{task.majority_baseline:.4f}")]

    # ------------------------------------------------------------------ saved models

    def open_saved(self, path: Path) -> Saved:
        from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

        config = AutoConfig.from_pretrained(path)
        if not any(a.endswith("ForTokenClassification") for a in config.architectures or []):
            raise PretuneError(f"{path} holds a {config.model_type} model, not a token "
                               "classifier; pass the model dir of a token-classification run")
        info = read_info(path)
        labels = [config.id2label[i] for i in range(config.num_labels)]
        model = AutoModelForTokenClassification.from_pretrained(path, use_safetensors=True)
        empty = TagSplit([], [])
        task = TagTask(info.get("task", path.name), labels, empty, empty, empty,
                       bool(info.get("char_level", False)))
        return Saved(path, model, TagProcessor(AutoTokenizer.from_pretrained(path), labels), task,
                     info)

    def _task_config(self, saved: Saved, data: str, overrides: list[str]) -> TagTaskConfig:
        keys = ("split_seed", "test_fraction", "test_size", "val_fraction", "max_length",
                "char_level", "tokens_field", "tags_field", "text_field", "spans_field")
        base = {k: v for k, v in (saved.info.get("task_config") or {}).items() if k in keys}
        base["path"] = data
        items = [o.removeprefix("task.") for o in overrides]
        return TagTaskConfig.model_validate(apply_overrides(base, items))

    def read_labeled(self, saved: Saved, data: str, overrides: list[str]
                     ) -> tuple[TagSplit, TagInputs, str]:
        every = "rows=all" in overrides  # on the run's own file: its test sentences only
        cfg = self._task_config(saved, data, [o for o in overrides
                                              if o.split("=", 1)[0] != "rows"])
        split = load_tag_task(cfg).test if is_builtin(data) else \
            scored_rows(saved.path, data, read_tags(data, cfg), every)
        unknown = sorted({t for seq in split.tags for t in seq} - set(saved.task.labels))
        if unknown:
            raise PretuneError(f"{data} has tags the model was not trained on: "
                               f"{', '.join(unknown[:10])} (model tags: "
                               f"{', '.join(saved.task.labels[:20])})")
        return split, self.encode(saved.processor, split, cfg), task_name(cfg)

    def predict(self, saved: Saved, input: str, output: Path, overrides: list[str],
                device: torch.device) -> int:
        """JSONL, one line per input: its text, the entities found (text, type, start, end,
        mean word probability), and the word-level tags."""
        if is_builtin(input):
            raise PretuneError(f"predict reads a .txt / .jsonl / CoNLL file, not {input}")
        cfg = self._task_config(saved, input, overrides)
        char = saved.task.char_level if cfg.char_level == "auto" else bool(cfg.char_level)
        texts, words, spans = _read_inputs(Path(input), cfg, char)
        split = TagSplit(words, [["O"] * len(w) for w in words])
        saved.model.to(device)
        probs = self.outputs(saved.model, self.encode(saved.processor, split, cfg), saved.task,
                             self.infer_batch_size, device)
        with open(output, "w", encoding="utf-8") as f:
            for text, sp, p in zip(texts, spans, probs, strict=True):
                tags = [saved.task.labels[int(j)] for j in np.argmax(p, axis=1)]
                ents = decode_entities(tags, sp, text, [float(x) for x in p.max(axis=1)])
                f.write(json.dumps({"text": text, "entities": ents, "tags": tags},
                                   ensure_ascii=False) + "\n")
        return len(texts)


def _read_inputs(path: Path, cfg: TagTaskConfig, char_level: bool
                 ) -> tuple[list[str], list[list[str]], list[list[tuple[int, int]]]]:
    """Texts to tag, their words and the words' character spans: plain text (one input per
    line), jsonl (a text or a token list per line), or a CoNLL file (its tags are ignored)."""
    if not path.is_file():
        raise PretuneError(f"input file {path} not found")
    name = path.name.lower()
    texts, words, spans = [], [], []

    def add_tokens(toks: list[str]) -> None:
        sep = "" if char_level else " "
        text, sp, pos = "", [], 0
        for t in toks:
            if text:
                text += sep
                pos += len(sep)
            sp.append((pos, pos + len(t)))
            text += t
            pos += len(t)
        texts.append(text)
        words.append(list(toks))
        spans.append(sp)

    if name.endswith((".conll", ".conllu", ".bio", ".iob", ".iob2")):
        for toks in read_tags(str(path), cfg).tokens:
            add_tokens(toks)
        return texts, words, spans
    with open_text(path, cfg.encoding) as f:
        for line in f:
            if not line.strip():
                continue
            if name.endswith((".jsonl", ".json")):
                obj = json.loads(line)
                if cfg.tokens_field in obj:
                    add_tokens([str(t) for t in obj[cfg.tokens_field]])
                    continue
                text = str(obj.get(cfg.text_field, ""))
            else:
                text = line.rstrip("\r\n")
            toks, sp = text_tokens(text, char_level)
            texts.append(text)
            words.append(toks)
            spans.append(sp)
    return texts, words, spans
