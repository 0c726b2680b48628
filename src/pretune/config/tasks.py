"""Config sections of labeled tasks, one per task kind, tagged by ``kind``; which strategies
make sense for each kind; and how a kind is inferred from the data when a config omits it.

A task config says where the examples are and how to split them. Everything a kind does with
them (reading, batches, model head, loss, metrics, export) lives in ``pretune.tasks.<kind>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from pretune.config.base import TASK_KINDS, Section


def _all_is_none(v: Any) -> Any:
    return None if isinstance(v, str) and v.strip().lower() == "all" else v


# A label budget: a number of training examples, or `all` (= None, every training example).
Budget = Annotated[int | None, BeforeValidator(_all_is_none)]

STRATEGIES = ("full", "linear-probe", "partial", "gradual", "llrd", "lora", "prompt")
# Strategies that make sense for each kind: config checks, the study matrix and the runner all
# read this one table.
KIND_STRATEGIES: dict[str, tuple[str, ...]] = {
    "text-classification": STRATEGIES,
    "image-classification": ("full", "linear-probe", "partial", "gradual", "llrd"),
    "token-classification": ("full", "linear-probe", "partial", "llrd", "lora"),
    # prompt: zero-/few-shot generation with in-context examples, no parameter update
    "generation": ("full", "partial", "llrd", "lora", "prompt"),
}
IMAGE_STRATEGIES = KIND_STRATEGIES["image-classification"]
# Kinds whose linear probe can also be scikit-learn on pooled per-example features.
KIND_SKLEARN_PROBE = ("text-classification", "image-classification")
# builtin task name -> its kind (a builtin the table lacks is read as text classification,
# and its reader names the builtins there are).
BUILTIN_KINDS: dict[str, str] = {
    "rotten-tomatoes": "text-classification",
    "wiki-topics": "text-classification",
    "chn-sentiment": "text-classification",
    "digits": "image-classification",
    "mnist-5k": "image-classification",
    "wnut16": "token-classification",
    "peoples-daily-ner": "token-classification",
    "news-headlines": "generation",
}
# Keys only a generation task has: a task written with them is one.
_GENERATION_KEYS = ("input_field", "target_field", "messages_field", "template", "decode")
_IMAGE_SUFFIXES = (".npz",)
_TAG_SUFFIXES = (".conll", ".conllu", ".bio", ".iob", ".iob2")


def modality_of(kind: str) -> Literal["text", "image"]:
    return "image" if kind.startswith("image-") else "text"


TEXT_SUFFIXES = (".txt", ".text")  # (optionally compressed) text files: one example each
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")


def _bare_name(name: str) -> str:
    """A file name, lower-cased, without a compression suffix."""
    name = name.lower()
    for comp in _COMPRESSED:
        name = name.removesuffix(comp)
    return name


def is_class_folder(path: Path) -> bool:
    """A folder whose sub-folders hold text files (rather than images)."""
    if not path.is_dir():
        return False
    for sub in sorted(q for q in path.iterdir() if q.is_dir()):
        for f in sorted(sub.iterdir())[:20]:
            if f.is_file() and _bare_name(f.name).endswith(TEXT_SUFFIXES):
                return True
    return False


def infer_kind(task: dict[str, Any]) -> str:
    """The kind of a task config that does not name one, from its data: a builtin's own kind;
    ``.npz`` arrays or a folder (of class sub-folders) are images; CoNLL-style files are token
    tags; a task with an input/target field is generation; anything else is text
    classification."""
    if isinstance(task.get("path"), list):  # one text file per class
        return "text-classification"
    path = str(task.get("path") or "")
    if any(k in task for k in _GENERATION_KEYS):
        return "generation"
    if path.startswith("builtin:"):
        return BUILTIN_KINDS.get(path.removeprefix("builtin:"), "text-classification")
    name = _bare_name(path)
    if path and Path(path).expanduser().is_dir():  # class folders of text files, or images
        return "text-classification" if is_class_folder(Path(path).expanduser()) \
            else "image-classification"
    if name.endswith(_IMAGE_SUFFIXES):
        return "image-classification"
    if name.endswith(_TAG_SUFFIXES):
        return "token-classification"
    return "text-classification"


def with_kind(task: Any, default: str | None = None) -> Any:
    """A task given as a path or a mapping, with its ``kind`` filled in."""
    if isinstance(task, str):
        task = {"path": task}
    if isinstance(task, dict) and "kind" not in task:
        task = {**task, "kind": default or infer_kind(task)}
    if isinstance(task, dict) and task["kind"] not in TASK_KINDS:
        raise ValueError(f"task.kind={task['kind']!r}; choose one of: {', '.join(TASK_KINDS)}")
    return task


class TaskConfig(Section):
    """Text classification: ``builtin:rotten-tomatoes``, ``builtin:wiki-topics`` or files
    (csv/tsv/jsonl/parquet); single-label, multi-label, regression, text pairs."""

    kind: Literal["text-classification"] = "text-classification"
    # train file (or the only file), builtin:<name>, one text file per class ([pos.txt,
    # neg.txt] or a glob; one example per line, the label is the file name) or a folder of
    # class folders (one example per file)
    path: str | list[str] = "builtin:rotten-tomatoes"
    validation: str | None = None
    test: str | None = None
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "txt"] = "auto"
    text_field: str = "text"
    text_pair_field: str | None = None
    label_field: str = "label"
    type: Literal["auto", "single_label", "multi_label", "regression"] = "auto"
    label_sep: str = "|"  # multi-label labels inside one cell
    val_fraction: float = Field(0.1, ge=0, lt=0.5)  # when no validation file is given
    test_fraction: float = Field(0.2, ge=0, lt=0.5)  # when no test file is given
    test_size: int | None = Field(None, ge=1)  # absolute test size (wins over test_fraction)
    split_seed: int = 0  # splits are fixed across runs; budgets/seeds vary separately
    budget: Budget = Field(None, ge=1)  # stratified subsample of training examples
    max_length: int = Field(128, ge=8)
    encoding: str = "utf-8"  # of the files (gb18030, cp1252, latin-1, ...)
    # A run dir whose split.json says which rows train / validate / test (the same test rows
    # for runs and studies compared with it); its source files must be these.
    split_from: str | None = None


class TagTaskConfig(Section):
    """Token classification (NER, segmentation, POS): CoNLL-style files (a token and its tag
    per line, a blank line between sentences), jsonl with token and tag lists or with a text
    and character spans, or ``builtin:wnut16`` / ``builtin:peoples-daily-ner``. Tags are BIO."""

    kind: Literal["token-classification"] = "token-classification"
    path: str = "builtin:wnut16"
    validation: str | None = None
    test: str | None = None
    format: Literal["auto", "conll", "jsonl"] = "auto"
    tokens_field: str = "tokens"  # jsonl: the token list ...
    tags_field: str = "tags"  # ... and its tag list
    text_field: str = "text"  # jsonl: or a text ...
    spans_field: str = "spans"  # ... and [start, end, type] character spans
    # Chinese and other unsegmented text: one token per character (auto: when most are CJK)
    char_level: bool | Literal["auto"] = "auto"
    invalid_bio: Literal["repair", "error"] = "repair"  # an I-X that does not continue X
    label_all_subwords: bool = False  # False: only a word's first sub-word carries its tag
    val_fraction: float = Field(0.1, ge=0, lt=0.5)
    test_fraction: float = Field(0.2, ge=0, lt=0.5)
    test_size: int | None = Field(None, ge=1)
    split_seed: int = 0
    budget: Budget = Field(None, ge=1)  # training sentences (each entity type once first)
    max_length: int = Field(128, ge=8)  # sub-word tokens; longer sentences are cut (counted)
    encoding: str = "utf-8"
    # A token-classification run dir whose split.json says which sentences (by their order in
    # these files) train / validate / test.
    split_from: str | None = None


class ImageDataConfig(Section):
    """Images: ``builtin:mnist-5k`` / ``builtin:digits``, a folder of class sub-folders
    (PNG/JPEG; a folder of images without sub-folders is unlabeled), or an ``.npz`` (x, y)."""

    kind: Literal["image-classification"] = "image-classification"
    path: str = "builtin:digits"
    validation: str | None = None
    test: str | None = None
    # Every image is resized to image_size x image_size (None: keep; then all must match).
    image_size: int | None = Field(28, ge=4)
    # Zero border (pixels, inside image_size) around the resized image: MNIST digits sit in a
    # 20 px box with a 4 px border, so digits with image_size 28 and border 4 match MNIST.
    border: int = Field(0, ge=0)
    channels: Literal[1, 3] = 3  # 3: HF image pipelines feed RGB; 1: grayscale, cheaper
    val_fraction: float = Field(0.1, ge=0, lt=0.5)  # when no validation file is given
    test_fraction: float = Field(0.2, ge=0, lt=0.5)  # when no test file is given
    test_size: int | None = Field(None, ge=1)  # absolute test size (wins over test_fraction)
    split_seed: int = 0
    budget: Budget = Field(None, ge=1)  # stratified subsample of labeled training images
    max_images: int | None = Field(None, ge=1)  # random cap on images read (quick runs, tests)


class ImageAugmentConfig(Section):
    """Tensor-op augmentation of training batches (pixels in [0, 1], before normalisation)."""

    shift: int = Field(0, ge=0)  # random translation up to N px (zero pad + crop)
    flip: bool = False  # horizontal flip; keep OFF for digits/text-like images
    rotate: float = Field(0.0, ge=0, le=180)  # random rotation up to +-N degrees
    zoom: float = Field(0.0, ge=0, lt=1)  # random scale in [1 - zoom, 1 + zoom]
    noise: float = Field(0.0, ge=0)  # gaussian pixel noise std
    # Half of a batch is resized down to U(1 - downsample, 1) x its size and back up: blur that
    # makes features robust to low-resolution sources (8x8 digits beside 28x28 MNIST).
    downsample: float = Field(0.0, ge=0, lt=1)
    mixup: float = Field(0.0, ge=0)  # Beta(a, a) mixup of images + labels (0 = off)
    cutmix: float = Field(0.0, ge=0)  # Beta(a, a) CutMix (0 = off; with mixup: one per batch)


class DecodeConfig(Section):
    """How text is generated: evaluation, ``predict`` and ``pretune generate`` (greedy by
    default; ``num_beams`` > 1 is beam search, ``do_sample`` samples)."""

    max_new_tokens: int = Field(32, ge=1)
    num_beams: int = Field(1, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(50, ge=0)
    repetition_penalty: float = Field(1.0, gt=0)
    no_repeat_ngram_size: int = Field(0, ge=0)
    stop: list[str] = []  # the output is cut at the first of these strings
    batch_size: int = Field(16, ge=1)  # prompts generated together (left-padded)
    seed: int = 0  # sampling seed


class GenTaskConfig(Section):
    """Generation (instructions, summaries, headlines, translation): rows with an input and a
    target column (csv/tsv/jsonl/parquet), chat-style ``messages`` lists (the last assistant
    turn is the target), or ``builtin:news-headlines`` (article -> its title)."""

    kind: Literal["generation"] = "generation"
    path: str = "builtin:news-headlines"
    validation: str | None = None
    test: str | None = None
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = "auto"
    input_field: str = "input"
    target_field: str = "target"
    messages_field: str = "messages"  # used when a row has it (jsonl), instead of input/target
    # The prompt: "{input}" is replaced by the input ("Headline for: {input}\n"); None: the
    # builtin's own template, or the input as it is.
    template: str | None = None
    # Wrap the prompt in the model's chat template (auto: when the tokenizer has one).
    chat_template: bool | Literal["auto"] = "auto"
    system: str | None = None  # a system message for chat templates (None: the template's)
    max_length: int = Field(512, ge=16)  # prompt + target tokens (seq2seq: the input side)
    max_target_length: int = Field(64, ge=1)  # longer targets are cut (and counted)
    shots: int = Field(0, ge=0)  # in-context examples from the training split in each prompt
    val_fraction: float = Field(0.1, ge=0, lt=0.5)
    val_size: int | None = Field(None, ge=1)  # absolute validation size (wins over the fraction)
    test_fraction: float = Field(0.2, ge=0, lt=0.5)
    test_size: int | None = Field(None, ge=1)
    split_seed: int = 0
    budget: Budget = Field(None, ge=1)  # training examples (random draw)
    encoding: str = "utf-8"
    decode: DecodeConfig = DecodeConfig()
