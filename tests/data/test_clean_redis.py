"""The near-dedup index in a real Redis server (`clean.near_dedup_storage`), started here from
Debian's redis-server and skipped cleanly when it or the redis package is missing."""

from __future__ import annotations

import itertools
import shutil

import pytest

from pretune.config import CleanConfig, SourceConfig
from pretune.data.clean import CleanStats, clean_documents
from pretune.data.sources import SourceStats, iter_documents
from pretune.errors import PretuneError

redis = pytest.importorskip("redis", reason="needs the redis package (pretune[scale])")
pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="needs Debian's redis-server")


def _docs() -> list[str]:
    news = list(itertools.islice(iter_documents([SourceConfig(path="builtin:news")],
                                                SourceStats()), 300))
    # near-copies: the same article with its last word changed, and a re-ordered tail
    return news + [d.rsplit(" ", 1)[0] + " changed" for d in news[:40]]


def test_redis_index_keeps_exactly_what_the_memory_index_keeps(redis_url):
    docs = _docs()
    mem_stats, red_stats = CleanStats(), CleanStats()
    kept_mem = list(clean_documents(docs, CleanConfig(), mem_stats))
    kept_red = list(clean_documents(docs, CleanConfig(near_dedup_storage=redis_url),
                                    red_stats))
    assert kept_red == kept_mem
    assert red_stats.removed["near_dup"] == mem_stats.removed["near_dup"] >= 35
    # the run's keys are gone from the server afterwards
    assert redis.Redis.from_url(redis_url).dbsize() == 0


def test_keys_are_removed_when_the_stream_stops_early(redis_url):
    stream = clean_documents(_docs(), CleanConfig(near_dedup_storage=redis_url), CleanStats())
    next(stream)
    assert redis.Redis.from_url(redis_url).dbsize() > 0
    stream.close()
    assert redis.Redis.from_url(redis_url).dbsize() == 0


def test_unreachable_redis_is_a_one_line_error(unused_port):
    url = f"redis://127.0.0.1:{unused_port}"
    with pytest.raises(PretuneError, match="cannot reach Redis at redis://127.0.0.1") as e:
        list(clean_documents(["some document text here"], CleanConfig(near_dedup_storage=url),
                             CleanStats()))
    assert "\n" not in str(e.value)


def test_storage_url_is_validated():
    with pytest.raises(ValueError, match="near_dedup_storage"):
        CleanConfig(near_dedup_storage="http://localhost:6379")
