"""Generation: instructions, summaries, headlines, translation — a causal LM (GPT-2, Llama /
SmolLM2) or an encoder-decoder (T5, BART, Marian) learns to write the target after the prompt.

Reading, splits and prompt encoding live in ``pretune.data.pairs``, decoding and target
likelihood in ``pretune.models.generate``; this module is the kind: the LM head of the start,
the loss on target tokens only, outputs = generated text + target NLL, ROUGE / BLEU / chrF /
exact match / perplexity metrics, zero- and few-shot prompting (``strategy.name=prompt``: no
parameter update), the saved directory (works in ``pipeline("text-generation")`` /
``pipeline("text2text-generation")``, decoding defaults in ``generation_config.json``) and
``predict``'s JSONL of generations.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from pretune.config import (
    DecodeConfig,
    FinetuneConfig,
    GenTaskConfig,
    apply_overrides,
    format_validation_error,
)
from pretune.data.batches import Encoded, LabeledBatches
from pretune.data.builtin import is_builtin
from pretune.data.pairs import (
    GenInputs,
    GenSplit,
    GenTask,
    PromptFormat,
    Source,
    apply_gen_budget,
    encode_pairs,
    head_text,
    load_gen_task,
    read_pairs,
    read_sources,
    space_marks_words,
    task_name,
)
from pretune.errors import PretuneError
from pretune.evaluate.examples import cut
from pretune.evaluate.metrics import generation_metrics, rouge_l_each
from pretune.models.archs import objective_for
from pretune.models.generate import (
    generate_texts,
    is_seq2seq,
    lm_batch,
    lm_loss,
    target_nll,
)
from pretune.models.registry import load_model, load_tokenizer_for
from pretune.models.start import Start
from pretune.tasks.base import TASK_FILE, Loaded, Saved, TaskKind, read_info

_LOSS_METRICS = ("loss", "perplexity")
N_EXAMPLES = 5  # test examples kept with the metrics (the study report shows them side by side)
# what a saved model's later inputs are read with (not `format`: new files have their own)
_TASK_KEYS = ("input_field", "target_field", "messages_field", "encoding",
              "max_length", "max_target_length", "split_seed", "test_fraction", "test_size")


@dataclass(frozen=True)
class GenProcessor:
    """What turns (source, target) pairs into model inputs and generations back into text."""

    tokenizer: Any
    fmt: PromptFormat
    seq2seq: bool
    eos_ids: tuple[int, ...]  # generation stops at any of these
    pad_id: int
    max_length: int
    max_target_length: int
    decode: DecodeConfig

    @property
    def eos_id(self) -> int:
        return self.eos_ids[0]

    def save_pretrained(self, path: Path) -> None:
        self.tokenizer.save_pretrained(path)

    def encode(self, split: GenSplit, reserve: int = 0) -> GenInputs:
        return encode_pairs(self.tokenizer, split, self.fmt, self.max_length,
                            self.max_target_length, seq2seq=self.seq2seq, eos_id=self.eos_id,
                            reserve=reserve)


@dataclass
class GenEval:
    """A split ready for evaluation: its encoded pairs and the processor that made them."""

    inputs: GenInputs
    processor: GenProcessor


class GenBatches(LabeledBatches):
    """Length-grouped, shuffled, resumable training batches (the order of ``LabeledBatches``)
    collated by ``lm_batch``: loss on target tokens only."""

    def __init__(self, inputs: GenInputs, processor: GenProcessor, batch_size: int,
                 seed: int) -> None:
        super().__init__(Encoded(inputs.input_ids, None, processor.pad_id), inputs.labels,
                         "generation", batch_size, seed=seed)
        self.seq2seq = processor.seq2seq

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch = self.epoch
        batches = self.order(epoch)
        while self.position < len(batches):
            idx = batches[self.position]
            batch = lm_batch([self.enc.input_ids[i] for i in idx],
                             [self.labels[i] for i in idx], self.enc.pad_id, self.seq2seq)
            self.position += 1
            yield batch
        self.epoch, self.position = epoch + 1, 0


def _eos_pad(tokenizer: Any, model: nn.Module | None, name: str) -> tuple[tuple[int, ...], int]:
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if eos is None:
        raise PretuneError(f"the tokenizer of {name} has no end-of-sequence token (eos_token or "
                           "sep_token), so a generation could never end; use a tokenizer "
                           "with one (GPT-style <|endoftext|>, BERT-style [SEP])")
    ids = [int(eos)]
    cfg_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for e in cfg_eos if isinstance(cfg_eos, list) else [cfg_eos]:
        if e is not None and int(e) not in ids:
            ids.append(int(e))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return tuple(ids), int(pad)


def use_chat(tokenizer: Any, setting: bool | str, seq2seq: bool, name: str) -> bool:
    has = getattr(tokenizer, "chat_template", None) is not None
    if setting is True and not has:
        raise PretuneError(f"task.chat_template=true but {name} has no chat template; set "
                           "task.chat_template=false (the prompt is then the task.template text)")
    return bool(has and not seq2seq) if setting == "auto" else bool(setting)


def target_sep(tokenizer: Any, chat: bool, seq2seq: bool) -> str:
    return " " if not (chat or seq2seq) and space_marks_words(tokenizer) else ""


def context_length(model: nn.Module) -> int | None:
    c = model.config
    return getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None)


def pick_shots(train: GenSplit, shots: int, seed: int) -> tuple[tuple[Source, str], ...]:
    if not shots:
        return ()
    if shots > len(train):
        raise PretuneError(f"task.shots={shots} is more than the {len(train)} training examples")
    idx = np.random.default_rng([seed, 7]).choice(len(train), shots, replace=False)
    return tuple((train.sources[int(i)], train.targets[int(i)]) for i in idx)


class Generation(TaskKind):
    name = "generation"
    modality = "text"
    pipeline_tag = "text-generation"
    auto_class = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    infer_batch_size = 16  # evaluate: LM logits over a 49k vocabulary are large

    # ------------------------------------------------------------------ data

    def load(self, cfg: FinetuneConfig, start: Start | None = None) -> GenTask:
        return load_gen_task(cfg.task, seed=cfg.train.seed)

    def with_budget(self, task: GenTask, budget: int | None, seed: int) -> GenTask:
        return apply_gen_budget(task, budget, seed)

    def pool(self, task: GenTask) -> GenSplit:
        return GenSplit.concat(task.train, task.val)

    def refold(self, task: GenTask, train: GenSplit, val: GenSplit, fold: int, k: int
               ) -> GenTask:
        return replace(task, train=train, val=val, info={**task.info, "fold": fold, "k": k})

    def fold_labels(self, split: GenSplit) -> list[Any]:
        return split.targets

    def default_metric(self, task: GenTask) -> str:
        return "rougeL"

    def metrics(self, task: GenTask, split: GenSplit, outputs: np.ndarray) -> dict[str, Any]:
        texts = [o["text"] for o in outputs]
        nll = float(sum(o["nll"] for o in outputs))
        tokens = int(sum(o["tokens"] for o in outputs))
        if any(o.get("skipped") for o in outputs):  # validation by loss: nothing generated
            return generation_metrics([], [], nll, tokens)
        out = generation_metrics(list(split.targets), texts, nll, tokens)
        out["examples"] = [{"input": head_text(s), "target": t, "generated": g} for s, t, g in
                           zip(split.sources[:N_EXAMPLES], split.targets, texts, strict=False)]
        return out

    def example_records(self, task: GenTask, split: GenSplit, outputs: np.ndarray
                        ) -> list[dict[str, Any]]:
        texts = [str(o["text"]) for o in outputs]
        scores = rouge_l_each(list(split.targets), texts)
        return [{"text": head_text(s, 300), "true": cut(t, 1000), "pred": cut(g, 1000),
                 "p": None, "score": r}
                for s, t, g, r in zip(split.sources, split.targets, texts, scores, strict=True)]

    def trivial(self, task: GenTask) -> tuple[str, np.ndarray]:
        """Copying the input: what a summary or headline must beat to say anything."""
        out = np.empty(len(task.test), dtype=object)
        for i, s in enumerate(task.test.sources):
            text = s if isinstance(s, str) else (s[-1]["content"] if s else "")
            out[i] = {"text": text, "nll": 0.0, "tokens": 0, "skipped": False}
        return "copy input", out

    def metric_names(self, task: GenTask) -> set[str]:
        return {"rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match", "gen_words",
                "loss", "perplexity"}

    # ------------------------------------------------------------------ model

    def load_model(self, cfg: FinetuneConfig, task: GenTask, start: Start) -> Loaded:
        head = {"clm": "clm", "seq2seq": "seq2seq"}.get(start.objective or "")
        if head is None:
            raise PretuneError(
                f"model.name={cfg.model.name} is an encoder ({start.model_type or start.arch}); "
                "generation needs a decoder (gpt-*, builtin:smollm2, a causal-LM dir) or an "
                "encoder-decoder (t5-tiny, t5-mini, a T5/BART/Marian dir)")
        tokenizer = load_tokenizer_for(cfg.model, cfg.tokenizer, start=start)
        torch.manual_seed(cfg.train.seed)  # random-init starts depend on it
        model = load_model(cfg.model, head, tokenizer, start=start)
        n_ctx = context_length(model)
        if head == "clm" and n_ctx and cfg.task.max_length > n_ctx:
            raise PretuneError(f"task.max_length={cfg.task.max_length} exceeds the "
                               f"{n_ctx}-token context of {cfg.model.name}; lower it")
        eos_ids, pad = _eos_pad(tokenizer, model, cfg.model.name)
        model.generation_config.pad_token_id = pad
        t = cfg.task
        seq2seq = head == "seq2seq"
        chat = use_chat(tokenizer, t.chat_template, seq2seq, cfg.model.name)
        fmt = PromptFormat(task.template, chat, t.system,
                           pick_shots(task.train, t.shots, cfg.train.seed),
                           target_sep(tokenizer, chat, seq2seq))
        return Loaded(model, GenProcessor(tokenizer, fmt, seq2seq, eos_ids, pad, t.max_length,
                                          t.max_target_length, t.decode))

    def encode(self, processor: GenProcessor, split: GenSplit, task_cfg: GenTaskConfig
               ) -> GenEval:
        """Evaluation inputs: prompts keep room for what generation adds (not only for the
        reference), so a long input never runs past the model's context."""
        return GenEval(processor.encode(split, reserve=processor.decode.max_new_tokens),
                       processor)

    def train_batches(self, task: GenTask, processor: GenProcessor, cfg: FinetuneConfig
                      ) -> GenBatches:
        inputs = processor.encode(task.train)
        n = len(task.train)
        if inputs.cut_inputs:
            print(f"note: {inputs.cut_inputs} of {n} training inputs were cut to fit "
                  f"task.max_length={cfg.task.max_length} tokens with their target (the "
                  "first tokens kept)", file=sys.stderr)
        if inputs.cut_targets:
            print(f"note: {inputs.cut_targets} of {n} training targets are longer than "
                  f"task.max_target_length={cfg.task.max_target_length} tokens and were cut",
                  file=sys.stderr)
        return GenBatches(inputs, processor, cfg.train.batch_size, cfg.train.seed)

    def loss_fn(self, task: GenTask, cfg: FinetuneConfig) -> Any:
        return lm_loss

    def eval_batch_size(self, cfg: FinetuneConfig) -> int:
        return cfg.task.decode.batch_size  # LM logits are large: the decode batch bounds them

    def outputs(self, model: nn.Module, inputs: GenEval, task: GenTask, batch_size: int,
                device: torch.device, generate: bool = True) -> np.ndarray:
        """Per example: the generated text, its target's summed NLL and token count."""
        p, enc = inputs.processor, inputs.inputs
        nll, count = target_nll(model, enc.input_ids, enc.labels, batch_size, device, p.pad_id)
        texts = generate_texts(model, p.tokenizer, enc.prompts, p.decode, device, p.pad_id,
                               list(p.eos_ids)) if generate else [""] * len(enc.prompts)
        out = np.empty(len(texts), dtype=object)
        for i, text in enumerate(texts):
            out[i] = {"text": text, "nll": float(nll[i]), "tokens": int(count[i]),
                      "skipped": not generate}
        return out

    def val_outputs(self, model: nn.Module, inputs: GenEval, task: GenTask, batch_size: int,
                    device: torch.device, metric: str) -> np.ndarray:
        """Selecting on loss / perplexity needs no generation: validation is one pass then."""
        return self.outputs(model, inputs, task, batch_size, device,
                            generate=metric not in _LOSS_METRICS)

    def prompt_outputs(self, cfg: FinetuneConfig, task: GenTask, start: Start,
                       device: torch.device) -> tuple[np.ndarray, int]:
        """Zero-/few-shot (``task.shots``) generation on the test split, no update."""
        loaded = self.load_model(cfg, task, start)
        loaded.model.to(device)
        out = self.outputs(loaded.model, self.encode(loaded.processor, task.test, cfg.task),
                           task, self.eval_batch_size(cfg), device)
        return out, 0

    # ------------------------------------------------------------------ export

    def save(self, model: nn.Module, processor: GenProcessor, path: Path, cfg: FinetuneConfig,
             task: GenTask, extra: dict[str, Any] | None = None) -> None:
        d = processor.decode
        gc = model.generation_config
        gc.max_new_tokens, gc.num_beams, gc.do_sample = d.max_new_tokens, d.num_beams, d.do_sample
        gc.pad_token_id, gc.eos_token_id = processor.pad_id, list(processor.eos_ids)
        # A checkpoint's own sampling / beam settings would contradict these (transformers
        # refuses to save such a config): set them from the run's decoding, or clear them.
        for key in ("temperature", "top_p", "top_k"):
            setattr(gc, key, getattr(d, key) if d.do_sample else None)
        for key in ("min_p", "typical_p"):
            setattr(gc, key, None)
        if d.num_beams == 1:
            gc.early_stopping, gc.length_penalty = False, 1.0
        model.save_pretrained(path, safe_serialization=True)
        processor.save_pretrained(path)
        info = {"kind": self.name, "task": task.name, "template": processor.fmt.template,
                "chat": processor.fmt.chat, "system": processor.fmt.system,
                "shots": [list(s) for s in processor.fmt.shots],
                "target_sep": processor.fmt.target_sep,
                "seq2seq": processor.seq2seq, "strategy": cfg.strategy.name,
                "start": cfg.model.name, "task_config": cfg.task.model_dump(mode="json"),
                **(extra or {})}
        (path / TASK_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False))

    def card_facts(self, cfg: FinetuneConfig, task: GenTask) -> list[tuple[str, Any]]:
        return [("task", f"`{cfg.task.path}` (generation; prompt template "
                         f"`{json.dumps(task.template)[1:-1]}`)"),
                ("baseline", f"{task.info.get('baseline', 'lead')}: {task.baseline:.4f}")]

    def export_classes(self, model: nn.Module) -> tuple[str, str]:
        if is_seq2seq(model):
            return "AutoModelForSeq2SeqLM", "text2text-generation"
        return self.auto_class, self.pipeline_tag

    # ------------------------------------------------------------------ saved models

    def open_saved(self, path: Path) -> Saved:
        return open_generator(path)

    def task_config(self, saved: Saved, data: str, overrides: list[str]) -> GenTaskConfig:
        """The saved run's reading / decoding settings, with ``overrides`` on top."""
        base = {k: v for k, v in (saved.info.get("task_config") or {}).items()
                if k in (*_TASK_KEYS, "decode")}
        base["path"] = data
        items = [o.removeprefix("task.") for o in overrides]
        try:
            return GenTaskConfig.model_validate(apply_overrides(base, items))
        except ValidationError as e:
            raise PretuneError(format_validation_error(e, "overrides", GenTaskConfig)) from None

    def processor(self, saved: Saved, cfg: GenTaskConfig, overrides: list[str]) -> GenProcessor:
        """The saved processor with overridden lengths, decoding and (when given) prompt."""
        p = saved.processor
        keys = {o.removeprefix("task.").split("=", 1)[0] for o in overrides}
        fmt = p.fmt
        if "template" in keys:
            if "{input}" not in (cfg.template or ""):
                raise PretuneError(f"template={cfg.template!r} must contain {{input}}")
            fmt = replace(fmt, template=cfg.template)
        if "chat_template" in keys:
            fmt = replace(fmt, chat=use_chat(p.tokenizer, cfg.chat_template, p.seq2seq,
                                             str(saved.path)))
        if "system" in keys:
            fmt = replace(fmt, system=cfg.system)
        return replace(p, fmt=fmt, max_length=cfg.max_length,
                       max_target_length=cfg.max_target_length, decode=cfg.decode)

    def read_labeled(self, saved: Saved, data: str, overrides: list[str]
                     ) -> tuple[GenSplit, GenEval, str]:
        cfg = self.task_config(saved, data, overrides)
        split = load_gen_task(cfg).test if is_builtin(data) else read_pairs(data, cfg)
        p = self.processor(saved, cfg, overrides)
        return split, GenEval(p.encode(split), p), task_name(cfg)

    def predict(self, saved: Saved, input: str, output: Path, overrides: list[str],
                device: torch.device) -> int:
        """JSONL, one line per input: the input and the generated text."""
        cfg = self.task_config(saved, input, overrides)
        sources = read_sources(input, cfg)
        p = self.processor(saved, cfg, overrides)
        saved.model.to(device)
        texts = generate_for(saved.model, p, sources, device)
        with open(output, "w", encoding="utf-8") as f:
            for source, text in zip(sources, texts, strict=True):
                f.write(json.dumps({"input": source, "generated": text},
                                   ensure_ascii=False) + "\n")
        return len(texts)


def generate_for(model: nn.Module, p: GenProcessor, sources: list[Source],
                 device: torch.device) -> list[str]:
    """Generations for sources (prompts built like training's, room kept for the output)."""
    enc = p.encode(GenSplit(sources, [""] * len(sources)), reserve=p.decode.max_new_tokens)
    return generate_texts(model, p.tokenizer, enc.prompts, p.decode, device, p.pad_id,
                          list(p.eos_ids))


def open_generator(path: Path) -> Saved:
    """A causal LM or encoder-decoder directory (a generation run's model, builtin:smollm2, any
    HF checkpoint) with its prompt format; a classifier is a one-line error."""
    config = AutoConfig.from_pretrained(path)
    archs = config.architectures or []
    if any(a.endswith(("ForSequenceClassification", "ForTokenClassification")) for a in archs):
        raise PretuneError(f"{path} holds a {archs[0]} (a classifier), which cannot generate "
                           "text; pass a causal-LM or encoder-decoder directory (the model of "
                           "a generation run, builtin:smollm2) or use `pretune predict`")
    try:
        objective = objective_for(config)
    except PretuneError:
        objective = None
    if objective not in ("clm", "seq2seq"):
        raise PretuneError(f"{path} holds a {config.model_type} encoder, which does not "
                           "generate text; pass a causal-LM or encoder-decoder directory")
    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise PretuneError(f"{path} does not load as a generator "
                           f"({str(e).splitlines()[0][:120]})") from None
    tokenizer = AutoTokenizer.from_pretrained(path)
    info = read_info(path)
    task_cfg = GenTaskConfig.model_validate({k: v for k, v in (info.get("task_config") or {})
                                             .items() if k in (*_TASK_KEYS, "decode")})
    eos_ids, pad = _eos_pad(tokenizer, model, str(path))
    chat = info.get("chat")
    chat = use_chat(tokenizer, "auto", seq2seq, str(path)) if chat is None else bool(chat)
    fmt = PromptFormat(info.get("template", "{input}"), chat, info.get("system"),
                       tuple((s, t) for s, t in info.get("shots", [])),
                       info.get("target_sep", target_sep(tokenizer, chat, seq2seq)))
    proc = GenProcessor(tokenizer, fmt, seq2seq, eos_ids, pad, task_cfg.max_length,
                        task_cfg.max_target_length, task_cfg.decode)
    empty = GenSplit([], [])
    task = GenTask(info.get("task", path.name), empty, empty, empty, fmt.template)
    return Saved(path, model, proc, task, info)
