"""Memory of the near-dedup index per million documents: in the process vs in Redis.

Streams N synthetic documents (200 random words from a 20k-word vocabulary each: no two are
near-duplicates, so every one enters the index — the worst case) through pretune's cleaner,
once with the index in memory and once with ``clean.near_dedup_storage: redis://…`` (a
redis-server started here). Each mode runs in a fresh subprocess; printed: the process's RSS
growth, the Redis server's ``used_memory`` growth, both per million documents, and docs/s.

Run: ``.venv/bin/python bench/dedup_memory.py [--docs 100000]`` (needs Debian's
redis-server and ``pip install 'pretune[scale]'`` for the Redis half).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, sys, time
import numpy as np
from pretune.config import CleanConfig
from pretune.data.clean import Cleaner, CleanStats

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

n, url = int(sys.argv[1]), sys.argv[2] or None
rng = np.random.default_rng(0)
vocab = [f"w{i}" for i in range(20000)]
cfg = CleanConfig(exact_dedup=False, near_dedup_storage=url)
cleaner = Cleaner(cfg, CleanStats())
cleaner.close = lambda: None  # keep the keys until the server's memory is read
docs = (" ".join(vocab[j] for j in rng.integers(0, 20000, 200)) for _ in range(n))
before, t = rss(), time.perf_counter()
kept = sum(1 for _ in cleaner(docs))
print(json.dumps({"kept": kept, "rss": rss() - before, "seconds": time.perf_counter() - t}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(n: int, url: str = "") -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), url], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=100_000)
    n = ap.parse_args().docs
    per_m = 1e6 / n / 2**30  # bytes for n docs -> GiB per million
    mem = _child(n)
    print(f"in memory: {mem['kept']:,} docs indexed, RSS +{mem['rss'] / 2**20:,.0f} MiB = "
          f"{mem['rss'] * per_m:.2f} GiB per million docs, {mem['kept'] / mem['seconds']:,.0f} "
          "docs/s", flush=True)
    if shutil.which("redis-server") is None:
        print("redis-server not found: the Redis half is skipped")
        return
    import redis

    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                                 "--appendonly", "no", "--dir", tmp],
                                stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.exceptions.ConnectionError:
                    time.sleep(0.05)
            base = client.info("memory")["used_memory"]
            red = _child(n, f"redis://127.0.0.1:{port}/0")
            server = client.info("memory")["used_memory"] - base
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"in Redis: {red['kept']:,} docs indexed, process RSS +{red['rss'] / 2**20:,.0f} MiB "
          f"= {red['rss'] * per_m:.2f} GiB per million docs (the server: "
          f"{server * per_m:.2f} GiB per million), {red['kept'] / red['seconds']:,.0f} docs/s")


if __name__ == "__main__":
    main()
