"""Render report.html in headless Chromium: it must open offline and show the verdicts."""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

import pytest

from pretune.study.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium"),
]


def _rows():
    rows = []
    for start, gain in (("scratch", 0.0), ("pretrained", 0.06)):
        for budget, label, base in ((32, "32", 0.55), (300, "all", 0.72)):
            for seed in range(3):
                noise = 0.01 * ((seed * 5 + 3 * (start == "scratch")) % 4)
                v = base + gain * (1 if budget == 32 else 0.3) + noise
                rows.append({"task": "rotten-tomatoes", "start": start, "strategy": "full",
                             "budget": budget, "budget_label": label, "seed": seed,
                             "status": "ok", "error": None, "seconds": 2.0,
                             "train_examples": budget, "trainable_params": 5000,
                             "macro_f1": round(v, 4), "confusion": [[20, 5], [6, 19]],
                             "labels": ["fresh", "rotten"]})
    return rows


def _png_pixels(path: Path) -> tuple[int, int, set[bytes]]:
    """Width, height and a sample of distinct pixel rows of a PNG (stdlib only)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = len(raw) // height  # filter byte + pixels
    # Distinct scanlines (filtered bytes): a blank page compresses to one or two patterns.
    lines = {raw[i * stride + 1 : (i + 1) * stride] for i in range(0, height, 7)}
    return width, height, lines


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def test_report_renders_headless(tmp_path):
    paths = write_report(tmp_path / "study", name="browser check", results=_rows(),
                         metric="macro_f1", compute=[{"phase": "pretrain", "tokens": 1000,
                                                      "seconds": 4.0, "flops": 1e9}],
                         config_yaml="name: browser-check\n", notes=["rendered offline"])
    url = paths["html"].resolve().as_uri()
    shot = tmp_path / "shot.png"
    proc = _chromium(f"--screenshot={shot}", "--window-size=1200,3000", url,
                     profile=tmp_path / "profile")
    assert shot.is_file(), proc.stderr[-2000:]
    width, height, lines = _png_pixels(shot)
    assert (width, height) == (1200, 3000)
    assert len(lines) > 20, "screenshot looks blank"
    dom = _chromium("--dump-dom", url, profile=tmp_path / "profile2").stdout
    assert "browser check" in dom
    assert "macro-F1 on rotten-tomatoes" in dom and "Pre-training" in dom
    assert "paired t-test p = " in dom
