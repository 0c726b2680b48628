"""The scikit-learn probe as a model directory that ``predict`` / ``evaluate`` use.

The directory holds the frozen encoder (it loads with plain ``AutoModel``), its tokenizer and
``probe.safetensors``: the standardisation (``mean``, ``scale``) and the linear head
(``weight``, ``bias``) of the fitted logistic regression (ridge for regression), with the
pooling it was fitted on in ``pretune_task.json``. A plain ``*ForSequenceClassification``
cannot hold it: BERT's classifier reads [CLS] through a pooler, and the probe reads mean-pooled
features; so the card shows the few lines that apply the head to ``AutoModel``'s output, and
``ProbeClassifier`` is that as a module.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from pretune.models.backbone import Backbone

PROBE_FILE = "probe.safetensors"
_MISSING = -1e4  # the logit of a class the probe never saw in training


def head_arrays(est: Any, task_type: str, num_labels: int) -> dict[str, np.ndarray]:
    """``mean``, ``scale``, ``weight`` (C, H) and ``bias`` (C,) of a fitted probe pipeline,
    as logits: softmax (single-label), sigmoid (multi-label) or the value (regression)."""
    scaler, model = est[0], est[-1]
    dim = len(scaler.mean_)
    if task_type == "regression":
        w = np.asarray(model.coef_, dtype=np.float64).reshape(1, dim)
        b = np.asarray(model.intercept_, dtype=np.float64).reshape(1)
    elif task_type == "multi_label":  # one-vs-rest: a binary regression per label
        w = np.stack([np.asarray(e.coef_).reshape(dim) for e in model.estimators_])
        b = np.asarray([float(np.asarray(e.intercept_).reshape(-1)[0])
                        for e in model.estimators_])
    else:
        coef, inter, classes = np.asarray(model.coef_), np.asarray(model.intercept_), \
            list(model.classes_)
        if len(classes) == 2 and coef.shape[0] == 1:  # binary: sigmoid(s) = softmax([0, s])
            coef, inter = np.vstack([np.zeros(dim), coef[0]]), np.array([0.0, inter[0]])
        w, b = np.zeros((num_labels, dim)), np.full(num_labels, _MISSING)
        for row, c in enumerate(classes):
            w[int(c)], b[int(c)] = coef[row], inter[row]
    scale = np.where(scaler.scale_ == 0, 1.0, scaler.scale_)
    return {"mean": scaler.mean_.astype(np.float32), "scale": scale.astype(np.float32),
            "weight": w.astype(np.float32), "bias": b.astype(np.float32)}


def save_probe_head(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path / PROBE_FILE))


class ProbeClassifier(nn.Module):
    """Encoder -> pooled features -> (x - mean) / scale -> linear: ``.logits`` like an HF
    sequence classifier."""

    def __init__(self, encoder: nn.Module, arrays: dict[str, np.ndarray], pooling: str) -> None:
        super().__init__()
        self.encoder, self.pooling = encoder, pooling
        for k in ("mean", "scale", "weight", "bias"):
            self.register_buffer(k, torch.as_tensor(arrays[k], dtype=torch.float32))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs: torch.Tensor) -> SimpleNamespace:
        h = Backbone(self.encoder).encode(input_ids, attention_mask, pooling=self.pooling,
                                          **kwargs).float()  # (B, H)
        z = (h - self.mean) / self.scale
        return SimpleNamespace(logits=z @ self.weight.T + self.bias)  # (B, C)


def load_probe(path: Path, pooling: str) -> ProbeClassifier:
    from safetensors.numpy import load_file
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(path, use_safetensors=True)
    return ProbeClassifier(encoder, load_file(str(path / PROBE_FILE)), pooling).eval()


CARD_NOTE = """The scikit-learn linear probe does not fit a transformers classifier class (it
reads mean-pooled features, BERT's classifier reads [CLS] through a pooler). The encoder loads
with plain `AutoModel`; the head is in `probe.safetensors`:

```python
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer
tok, enc = AutoTokenizer.from_pretrained("{path}"), AutoModel.from_pretrained("{path}")
head = load_file("{path}/probe.safetensors")
batch = tok(["a text"], return_tensors="pt", padding=True, truncation=True)
mask = batch["attention_mask"].unsqueeze(-1).float()
h = (enc(**batch).last_hidden_state * mask).sum(1) / mask.sum(1)   # mean pooling
logits = ((h - head["mean"]) / head["scale"]) @ head["weight"].T + head["bias"]
```

Or with pretune: `pretune predict {path} <inputs> -o predictions.csv`."""


__all__ = ["CARD_NOTE", "PROBE_FILE", "ProbeClassifier", "head_arrays", "load_probe",
           "save_probe_head"]
