"""What a study's numbers were computed with: library versions, threads, device. A rerun
reproduces a study bitwise on CPU only with the same versions and thread count, so the report
states them (and ``environment.json`` keeps them)."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

import torch

LIBRARIES = ("pretune", "torch", "transformers", "tokenizers", "peft", "scikit-learn", "numpy",
             "scipy")


def environment() -> dict[str, Any]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else \
        f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return {"python": sys.version.split()[0], **versions,
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "device": device, "platform": platform.platform()}


__all__ = ["environment"]
