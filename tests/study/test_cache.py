"""A study reuses a finished phase or cell only when everything that determined its result is
unchanged: the task data's content, the pre-training config (and so its checkpoint), the
fine-tuning config. A change reruns exactly what it affects."""

from __future__ import annotations

import csv
import json

import pytest

from pretune.config import StudyConfig, load_config
from pretune.study.identity import path_digest, source_identity
from pretune.study.runner import run_study

STUDY = """
name: cache
prepare:
  max_docs: 80
  tokenizer: {vocab_size: 500}
pretrain:
  model: {name: bert-tiny, overrides: {hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}}
  seq_len: 32
  train: {max_steps: 4, batch_size: 8, save_every: 2, eval_every: 2, progress: false, tensorboard: false}
starts: [scratch, pretrained]
strategies: [{name: full}]
budgets: [16]
seeds: [0]
probes: true
finetune:
  train: {epochs: 1, batch_size: 8, min_steps: null}
  task: {max_length: 32}
"""


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def setup(tmp_path, monkeypatch, rt_rows):
    monkeypatch.chdir(tmp_path)
    task = write_csv(tmp_path / "rt.csv", rt_rows[:120])
    (tmp_path / "s.yaml").write_text(STUDY)

    def cfg(*overrides: str) -> StudyConfig:
        return load_config(StudyConfig, tmp_path / "s.yaml", [
            f"output_dir={tmp_path / 'runs'}", f"prepare.output_dir={tmp_path / 'data'}",
            f"tasks=[{{path: {task}, test_size: 30, val_fraction: 0.1}}]", *overrides])
    return tmp_path, task, cfg


def _stamps(out):
    cells = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    probes = {(r["task"], r["step"]): r["fingerprint"]
              for r in json.loads((out / "probes.json").read_text())}
    final = (out / "pretrain" / "final" / "model.safetensors").stat().st_mtime_ns
    return cells, probes, final


def test_unchanged_inputs_reuse_everything(setup, capsys):
    _, _, cfg = setup
    out = run_study(cfg())
    before = _stamps(out)
    capsys.readouterr()
    run_study(cfg())
    printed = capsys.readouterr().out
    assert _stamps(out) == before
    assert "[1/" not in printed and "run again" not in printed


def test_changed_task_contents_rerun_its_cells_and_probes(setup, capsys):
    tmp, task, cfg = setup
    out = run_study(cfg())
    cells, probes, final = _stamps(out)
    rows = [dict(r) for r in csv.DictReader(task.open())]
    rows[0]["label"] = "fresh" if rows[0]["label"] == "rotten" else "rotten"
    write_csv(task, rows)  # same path, other contents
    capsys.readouterr()
    run_study(cfg())
    printed = capsys.readouterr().out
    cells2, probes2, final2 = _stamps(out)
    assert final2 == final  # pre-training does not read the task: reused
    assert all(cells2[k] != cells[k] for k in cells)  # every cell of the task ran again
    assert all(probes2[k] != probes[k] for k in probes)
    assert "2 finished cells ran with other inputs" in printed


def test_changed_finetune_settings_rerun_the_cells(setup):
    _, _, cfg = setup
    out = run_study(cfg())
    cells, probes, final = _stamps(out)
    run_study(cfg("finetune.optim.lr=1e-3"))
    cells2, probes2, final2 = _stamps(out)
    assert final2 == final and probes2 == probes  # probes fit scikit-learn: lr is not theirs
    assert all(cells2[k] != cells[k] for k in cells)
    result = json.loads(next((out / "cells").glob("*pretrained*.json")).read_text())
    assert result["status"] == "ok"


def test_changed_pretraining_reruns_it_and_only_the_cells_that_used_it(setup, capsys):
    _, _, cfg = setup
    out = run_study(cfg())
    cells, probes, final = _stamps(out)
    capsys.readouterr()
    run_study(cfg("pretrain.train.max_steps=6"))
    printed = capsys.readouterr().out
    assert "changed since" in printed and "starting it over" in printed
    cells2, probes2, final2 = _stamps(out)
    assert final2 != final
    summary = json.loads((out / "pretrain" / "summary.json").read_text())
    assert summary["steps"] == 6
    for k in cells:
        if "__scratch__" in k:
            assert cells2[k] == cells[k]  # random init + the same tokenizer: reused
        else:
            assert cells2[k] != cells[k]
    assert {s for _, s in probes2} == {0, 2, 4, 6}
    assert probes2[("rt", 2)] != probes[("rt", 2)]  # new checkpoints, new probes
    assert probes2[("rt", 0)] == probes[("rt", 0)]  # step 0 is the random init: reused


def test_identities_hash_contents_not_paths(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b" / "a.csv"
    b.parent.mkdir()
    a.write_text("text,label\nx,1\n")
    b.write_text("text,label\nx,1\n")
    assert path_digest(a) == path_digest(b)
    b.write_text("text,label\nx,0\n")
    assert path_digest(a) != path_digest(b)
    d = tmp_path / "dir"
    d.mkdir()
    (d / "w.bin").write_bytes(b"1")
    before = source_identity(str(d))
    (d / ".tmp-step-3-99").mkdir()  # temporary entries are not content
    (d / ".tmp-step-3-99" / "x").write_bytes(b"2")
    assert source_identity(str(d)) == before
    (d / "w.bin").write_bytes(b"2")
    assert source_identity(str(d)) != before
    assert source_identity("builtin:rotten-tomatoes").startswith("builtin:rotten-tomatoes@")
    assert source_identity("bert-tiny") == "bert-tiny"


def test_an_interrupted_cell_resumes_from_its_checkpoint(setup, monkeypatch, capsys):
    """With finetune.train.save_every a cell checkpoints; Ctrl-C in it, then the same command:
    the cell continues from its checkpoint and scores exactly what an uninterrupted run does."""
    import os
    import signal

    from pretune.study import cells

    _, _, cfg = setup
    ckpt = ["finetune.train.save_every=2", "finetune.train.eval_every=2",
            "finetune.train.epochs=3", "probes=false"]
    ref = run_study(cfg(*ckpt, "name=ref"))
    real = cells.finetune
    calls = {"n": 0}

    def interrupt_first_cell(ft, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            kw["on_evaluate"] = lambda i, m: i == 0 and os.kill(os.getpid(), signal.SIGINT)
        return real(ft, **kw)

    monkeypatch.setattr(cells, "finetune", interrupt_first_cell)
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg(*ckpt))
    capsys.readouterr()
    out = run_study(cfg(*ckpt))
    assert "resuming cell" in capsys.readouterr().out
    for f in (ref / "cells").glob("*.json"):
        if f.name.endswith(".inputs.json"):
            continue
        a, b = json.loads(f.read_text()), json.loads((out / "cells" / f.name).read_text())
        assert a["status"] == b["status"] == "ok", f.name
        scores = {k for k, v in a.items() if isinstance(v, float) and k != "seconds"}
        assert "roc_auc" in scores and all(a[k] == b[k] for k in scores), f.name
