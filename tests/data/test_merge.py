"""Prepare at scale: two `pretune prepare` processes, each over its own input files with one
tokenizer, and `pretune merge-shards` joining their artifacts. The merge holds what one
process preparing every file holds (document for document, per split), drops exact duplicates
across parts, and refuses parts tokenized differently. With one Redis index shared by both
processes (`clean.near_dedup_index`), a near-copy in the other part is removed too."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pretune.config import PrepareConfig, SourceConfig, dump_yaml
from pretune.data.merge import merge_shards
from pretune.data.pipeline import artifact_dir, prepare
from pretune.data.shards import PackedTokens
from pretune.data.sources import SourceStats, iter_documents
from pretune.errors import PretuneError


def _files(tmp_path: Path) -> list[Path]:
    """Three input files of news articles; file 2 repeats article 3 and near-copies 7."""
    docs = [d[:600] for d in itertools.islice(
        iter_documents([SourceConfig(path="builtin:news")], SourceStats()), 120)]
    chunks = [docs[0:40], docs[40:80], docs[80:120] + [docs[3], docs[7] + " again"]]
    paths = []
    for n, chunk in enumerate(chunks):
        p = tmp_path / f"part{n}.jsonl"
        p.write_text("".join(json.dumps({"text": d}) + "\n" for d in chunk))
        paths.append(p)
    return paths


def _cfg(tmp_path: Path, name: str, sources: list[Path], tokenizer: str, **clean) -> dict:
    return PrepareConfig.model_validate({
        "name": name, "sources": [str(s) for s in sources], "output_dir": str(tmp_path / "a"),
        "progress": False, "tokenizer": {"path": tokenizer}, "val_fraction": 0.2,
        "clean": {"near_dedup": False, "min_chars": 5, **clean}}).model_dump(mode="json")


def _prepare_in_processes(tmp_path: Path, cfgs: list[dict], *flags: str) -> list[Path]:
    """Each part in its own `pretune prepare` process, all running at once."""
    procs = []
    for cfg in cfgs:
        path = tmp_path / f"{cfg['name']}.yaml"
        path.write_text(dump_yaml(PrepareConfig.model_validate(cfg)))
        procs.append(subprocess.Popen([sys.executable, "-m", "pretune.cli", "prepare", str(path), *flags],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    return [artifact_dir(PrepareConfig.model_validate(cfg)) for cfg in cfgs]


def _docs(artifact: Path, split: str) -> Counter:
    packed = PackedTokens(artifact, split)
    return Counter(tuple(packed.doc(i).tolist()) for i in range(packed.num_docs))


def test_merged_parts_hold_what_one_process_holds(tmp_path: Path, capsys):
    files = _files(tmp_path)
    whole = prepare(PrepareConfig.model_validate(_cfg(tmp_path, "whole", files,
                                                      "builtin:minilm")))
    parts = _prepare_in_processes(tmp_path, [
        _cfg(tmp_path, "p0", files[:2], str(whole / "tokenizer")),
        _cfg(tmp_path, "p1", files[2:], str(whole / "tokenizer"))])
    from pretune.cli import main

    assert main(["merge-shards", str(tmp_path / "merged"), *map(str, parts)]) == 0
    assert "1 duplicates across parts dropped" in capsys.readouterr().out
    merged = tmp_path / "merged"
    for split in ("train", "val"):  # the same documents in the same splits (hash-split)
        assert _docs(merged, split) == _docs(whole, split)
    meta = json.loads((merged / "meta.json").read_text())
    assert meta["stats"]["duplicates_across_parts"] == 1
    assert meta["stats"]["clean"]["docs_in"] == 122
    assert [p["path"] for p in meta["parts"]] == [str(p) for p in parts]
    assert (merged / "tokenizer" / "tokenizer.json").is_file()
    with pytest.raises(PretuneError, match="already exists; pass --overwrite"):
        merge_shards(parts, merged)

    other = prepare(PrepareConfig.model_validate({
        **_cfg(tmp_path, "bpe", files[:1], "builtin:minilm"),
        "tokenizer": {"kind": "bpe", "vocab_size": 300, "min_frequency": 1}}))
    with pytest.raises(PretuneError, match="another tokenizer than .*same tokenizer.path"):
        merge_shards([parts[0], other], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(PretuneError, match="not a prepared data artifact"):
        merge_shards([parts[0], tmp_path], tmp_path / "bad")


def test_parts_share_one_near_dedup_index_in_redis(tmp_path: Path, redis_url):
    files = _files(tmp_path)
    near = {"near_dedup": True, "near_dedup_storage": redis_url,
            "near_dedup_index": f"merge-{tmp_path.name}"}
    first = _prepare_in_processes(tmp_path, [_cfg(tmp_path, "p0", files[:1], "builtin:minilm",
                                                  **near)])
    second = _prepare_in_processes(tmp_path, [_cfg(tmp_path, "p1", files[2:], "builtin:minilm",
                                                   **near)])
    meta = json.loads((second[0] / "meta.json").read_text())
    removed = meta["stats"]["clean"]["removed"]
    # doc 3 of file 0 is exact and doc 7 a near copy: both found in the first part's index
    assert removed["near_dup"] == 2, removed
    merged = merge_shards(first + second, tmp_path / "merged")
    assert merged["stats"]["duplicates_across_parts"] == 0
    # A retried part (a SLURM retry): its first attempt's keys are still in the index, and are
    # not taken for duplicates of its own documents; the other part's still are.
    again = _prepare_in_processes(tmp_path, [_cfg(tmp_path, "p1", files[2:], "builtin:minilm",
                                                  **near)], "--overwrite")
    meta = json.loads((again[0] / "meta.json").read_text())
    assert meta["stats"]["clean"]["removed"]["near_dup"] == 2
    assert meta["stats"]["clean"]["docs_out"] == 40
