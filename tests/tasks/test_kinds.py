"""The task-kind registry and contract: every registered kind is tagged in the configs, does
every part of the contract (nothing left to the base class's NotImplementedError), and a
saved model directory tells which kind wrote it."""

from __future__ import annotations

import json

import pytest
import torch

from pretune.config import KIND_STRATEGIES, TASK_KINDS, modality_of
from pretune.errors import PretuneError
from pretune.models.registry import load_model
from pretune.models.vision import build_image_model, save_image_model
from pretune.tasks import KINDS, get_kind, kind_of_model_dir
from pretune.tasks.base import TASK_FILE, TaskKind

CONTRACT = ("load", "with_budget", "metrics", "load_model", "encode", "train_batches",
            "loss_fn", "outputs", "save", "open_saved", "read_labeled", "predict", "pool",
            "refold", "fold_labels")
SKLEARN_PROBE = ("load_encoder", "features", "probe_targets")  # all of them, or none


@pytest.mark.parametrize("name", list(KINDS))
def test_every_kind_is_registered_tagged_and_complete(name):
    kind = KINDS[name]
    assert isinstance(kind, TaskKind) and kind.name == name and get_kind(name) is kind
    assert name in TASK_KINDS and name in KIND_STRATEGIES
    assert kind.modality == modality_of(name)
    missing = [m for m in CONTRACT if getattr(type(kind), m) is getattr(TaskKind, m)]
    assert not missing, f"{name} does not implement {missing}"
    probe = [getattr(type(kind), m) is not getattr(TaskKind, m) for m in SKLEARN_PROBE]
    assert all(probe) or not any(probe), f"{name}: half a scikit-learn probe"


def test_unknown_kind_names_the_kinds():
    with pytest.raises(PretuneError, match="choose one of: text-classification"):
        get_kind("poetry")


def test_a_model_dir_tells_its_kind(tmp_path, tiny_bert, tiny_gpt, wordpiece_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(wordpiece_dir)
    text = tmp_path / "text"
    load_model(tiny_bert, "classify", tok, num_labels=2).save_pretrained(text)
    assert kind_of_model_dir(text).name == "text-classification"  # by architecture
    (text / TASK_FILE).write_text(json.dumps({"kind": "text-classification"}))
    assert kind_of_model_dir(text).name == "text-classification"  # by pretune's info file
    gpt = tmp_path / "gpt"
    load_model(tiny_gpt, "clm", tok).save_pretrained(gpt)  # a causal LM: generation
    assert kind_of_model_dir(gpt).name == "generation"
    torch.manual_seed(0)
    image = save_image_model(build_image_model("resnet-tiny", 3, 16, 1), tmp_path / "img", 16, 1)
    assert kind_of_model_dir(image).name == "image-classification"
    with pytest.raises(PretuneError, match="not a model directory"):
        kind_of_model_dir(tmp_path)
