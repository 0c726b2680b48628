"""Shared test fixtures. Tests run on CPU with tiny models and small slices of real data."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores: keep intra-op threads modest so parallel helpers don't thrash.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
