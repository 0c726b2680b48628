"""Tracking and logs of the one loop, for real: MLflow's local file store and W&B offline runs
read back, TensorBoard scalars and HParams read with TensorBoard's reader, plain log lines
when stdout is not a terminal, and a torch.profiler trace."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from pretune.config import LoopConfig, OptimConfig
from pretune.errors import PretuneError
from pretune.train.loop import fit
from pretune.train.objectives import mlm_loss
from pretune.train.trackers import RunInfo, Trackers, flat_params

OPTIM = OptimConfig(lr=3e-3, warmup_steps=2)


def _loop(**kw) -> LoopConfig:
    return LoopConfig(**{"max_steps": 6, "log_every": 2, "progress": False, **kw})


def test_grad_norm_lr_tokens_and_peak_memory_in_every_train_record(setup, tmp_path):
    model, batches = setup()
    res = fit(model, mlm_loss, batches, _loop(), OPTIM, tmp_path)
    train = [h for h in res.history if h["kind"] == "train"]
    assert [h["step"] for h in train] == [2, 4, 6] and train[0]["lr"] > 0
    for h in train:
        assert h["grad_norm"] > 0 and h["lr"] >= 0 and h["tokens_per_s"] > 0
        assert h["peak_mem_mb"] > 50  # process RSS on CPU: at least the interpreter + torch


def test_grad_norm_is_measured_before_clipping(setup, tmp_path):
    model, batches = setup()
    clipped = fit(model, mlm_loss, batches, _loop(max_steps=2),
                  OPTIM.model_copy(update={"grad_clip": 1e-3}), None)
    assert clipped.history[-1]["grad_norm"] > 1e-3  # the raw norm, not the clipped one


def test_tensorboard_scalars(setup, tmp_path, tb_events):
    model, batches = setup()
    fit(model, mlm_loss, batches, _loop(), OPTIM, tmp_path)
    scalars = tb_events(tmp_path / "tensorboard")["scalars"]
    assert [s for s, _ in scalars["train/loss"]] == [2, 4, 6]
    assert {"train/grad_norm", "train/lr", "train/tokens_per_s", "train/peak_mem_mb"} <= set(scalars)


def test_mlflow_file_store_run_read_back(setup, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model, batches = setup()
    trackers = Trackers(["mlflow"], tmp_path / "run",
                        RunInfo("run-a", "exp-1", tmp_path, {"optim.lr": 3e-3, "seed": 0}))
    fit(model, mlm_loss, batches, _loop(), OPTIM, tmp_path / "run", trackers=trackers)
    trackers.finish({"test/accuracy": 0.75}, {"train_examples": 12}, step=6)
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("exp-1").experiment_id])
    assert run.info.run_name == "run-a" and run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.003" and run.data.params["train_examples"] == "12"
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in loss] == [2, 4, 6]
    assert run.data.metrics["test/accuracy"] == 0.75 and run.data.metrics["train/grad_norm"] > 0


def _wandb_records(run_file: Path) -> list:
    """The records of a W&B ``.wandb`` file (its LevelDB-style log: 32 KiB blocks of
    checksum/length/type-framed chunks), parsed with W&B's own protobuf classes."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw, pos, block, records, part = run_file.read_bytes(), 7, 32768, [], b""
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        if block - pos % block < 7:
            pos += block - pos % block  # a block's tail too short for a header is padding
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += block - pos % block
            continue
        data, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        part = data if kind in (1, 2) else part + data
        if kind in (1, 4):  # FULL or LAST: a whole record
            rec = pb.Record()
            rec.ParseFromString(part)
            records.append(rec)
    return records


def test_wandb_offline_run_read_back(setup, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    model, batches = setup()
    trackers = Trackers(["wandb"], tmp_path / "run", RunInfo("run-w", "exp-w", tmp_path,
                                                             {"optim.lr": 3e-3}))
    fit(model, mlm_loss, batches, _loop(), OPTIM, tmp_path / "run", trackers=trackers)
    trackers.finish({"test/accuracy": 0.5}, step=6)
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    history, summary = [], {}
    for rec in _wandb_records(run_file):
        kind = rec.WhichOneof("record_type")
        items = rec.history.item if kind == "history" else rec.summary.update \
            if kind == "summary" else []
        values = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}
        if kind == "history":
            history.append(values)
        elif kind == "summary":
            summary.update(values)
    assert [h["_step"] for h in history if "train/loss" in h] == [2, 4, 6]
    assert all(h["train/grad_norm"] > 0 for h in history if "train/loss" in h)
    assert summary["test/accuracy"] == 0.5


def test_unknown_or_missing_tracker_is_one_line(monkeypatch, tmp_path):
    import importlib.util

    with pytest.raises(ValueError):
        LoopConfig(report_to=["comet"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(PretuneError, match=r"pip install 'pretune\[tracking\]'"):
        Trackers(["wandb"], tmp_path, RunInfo("x"))  # at construction: before any work


def test_report_to_spellings_and_the_older_tensorboard_switch():
    assert LoopConfig().report_to == ["tensorboard"]
    assert LoopConfig(tensorboard=False).report_to == []
    assert LoopConfig(report_to="mlflow,wandb").report_to == ["mlflow", "wandb"]
    assert LoopConfig(report_to=["mlflow"], tensorboard=True).report_to == ["tensorboard", "mlflow"]
    assert LoopConfig(report_to="none").report_to == [] and not LoopConfig(report_to=[]).tensorboard


def test_plain_lines_when_stdout_is_not_a_terminal(setup, tmp_path, capsys):
    model, batches = setup()
    _, vb = setup(split="val", shuffle=False)
    val = vb.fixed(2)
    fit(model, mlm_loss, batches, _loop(progress=True, eval_every=3), OPTIM, tmp_path,
        evaluate=lambda m: {"val_loss": sum(mlm_loss(m, b).item() for b in val) / len(val)})
    lines = capsys.readouterr().out.splitlines()  # captured: not a terminal
    train = [ln for ln in lines if ln.startswith("step ")]
    assert len(train) == 3 and train[0].startswith("step 2/6 | loss ")
    for part in ("lr ", "tok/s", "grad ", "mem ", "elapsed ", "ETA "):
        assert part in train[0], part
    assert [ln.split(" |")[0] for ln in lines if ln.startswith("eval")] == \
        ["eval step 3/6", "eval step 6/6"]
    assert "val_loss" in next(ln for ln in lines if ln.startswith("eval"))


def test_profiler_trace_and_top_ops_line(setup, tmp_path, capsys):
    model, batches = setup()
    fit(model, mlm_loss, batches, _loop(profile_steps=(2, 3)), OPTIM, tmp_path)
    (trace,) = (tmp_path / "tensorboard" / "profile").glob("*.pt.trace.json")
    assert trace.name == "steps-2-3.pt.trace.json"
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e.get("name", "").startswith("aten::") for e in events)
    out = capsys.readouterr().out
    assert "profile of steps 2-3: top ops by self CPU time: aten::" in out and str(trace) in out
    with pytest.raises(ValueError, match="profile_steps"):
        LoopConfig(profile_steps=(3, 2))


def test_flat_params():
    params = flat_params(LoopConfig(max_steps=3))
    assert params["max_steps"] == 3 and params["report_to"] == "['tensorboard']"
    assert params["epochs"] == "none"
