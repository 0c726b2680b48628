"""One FinetuneConfig for every task kind: the kind tag, its inference from the data, the kind's
own defaults under the user's settings, the image commands' `data` name, and what each kind
refuses (strategies and augmentations of another kind)."""

from __future__ import annotations

import numpy as np
import pytest

from pretune.config import FinetuneConfig, ImageStudyConfig, StudyConfig, infer_kind, load_config
from pretune.errors import PretuneError


def test_kind_is_inferred_from_the_data(tmp_path):
    assert infer_kind({"path": "builtin:rotten-tomatoes"}) == "text-classification"
    assert infer_kind({"path": "builtin:digits"}) == "image-classification"
    assert infer_kind({"path": "train.csv"}) == "text-classification"
    assert infer_kind({"path": "x.npz"}) == "image-classification"
    assert infer_kind({"path": str(tmp_path)}) == "image-classification"  # class folders
    assert infer_kind({"path": "ner.conll"}) == "token-classification"
    cfg = FinetuneConfig.model_validate({"task": "builtin:digits"})
    assert cfg.task.kind == "image-classification" and cfg.task.image_size == 28


def test_a_kind_brings_its_defaults_under_the_users_settings():
    text = FinetuneConfig()
    assert (text.task.kind, text.model.name, text.optim.lr, text.train.epochs) == (
        "text-classification", "builtin:minilm", "auto", 4)
    img = FinetuneConfig.model_validate({"task": {"path": "builtin:digits"},
                                         "optim": {"lr": 0.01}, "train": {"batch_size": 8}})
    assert (img.name, img.model.name, img.augment.shift) == ("vision-finetune", "resnet-tiny", 2)
    assert (img.optim.lr, img.optim.schedule, img.optim.weight_decay) == (0.01, "cosine", 1e-4)
    assert (img.train.epochs, img.train.batch_size) == (20, 8)
    # a dumped config validates back to itself (sweeps and studies round-trip configs)
    assert FinetuneConfig.model_validate(img.model_dump(mode="json")) == img


def test_the_image_commands_data_name_and_default_kind():
    cfg = load_config(FinetuneConfig, None, ["data.budget=50", "data.channels=1"],
                      defaults={"task": {"kind": "image-classification"}})
    assert cfg.task.kind == "image-classification" and cfg.task.budget == 50
    with pytest.raises(PretuneError, match="not both"):
        load_config(FinetuneConfig, None, ["data.budget=5", "task.path=builtin:digits"])


def test_each_kind_refuses_what_does_not_apply():
    with pytest.raises(PretuneError, match="strategy.name=lora does not apply to image"):
        load_config(FinetuneConfig, None, ["task.path=builtin:digits", "strategy.name=lora"])
    with pytest.raises(PretuneError, match="augment.shift is for image tasks"):
        load_config(FinetuneConfig, None, ["augment.shift=2"])
    with pytest.raises(PretuneError, match="augment.token_mask_prob is for text tasks"):
        load_config(FinetuneConfig, None, ["task.path=builtin:digits",
                                           "augment.token_mask_prob=0.1"])
    with pytest.raises(PretuneError, match="task.kind='poetry'"):
        load_config(FinetuneConfig, None, ["task.kind=poetry"])


def test_studies_tag_their_tasks(tmp_path):
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 8, 8), np.uint8), y=np.arange(4))
    text = StudyConfig.model_validate({"tasks": ["builtin:rotten-tomatoes", "train.csv"]})
    assert [t.kind for t in text.tasks] == ["text-classification"] * 2
    with pytest.raises(ValueError, match="image task; image studies say `modality: image`"):
        StudyConfig.model_validate({"tasks": [str(tmp_path / "x.npz")]})
    img = ImageStudyConfig.model_validate({"finetune": {"data": {"path": "builtin:digits",
                                                                 "border": 4}}})
    assert img.tasks[0].border == 4 and img.finetune.task.kind == "image-classification"
    assert img.finetune.optim.lr == 1e-3  # the image kind's defaults for every cell
