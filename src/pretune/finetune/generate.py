"""``pretune generate``: text from a generation model directory or ``builtin:smollm2``.

Batched (length-sorted, left-padded) generation for a file of inputs, written as JSONL; one
prompt typed on stdin streams its tokens to the terminal instead. The prompt is built as in
training: the saved run's template, chat template, system message and in-context examples
(``pretune_task.json``), or for a plain checkpoint its chat template when it has one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pretune.data.hub import local_dir
from pretune.data.pairs import GenSplit, read_sources
from pretune.errors import PretuneError
from pretune.finetune.predict import check_output
from pretune.models.generate import stream
from pretune.models.overrides import quiet_transformers
from pretune.models.start import resolve_start
from pretune.tasks.generation import Generation, generate_for, open_generator
from pretune.train.runtime import resolve_device


def model_path(model: str) -> Path:
    """A model directory, or the directory behind a builtin start (``builtin:smollm2``)."""
    if model.startswith("builtin:"):
        start = resolve_start(model)
        assert start.path is not None
        return start.path
    path = local_dir(model, "model")  # a dir, or a Hub id's snapshot in the HF cache
    if not (path / "config.json").is_file():
        raise PretuneError(f"{model} is not a model directory (no config.json); pass "
                           "runs/<name>/model of a generation run, or builtin:smollm2")
    return path


def generate(model: str, input: str, output: str | None = None,
             overrides: list[str] = (), overwrite: bool = False) -> int:
    """Generate for every input of ``input`` (a file, or ``-`` for stdin); returns the count."""
    if output is not None:
        check_output(Path(output), input, overwrite)
    kind = Generation()
    with quiet_transformers():
        saved = open_generator(model_path(model))
    cfg = kind.task_config(saved, input, list(overrides))
    proc = kind.processor(saved, cfg, list(overrides))
    sources = read_sources(input, cfg)
    if not sources:
        raise PretuneError(f"{'stdin' if input == '-' else input} holds no inputs")
    device = resolve_device("auto")
    saved.model.to(device)
    if input == "-" and len(sources) == 1 and output is None:  # one prompt: stream it
        enc = proc.encode(GenSplit(sources, [""]), reserve=proc.decode.max_new_tokens)
        stream(saved.model, proc.tokenizer, enc.prompts[0], proc.decode, device, proc.pad_id,
               list(proc.eos_ids))
        return 1
    texts = generate_for(saved.model, proc, sources, device)
    lines = (json.dumps({"input": s, "generated": t}, ensure_ascii=False) + "\n"
             for s, t in zip(sources, texts, strict=True))
    if output is None:
        sys.stdout.writelines(lines)
    else:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            f.writelines(lines)
        print(f"wrote {len(texts)} generations to {out}", file=sys.stderr)
    return len(texts)
