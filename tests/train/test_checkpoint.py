"""Checkpoints: exact resume after SIGKILL (bitwise on CPU), atomic saves, retention, RNG
state round trip through weights_only loading, PEFT weights, wrong-model errors."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pretune.config import LoopConfig, ModelConfig, OptimConfig
from pretune.data.shards import PackedTokens
from pretune.errors import PretuneError
from pretune.models.registry import load_model, load_tokenizer_for
from pretune.train import checkpoint as ckpt
from pretune.train.loop import Evaluation, fit
from pretune.train.objectives import BlockBatches, MaskingSpec, mlm_loss
from pretune.train.runtime import default_save

# Tiny models (hidden 32, one layer): seconds per test on 2 CPU cores.
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64}
TINY_BERT = ModelConfig(name="bert-tiny", dropout=0.0, overrides=TINY)


def train_run(artifact: Path, out: Path, mode: str) -> None:
    """One recipe for three runs: "full"; "kill": SIGKILLs itself mid-accumulation after the
    step-10 checkpoint; "resume": continues the killed run. Dropout is on, so RNG state matters.
    One thread, so the in-process run and the subprocesses do identical float arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = ModelConfig(name="bert-tiny", dropout=0.1, overrides=TINY)
        tok = load_tokenizer_for(spec, artifact / "tokenizer")
        torch.manual_seed(123)
        model = load_model(spec, "mlm", tok)
        stream = BlockBatches(PackedTokens(artifact).tokens, "mlm", 32, 4,
                              masking=MaskingSpec.from_tokenizer(tok), cls_id=tok.cls_token_id,
                              seed=5)
        loop = LoopConfig(max_steps=24, grad_accum=2, save_every=5, log_every=3, seed=7,
                          progress=False, tensorboard=False)
        fit(model, mlm_loss, _KillAt(stream, 27) if mode == "kill" else stream, loop,
            OptimConfig(lr=2e-3, warmup_steps=3, schedule="cosine"), out, resume=mode == "resume")
    finally:
        torch.set_num_threads(threads)


class _KillAt:
    """The batch stream, but SIGKILL the process when micro-batch ``n`` is requested."""

    def __init__(self, inner: BlockBatches, n: int) -> None:
        self.inner, self.n, self.count = inner, n, 0

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, e: int) -> None:
        self.inner.set_epoch(e)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, s: dict) -> None:
        self.inner.load_state_dict(s)

    def __iter__(self):
        for b in self.inner:
            self.count += 1
            if self.count == self.n:
                os.kill(os.getpid(), signal.SIGKILL)
            yield b


SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, {here!r})
from test_checkpoint import train_run
train_run(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
"""


def _run(tmp: Path, artifact: Path, out: Path, mode: str) -> subprocess.CompletedProcess:
    script = tmp / "train_script.py"
    script.write_text(SCRIPT.format(here=str(Path(__file__).parent)))
    return subprocess.run([sys.executable, str(script), str(artifact), str(out), mode],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(wp_artifact, tmp_path: Path):
    train_run(wp_artifact, tmp_path / "full", "full")  # the uninterrupted reference, in-process
    killed = _run(tmp_path, wp_artifact, tmp_path / "resumed", "kill")
    assert killed.returncode == -9, killed.stderr[-2000:]
    root = tmp_path / "resumed" / "checkpoints"
    assert (root / "latest").read_text().strip() == "step-10"
    assert not (root / "step-15").exists()
    resumed = _run(tmp_path, wp_artifact, tmp_path / "resumed", "resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(tmp_path / "full" / "checkpoints" / "step-24" / "model.safetensors")
    b = load_file(root / "step-24" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The resumed run's metrics.jsonl has no duplicate steps from the killed attempt.
    steps = [line for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == len(set(steps)) == 8


@pytest.fixture(scope="module")
def tok(wp_artifact):
    return load_tokenizer_for(TINY_BERT, wp_artifact / "tokenizer")


def _model_and_batches(wp_artifact, tok):
    torch.manual_seed(0)
    model = load_model(TINY_BERT, "mlm", tok)
    spec = MaskingSpec.from_tokenizer(tok)
    return model, BlockBatches(PackedTokens(wp_artifact).tokens, "mlm", 32, 4, masking=spec,
                               cls_id=tok.cls_token_id)


def test_crash_mid_save_keeps_last_good_checkpoint(wp_artifact, tok, tmp_path: Path):
    model, _ = _model_and_batches(wp_artifact, tok)
    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(root, 5, model, default_save, {"x": 1}, keep_last=2)

    def broken_save(m, path):
        default_save(m, path)
        raise OSError("disk full")

    with pytest.raises(OSError):
        ckpt.save_checkpoint(root, 10, model, broken_save, {"x": 2}, keep_last=2)
    assert ckpt.latest_checkpoint(root) == root / "step-5"
    assert [s for s, _ in ckpt.step_dirs(root)] == [5]
    assert ckpt.load_trainer_state(root / "step-5") == {"x": 1}


def test_retention_keeps_last_k_and_best(wp_artifact, tok, tmp_path: Path):
    model, _ = _model_and_batches(wp_artifact, tok)
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3, 4, 5):
        ckpt.save_checkpoint(root, step, model, default_save, {}, keep_last=2, keep_steps={2})
    assert [s for s, _ in ckpt.step_dirs(root)] == [2, 4, 5]
    assert (root / "latest").read_text().strip() == "step-5"


def test_rng_state_roundtrip_weights_only(tmp_path: Path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = ckpt.rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.save({"rng": state}, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)["rng"]
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    ckpt.set_rng_state(loaded)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_peft_model_resume_weights(wp_artifact, tok, tmp_path: Path):
    from peft import LoraConfig, get_peft_model

    model, batches = _model_and_batches(wp_artifact, tok)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["query", "value"]))
    loop = LoopConfig(max_steps=3, progress=False, tensorboard=False)
    fit(peft_model, mlm_loss, batches, loop, OptimConfig(lr=1e-2), tmp_path)
    last = tmp_path / "checkpoints" / "step-3"
    assert (last / "adapter_model.safetensors").is_file()
    assert (last / ckpt.EXTRA_WEIGHTS).is_file()  # adapter keys differ from the live names
    fresh, _ = _model_and_batches(wp_artifact, tok)
    fresh = get_peft_model(fresh, LoraConfig(r=2, target_modules=["query", "value"]))
    ckpt.load_weights(fresh, last)
    for (n, a), b in zip(peft_model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), n


def test_checkpoint_of_another_model_is_rejected(wp_artifact, tok, tmp_path: Path):
    model, _ = _model_and_batches(wp_artifact, tok)
    ckpt.save_checkpoint(tmp_path, 1, model, default_save, {}, keep_last=1)
    other = load_model(TINY_BERT.model_copy(update={"overrides": {**TINY_BERT.overrides,
                                                                   "hidden_size": 64}}), "mlm", tok)
    with pytest.raises(PretuneError, match="another model"):
        ckpt.load_weights(other, tmp_path / "step-1")


class _Crash(Exception):
    pass


def _scripted_eval(values: list[float]):
    it = iter(values)
    return Evaluation(lambda m: {"acc": next(it)}, metric="acc", mode="max", restore_best=True)


def test_resuming_a_finished_run_is_a_no_op(wp_artifact, tok, tmp_path: Path):
    loop = LoopConfig(max_steps=6, save_every=3, log_every=3, progress=False, tensorboard=False)
    model, batches = _model_and_batches(wp_artifact, tok)
    fit(model, mlm_loss, batches, loop, OptimConfig(schedule="constant"), tmp_path)
    last = tmp_path / "checkpoints" / "step-6"
    before = last.stat().st_mtime_ns, load_file(last / "model.safetensors")
    model, batches = _model_and_batches(wp_artifact, tok)
    res = fit(model, mlm_loss, batches, loop, OptimConfig(schedule="constant"), tmp_path,
              resume=True)
    assert res.already_finished and res.steps == 6 and res.stopped_reason == "max_steps"
    assert last.stat().st_mtime_ns == before[0]  # not re-saved
    assert not (tmp_path / "checkpoints" / "step-7").exists()
    for k, v in model.state_dict().items():  # no extra optimizer step was taken
        if k in before[1]:
            assert torch.equal(v, before[1][k]), k


def test_best_weights_survive_a_resume(wp_artifact, tok, tmp_path: Path):
    """Best evaluation at step 4, checkpoints at 3 and 6 only, killed after step 6: the resumed
    run still ends on step 4's weights, bitwise those of the uninterrupted run."""
    loop = LoopConfig(max_steps=8, eval_every=2, save_every=3, keep_last=1, log_every=2,
                      progress=False, tensorboard=False)
    optim = OptimConfig(lr=3e-3)
    model, batches = _model_and_batches(wp_artifact, tok)
    fit(model, mlm_loss, batches, loop, optim, tmp_path / "full",
        evaluate=_scripted_eval([0.5, 0.9, 0.6, 0.7]))
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    model, batches = _model_and_batches(wp_artifact, tok)
    calls = {"n": 0}

    def dies_after_step_6(m, batch):
        calls["n"] += 1
        if calls["n"] == 7:
            raise _Crash
        return mlm_loss(m, batch)

    with pytest.raises(_Crash):
        fit(model, dies_after_step_6, batches, loop, optim, tmp_path / "cut",
            evaluate=_scripted_eval([0.5, 0.9, 0.6, 0.7]))
    root = tmp_path / "cut" / "checkpoints"
    assert (root / "latest").read_text().strip() == "step-6" and not (root / "step-4").exists()
    assert (root / "best-step-4.safetensors").is_file()
    model, batches = _model_and_batches(wp_artifact, tok)
    res = fit(model, mlm_loss, batches, loop, optim, tmp_path / "cut",
              evaluate=_scripted_eval([0.7]), resume=True)
    assert (res.best_step, res.steps) == (4, 8)
    for k, v in model.state_dict().items():
        assert torch.equal(v, reference[k]), k


def test_stale_temp_entries_of_killed_saves_are_cleaned(wp_artifact, tok, tmp_path: Path):
    loop = LoopConfig(max_steps=2, save_every=2, progress=False, tensorboard=False)
    model, batches = _model_and_batches(wp_artifact, tok)
    fit(model, mlm_loss, batches, loop, OptimConfig(), tmp_path)
    root = tmp_path / "checkpoints"
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    (root / f".tmp-step-3-{dead}").mkdir()
    (root / f".tmp-step-3-{dead}" / "model.safetensors").write_bytes(b"x" * 1000)
    (root / f".latest-{dead}").write_text("step-3\n")
    (root / f".tmp-step-3-{os.getppid()}").mkdir()  # a live process's save: left alone
    model, batches = _model_and_batches(wp_artifact, tok)
    fit(model, mlm_loss, batches, LoopConfig(max_steps=4, save_every=2, progress=False,
                                             tensorboard=False), OptimConfig(), tmp_path,
        resume=True)
    names = {p.name for p in root.iterdir()}
    assert f".tmp-step-3-{dead}" not in names and f".latest-{dead}" not in names
    assert f".tmp-step-3-{os.getppid()}" in names
