"""``finetune --resume``: an interrupted fine-tuning run continues exactly (bitwise on CPU)
from its last checkpoint; a finished run is left alone; a changed config is refused."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from pretune.errors import PretuneError
from pretune.finetune.run import finetune


def _cfg(make_cfg, **train):
    base = make_cfg()
    loop = base.train.model_copy(update={"epochs": 2, "eval_every": 3, "save_every": 3,
                                         **train})
    return base.model_copy(update={"train": loop})


def _interrupt_at(i: int):
    def hook(n, metrics):
        if n == i:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does: the loop saves and stops
    return hook


def test_interrupted_finetune_resumes_bitwise(make_cfg, tmp_path, capsys):
    ref_cfg = _cfg(make_cfg).model_copy(update={"name": "ref"})
    ref = finetune(ref_cfg)
    cfg = _cfg(make_cfg)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, on_evaluate=_interrupt_at(2))
    assert "continue with --resume" in capsys.readouterr().err
    out = tmp_path / "runs" / "ft"
    assert not (out / "metrics.json").exists()  # an interrupted run is not a result
    res = finetune(cfg, resume=True)
    assert res.steps == ref.steps == 24
    assert res.metrics == ref.metrics and res.val_metrics == ref.val_metrics
    a = load_file(ref.out_dir / "model" / "model.safetensors")
    b = load_file(res.out_dir / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (out / "train" / "checkpoints").exists()  # finished: checkpoints dropped
    again = finetune(cfg, resume=True)  # finished: a no-op that says so
    assert "already finished" in capsys.readouterr().out
    assert again.metrics == res.metrics


def test_resume_refuses_a_changed_config_and_a_run_without_checkpoints(make_cfg):
    cfg = _cfg(make_cfg)
    with pytest.raises(PretuneError, match="nothing to resume"):
        finetune(cfg, resume=True)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, on_evaluate=_interrupt_at(0))
    other = cfg.model_copy(update={"task": cfg.task.model_copy(update={"max_length": 32})})
    with pytest.raises(PretuneError, match="cannot resume .*task settings differ"):
        finetune(other, resume=True)
    lr = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"lr": 1e-2})})
    with pytest.raises(PretuneError, match="different optim"):
        finetune(lr, resume=True)
