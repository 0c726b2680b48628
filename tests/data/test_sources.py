"""Corpus readers on real files generated in tmp_path, plus slices of the builtin corpora."""

from __future__ import annotations

import bz2
import gzip
import itertools
import json
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pretune.config import SourceConfig
from pretune.data.sources import SourceStats, iter_documents, open_text
from pretune.errors import PretuneError


def read(*sources: SourceConfig | str, limit: int | None = None) -> tuple[list[str], SourceStats]:
    stats = SourceStats()
    srcs = [SourceConfig(path=s) if isinstance(s, str) else s for s in sources]
    return list(itertools.islice(iter_documents(srcs, stats), limit)), stats


TXT = "first line\nsecond line\n\nthird para\nstill third\n"


def test_txt_file_mode(tmp_path):
    (tmp_path / "a.txt").write_text(TXT)
    docs, stats = read(str(tmp_path / "a.txt"))
    assert docs == [TXT]
    assert stats.files == 1 and stats.docs == 1 and stats.bytes == len(TXT)


def test_txt_line_and_paragraph_modes(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text(TXT)
    lines, stats = read(SourceConfig(path=str(p), txt_mode="line"))
    assert [d.strip() for d in lines] == ["first line", "second line", "third para", "still third"]
    assert stats.skipped_empty == 1  # the blank line is not a document
    paras, _ = read(SourceConfig(path=str(p), txt_mode="paragraph"))
    assert paras == ["first line\nsecond line\n", "third para\nstill third\n"]


def test_directory_is_recursive_sorted_and_skips_unknown_and_hidden(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "b.txt").write_text("doc b")
    (tmp_path / "sub" / "a.txt").write_text("doc a")
    (tmp_path / "sub" / "deeper" / "c.jsonl").write_text(json.dumps({"text": "doc c"}) + "\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden.txt").write_text("secret")
    docs, stats = read(str(tmp_path))
    assert docs == ["doc b", "doc a", "doc c"]  # sorted by path: b.txt < sub/a.txt < sub/deeper
    assert stats.skipped_files == 1 and stats.files == 3


def test_glob(tmp_path):
    for i in range(3):
        (tmp_path / f"part{i}.txt").write_text(f"doc {i}")
    (tmp_path / "other.md").write_text("not matched")
    docs, _ = read(str(tmp_path / "part*.txt"))
    assert docs == ["doc 0", "doc 1", "doc 2"]


def test_jsonl_named_field_and_nulls(tmp_path):
    p = tmp_path / "c.jsonl"
    rows = [{"body": "one", "id": 1}, {"body": None}, {"body": "two"}, {"body": 3}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    docs, stats = read(SourceConfig(path=str(p), text_field="body"))
    assert docs == ["one", "two", "3"]
    assert stats.skipped_empty == 1


def test_csv_quoted_newlines_and_long_fields(tmp_path):
    p = tmp_path / "c.csv"
    long = "x" * 200_000  # above the csv module's default 128 KiB field limit
    p.write_text(f'id,text\n1,"multi\nline, with comma"\n2,{long}\n3,\n')
    docs, stats = read(str(p))
    assert docs == ["multi\nline, with comma", long]
    assert stats.skipped_empty == 1


def test_tsv_keeps_quotes_as_text(tmp_path):
    p = tmp_path / "c.tsv"
    p.write_text('label\ttext\n1\t"quoted" start\n0\tplain\n')
    docs, _ = read(str(p))
    assert docs == ['"quoted" start', "plain"]


def test_parquet_by_row_groups(tmp_path):
    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": [f"doc {i}" for i in range(10)], "n": list(range(10))}), p,
                   row_group_size=3)
    docs, _ = read(str(p))
    assert docs == [f"doc {i}" for i in range(10)]


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".zst"])
def test_compressed(tmp_path, suffix):
    data = "\n".join(json.dumps({"text": f"doc {i}"}) for i in range(5)).encode()
    p = tmp_path / f"c.jsonl{suffix}"
    if suffix == ".gz":
        p.write_bytes(gzip.compress(data))
    elif suffix == ".bz2":
        p.write_bytes(bz2.compress(data))
    else:
        p.write_bytes(zstandard.ZstdCompressor().compress(data))
    docs, _ = read(str(p))
    assert docs == [f"doc {i}" for i in range(5)]
    with open_text(p) as f:  # the reusable opener handles the same compressions
        assert json.loads(f.readline()) == {"text": "doc 0"}


def test_zip_reads_every_member_by_its_own_format(tmp_path):
    p = tmp_path / "bundle.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("a.csv", "text\nfrom csv\n")
        zf.writestr("b.txt", "from txt")
        zf.writestr("dir/", "")
    docs, stats = read(str(p))
    assert docs == ["from csv", "from txt"]
    assert stats.files == 2


def test_builtin_news_with_cap():
    docs, stats = read("builtin:news", limit=5)
    assert len(docs) == 5
    title, body = docs[0].split("\n\n", 1)
    assert title.startswith("Betsy DeVos") and len(body) > 200
    assert stats.docs_per_source["builtin:news"] == 5


def test_builtin_wiki_summaries():
    docs, _ = read("builtin:wiki-summaries", limit=3)
    assert len(docs) == 3 and all(len(d) > 50 for d in docs)


def test_non_utf8_bytes_are_replaced_and_counted(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 au lait\nfine line\n\xff\xfe broken\n")
    good = tmp_path / "good.txt"
    good.write_text("a real \ufffd in valid UTF-8\n")  # not a decode error: not counted
    docs, stats = read(SourceConfig(path=str(bad), txt_mode="line"),
                       SourceConfig(path=str(good), txt_mode="line"))
    assert docs[0] == "caf\ufffd au lait\n"
    assert stats.non_utf8_docs == 2
    assert stats.non_utf8_files == [str(bad)]
    assert "not UTF-8" in stats.warnings[0] and str(bad) in stats.warnings[0]


def test_empty_file_gives_no_docs_and_a_warning(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("")
    docs, stats = read(str(p))
    assert docs == []
    assert any("produced no documents" in w for w in stats.warnings)


def test_missing_file_and_empty_glob_name_the_path(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(PretuneError, match="nope.txt"):
        iter_documents([SourceConfig(path=str(missing))], SourceStats())  # fails before reading
    with pytest.raises(PretuneError, match=r"matches no files"):
        read(str(tmp_path / "*.jsonl"))
    with pytest.raises(PretuneError, match="unknown builtin"):
        read("builtin:nope")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_missing_column_names_file_column_and_existing_columns(tmp_path, fmt):
    p = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        p.write_text("title,body\na,b\n")
    elif fmt == "jsonl":
        p.write_text(json.dumps({"title": "a", "body": "b"}) + "\n")
    else:
        pq.write_table(pa.table({"title": ["a"], "body": ["b"]}), p)
    with pytest.raises(PretuneError) as e:
        read(str(p))
    msg = str(e.value)
    assert str(p) in msg and "'text'" in msg and "title" in msg and "body" in msg


def test_invalid_jsonl_line_is_reported(tmp_path):
    p = tmp_path / "broken.jsonl"
    p.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(PretuneError, match=r"broken.jsonl line 2"):
        read(str(p))


def test_open_text_single_member_zip_and_missing(tmp_path):
    p = tmp_path / "one.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("a.txt", "caf\u00e9\n")
    with open_text(p) as f:
        assert f.read() == "caf\u00e9\n"
    with pytest.raises(PretuneError, match="not found"):
        open_text(tmp_path / "nope.gz")


def test_explicit_format_overrides_suffix_and_parquet_in_zip(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "rows.log").write_text(json.dumps({"text": "from a .log file"}) + "\n")
    docs, _ = read(SourceConfig(path=str(tmp_path / "d"), format="jsonl"))
    assert docs == ["from a .log file"]
    pq.write_table(pa.table({"text": ["p0", "p1"]}), tmp_path / "t.parquet")
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as zf:
        zf.write(tmp_path / "t.parquet", "t.parquet")
    docs, _ = read(str(tmp_path / "z.zip"))
    assert docs == ["p0", "p1"]


def test_binary_files_are_refused_naming_the_file(tmp_path):
    import os
    import shutil

    exe = tmp_path / "ls"
    shutil.copy(shutil.which("ls") or "/bin/ls", exe)
    noise = tmp_path / "noise.txt"
    noise.write_bytes(os.urandom(200_000))
    for path in (exe, noise):
        with pytest.raises(PretuneError, match=rf"{path.name} is not a text file \(\d+% "
                                               "control bytes"):
            list(iter_documents([SourceConfig(path=str(path))], SourceStats()))
    gbk = tmp_path / "zh.txt"  # text, but not in the encoding asked for: name the one it is
    gbk.write_bytes("预训练与微调，语言模型。\n".encode("gb18030") * 200)
    with pytest.raises(PretuneError, match="zh.txt is not utf-8 text .*set sources\\[\\]"
                                           ".encoding=gb18030"):
        list(iter_documents([SourceConfig(path=str(gbk))], SourceStats()))
    # text in another encoding is still read: UTF-16 (NUL bytes) when it is named, and
    # latin-1 read as UTF-8 (a few undecodable bytes: a warning, not a refusal)
    u16 = tmp_path / "u16.txt"
    u16.write_text("hello world\n" * 50, encoding="utf-16")
    assert list(iter_documents([SourceConfig(path=str(u16), encoding="utf-16")],
                               SourceStats()))[0].startswith("hello")
    lat = tmp_path / "lat.txt"
    lat.write_bytes(("the caf\xe9 on the corner serves good coffee. " * 40).encode("latin-1"))
    assert list(iter_documents([SourceConfig(path=str(lat))], SourceStats()))
