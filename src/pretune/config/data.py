"""Config sections of corpus preparation: sources, cleaning, tokenizer, ``pretune prepare``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pretune.config.base import RunName, Section


class SourceConfig(Section):
    """One corpus input: a file, directory, glob, or ``builtin:<name>``."""

    path: str
    format: Literal["auto", "txt", "jsonl", "csv", "tsv", "parquet"] = "auto"
    text_field: str = "text"  # column/key holding the text (jsonl/csv/tsv/parquet)
    txt_mode: Literal["file", "line", "paragraph"] = "file"  # one doc per file/line/blank-line block
    encoding: str = "utf-8"  # of the files (gb18030 for GBK Chinese, cp1252, latin-1, ...)


class CleanConfig(Section):
    nfkc: bool = True
    strip_control: bool = True  # control + zero-width characters
    strip_html: bool = True  # tags and entities
    normalize_whitespace: bool = True
    lowercase: bool = False
    min_chars: int = Field(20, ge=0)
    max_chars: int | None = Field(None, ge=1)  # longer docs are dropped (not truncated)
    min_words: int = Field(0, ge=0)
    exact_dedup: bool = True
    near_dedup: bool = True
    near_dedup_threshold: float = Field(0.8, gt=0.0, le=1.0)  # MinHash-LSH Jaccard threshold
    # Where the near-dedup index lives: in this process (null), or a Redis server,
    # redis://host:port[/db] (datasketch's Redis storage; `pip install 'pretune[scale]'`):
    # the process then holds no index, whatever the corpus size. Keys are removed at the end.
    near_dedup_storage: str | None = Field(None, pattern=r"^redis://[^/:]+(:\d+)?(/\d+)?$")
    # With a Redis storage: one index shared by every prepare that names it (the parts of a
    # corpus prepared by several processes dedupe against each other; `pretune merge-shards`
    # joins them). Its keys stay in Redis for the other parts: remove them when all are done.
    near_dedup_index: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    minhash_perm: int = Field(64, ge=16)
    shingle_words: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _shared_index_needs_redis(self) -> CleanConfig:
        if self.near_dedup_index and not self.near_dedup_storage:
            raise ValueError("clean.near_dedup_index shares an index through Redis: set "
                             "clean.near_dedup_storage: redis://host:port too")
        return self


class TokenizerConfig(Section):
    kind: Literal["wordpiece", "bpe", "unigram"] = "wordpiece"
    vocab_size: int = Field(8000, ge=32)
    min_frequency: int = Field(2, ge=1)
    lowercase: bool = True  # wordpiece/unigram normaliser; byte-level BPE keeps case
    model_max_length: int = Field(512, ge=8)  # saved with the tokenizer (HF truncation default)
    # Reuse an existing tokenizer instead of training: an HF dir or ``builtin:minilm``.
    path: str | None = None


class PrepareConfig(Section):
    """``pretune prepare``: corpus -> clean -> tokenizer -> packed memmap shards."""

    name: RunName = "corpus"
    sources: list[SourceConfig] = Field(default_factory=lambda: [SourceConfig(path="builtin:news")])
    clean: CleanConfig = CleanConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    val_fraction: float = Field(0.02, ge=0.0, lt=0.5)  # documents held out for validation
    max_docs: int | None = Field(None, ge=1)  # cap on documents read (quick runs, tests)
    output_dir: str = "runs/data"  # artifact goes to <output_dir>/<name>-<config hash>
    num_workers: int = Field(0, ge=0)  # 0 = os.cpu_count()
    batch_docs: int = Field(1000, ge=1)
    seed: int = 0
    progress: bool = True
    # JSONL of texts (one JSON string per line) to keep out of the corpus: documents holding
    # one (or one of its sentences) are dropped. A study writes it from its tasks' test and
    # validation texts when a task comes from the corpus's own source.
    holdout: str | None = None
    # ... and documents sharing a word n-gram of this length with one (0: whole sentences only;
    # the study uses its contamination_ngram, so the check it reports finds nothing held out)
    holdout_ngram: int = Field(13, ge=0)
    # Record where words start, for whole-word masking of unsegmented text (Chinese): jieba
    # when installed (auto), or a dictionary segmenter over People's Daily's word list.
    word_boundaries: Literal["off", "auto", "jieba", "dictionary"] = "off"

    @field_validator("sources", mode="before")
    @classmethod
    def _sources_shorthand(cls, v: Any) -> Any:
        # Allow `sources: builtin:news` or a list of plain strings.
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list):
            return [{"path": s} if isinstance(s, str) else s for s in v]
        return v
