"""Image architectures: build, forward/backward, adapter API, HF save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

from pretune.config import ModelConfig
from pretune.data.builtin import builtin_path
from pretune.errors import PretuneError
from pretune.models.vision import (
    IMAGE_ARCHS,
    ImageBackbone,
    SimCLRModel,
    build_image_model,
    is_image_model,
    load_image_model,
    nt_xent,
    save_image_model,
)

LABELS = ["a", "b", "c"]


@pytest.mark.parametrize("name", list(IMAGE_ARCHS))
def test_every_arch_builds(name):
    # Meta tensors: the full-size archs build without allocating or initialising weights.
    with torch.device("meta"):
        model = build_image_model(name, 10, 32, 3)
    n = sum(p.numel() for p in model.parameters())
    bb = ImageBackbone(model)
    assert bb.num_layers >= 2 and bb.head() is not None
    assert sum(len(g) for g in bb.layer_groups()) == len(list(model.parameters()))
    expected = {"resnet-18": 11.2e6, "resnet-50": 23.5e6, "vit-base": 85.8e6}
    if name in expected:
        assert abs(n - expected[name]) / expected[name] < 0.05


@pytest.mark.parametrize("name,channels", [("resnet-tiny", 1), ("resnet-tiny", 3),
                                           ("vit-tiny", 1), ("vit-tiny", 3)])
def test_forward_backward_and_features(name, channels):
    torch.manual_seed(0)
    model = build_image_model(name, 3, 28, channels, labels=LABELS)
    x = torch.randn(4, channels, 28, 28)
    logits = model(pixel_values=x).logits
    assert logits.shape == (4, 3)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    bb = ImageBackbone(model)
    model.eval()  # BatchNorm: compare in one mode
    feats = bb.encode(x)
    assert feats.shape == (4, bb.hidden_size)
    # The classifier sees exactly these features.
    torch.testing.assert_close(bb.head()(feats), model(pixel_values=x).logits)
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}


def test_overrides_and_bad_names():
    m = build_image_model("vit-tiny", 2, 28, 1, {"num_hidden_layers": 1})
    assert ImageBackbone(m).num_layers == 1 and is_image_model(m)
    assert not is_image_model(torch.nn.Linear(2, 2))
    with pytest.raises(PretuneError, match="overrides.nope is not a field"):
        build_image_model("resnet-tiny", 2, 28, 1, {"nope": 1})
    with pytest.raises(PretuneError, match="not a multiple of the ViT patch_size"):
        build_image_model("vit-tiny", 2, 30, 1)
    with pytest.raises(PretuneError, match="unknown model.name 'resnet-huge'"):
        load_image_model(ModelConfig(name="resnet-huge"), LABELS, 28, 1)
    for text in ("bert-mini", "builtin:minilm"):
        with pytest.raises(PretuneError, match=f"{text} is a text model"):
            load_image_model(ModelConfig(name=text), LABELS, 28, 1)


def test_save_load_round_trip_with_plain_transformers(tmp_path):
    torch.manual_seed(0)
    model = build_image_model("resnet-tiny", 3, 16, 3, labels=LABELS).eval()
    path = save_image_model(model, tmp_path / "m", 16, 3, {"border": 0})
    loaded = AutoModelForImageClassification.from_pretrained(path).eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(loaded(pixel_values=x).logits, model(pixel_values=x).logits)
    assert loaded.config.id2label[2] == "c"
    # The saved processor gives the model its inputs; an HF pipeline works on a gray image.
    processor = AutoImageProcessor.from_pretrained(path)
    img = Image.fromarray(np.full((10, 10), 255, dtype=np.uint8), "L")
    pv = processor(img, return_tensors="pt")["pixel_values"]
    assert pv.shape == (1, 3, 16, 16) and float(pv.max()) == pytest.approx(1.0)
    from transformers import pipeline

    preds = pipeline("image-classification", model=str(path))(img)
    assert {p["label"] for p in preds} <= set(LABELS)


def test_load_checkpoint_new_head_and_checks(tmp_path):
    torch.manual_seed(0)
    src = build_image_model("vit-tiny", 3, 16, 1, labels=LABELS)
    path = save_image_model(src, tmp_path / "m", 16, 1)
    spec = ModelConfig(name=f"hf:{path}")
    torch.manual_seed(1)
    fresh = load_image_model(spec, LABELS, 16, 1)  # same labels, keep_head=False: new head
    kept = load_image_model(spec, LABELS, 16, 1, keep_head=True)
    other = load_image_model(spec, ["x", "y"], 16, 1)
    sd_src, sd_new = src.state_dict(), fresh.state_dict()
    body = [k for k in sd_src if not k.startswith("classifier")]
    assert all(torch.equal(sd_src[k], sd_new[k]) for k in body)
    assert not torch.equal(sd_src["classifier.weight"], sd_new["classifier.weight"])
    assert torch.equal(sd_src["classifier.weight"], kept.state_dict()["classifier.weight"])
    assert other.config.num_labels == 2 and other.classifier.weight.shape[0] == 2
    with pytest.raises(PretuneError, match="1-channel images; set data.channels=1"):
        load_image_model(spec, LABELS, 16, 3)
    with pytest.raises(PretuneError, match="set data.image_size=16"):
        load_image_model(spec, LABELS, 32, 1)
    with pytest.raises(PretuneError, match="would change the shape"):
        load_image_model(ModelConfig(name=str(path), overrides={"hidden_size": 8}), LABELS, 16, 1)
    with pytest.raises(PretuneError, match="is a text model"):
        load_image_model(ModelConfig(name=f"hf:{builtin_path('minilm')}"), LABELS, 16, 1)
    with pytest.raises(PretuneError, match="not found"):
        load_image_model(ModelConfig(name=f"hf:{tmp_path / 'nope'}"), LABELS, 16, 1)


def test_nt_xent_prefers_matching_views():
    torch.manual_seed(0)
    z = torch.randn(8, 16)
    aligned = nt_xent(torch.cat([z, z + 0.01 * torch.randn(8, 16)]), 0.2)
    shuffled = nt_xent(torch.cat([z, torch.randn(8, 16)]), 0.2)
    assert float(aligned) < 0.5 < 1.5 < float(shuffled)
    # Exact value: views e1, e2 | e1, e2: each row has its positive at cos 1, two negatives at 0.
    e = torch.eye(2)
    t = 0.5
    expected = -np.log(np.exp(1 / t) / (np.exp(1 / t) + 2))
    assert float(nt_xent(torch.cat([e, e]), t)) == pytest.approx(expected, rel=1e-5)
    model = build_image_model("resnet-tiny", 2, 16, 1)
    net = SimCLRModel(model, 8)
    out = net(torch.randn(6, 1, 16, 16))
    assert out.shape == (6, 8)
    nt_xent(out, 0.5).backward()
    assert net.projection[0].weight.grad is not None
