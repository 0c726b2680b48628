"""`pretune study --workers 2`: the cells run in two processes, and the results are the
sequential run's, bit for bit, on the same thread count."""

from __future__ import annotations

import json

import pytest
import torch

from pretune.cli import main
from pretune.config import StudyConfig, load_config
from pretune.study.runner import run_study
from pretune.study.workers import groups, threads_per_worker

MATRIX = ["strategies=[{name: linear-probe, sklearn: true}, {name: full}]", "budgets=[16]",
          "seeds=[0, 1]", "pretrain.train.max_steps=3"]
TIMING = {"seconds", "error"}  # wall time differs run to run; nothing else may


def _rows(out):
    rows = json.loads((out / "report.json").read_text())["results"]
    return {r["cell"]: {k: v for k, v in r.items() if k not in TIMING} for r in rows}


def test_parallel_cells_equal_sequential(tmp_path, monkeypatch, tiny_study_yaml, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_study_yaml)
    base = [f"output_dir={tmp_path / 'runs'}", f"prepare.output_dir={tmp_path / 'data'}",
            *MATRIX]
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # what each of 2 workers gets on this 2-core machine
    try:
        seq = run_study(load_config(StudyConfig, path, [*base, "name=seq"]))
        capsys.readouterr()
        assert main(["study", str(path), *base, "name=par", "--workers", "2"]) == 0
    finally:
        torch.set_num_threads(old)
    printed = capsys.readouterr().out
    assert "running 8 cells in 2 workers" in printed and "8/8 cells done" in printed
    par = tmp_path / "runs" / "par"
    a, b = _rows(seq), _rows(par)
    assert len(a) == 8 and list(a) == list(b)  # same cells, same (plan) order
    assert all(r["status"] == "ok" for r in b.values())
    assert a == b
    # the parallel run's cells resume like any others: a rerun trains nothing
    assert main(["study", str(path), *base, "name=par", "--workers", "2"]) == 0
    assert "cells done" not in capsys.readouterr().out


def test_ray_backend_on_a_local_ray_equals_sequential(tmp_path, monkeypatch, tiny_study_yaml,
                                                      capsys):
    """The same cells as Ray tasks on a local Ray started by the run (no RAY_ADDRESS)."""
    pytest.importorskip("ray", reason="needs Ray (pretune[ray])")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_study_yaml)
    base = [f"output_dir={tmp_path / 'runs'}", f"prepare.output_dir={tmp_path / 'data'}",
            *MATRIX, "strategies=[{name: linear-probe, sklearn: true}]"]
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seq = run_study(load_config(StudyConfig, path, [*base, "name=seq"]))
        capsys.readouterr()
        assert main(["study", str(path), *base, "name=ray", "--workers", "2",
                     "--backend", "ray"]) == 0
    finally:
        torch.set_num_threads(old)
    assert "cells as Ray tasks on a local Ray (1 CPUs each)" in capsys.readouterr().out
    assert _rows(seq) == _rows(tmp_path / "runs" / "ray") and len(_rows(seq)) == 4


def test_probe_cells_of_a_start_stay_together():
    class C:
        def __init__(self, task, start, strategy):
            self.task, self.start, self.strategy = task, start, strategy

    todo = [(1, C("t", "a", "linear-probe-sklearn"), None, ""), (2, C("t", "a", "full"), None, ""),
            (3, C("t", "a", "linear-probe-sklearn"), None, ""),
            (4, C("t", "b", "linear-probe-sklearn"), None, "")]
    assert [[i for i, *_ in g] for g in groups(todo)] == [[1, 3], [2], [4]]
    assert threads_per_worker(1) >= threads_per_worker(2) >= 1


def test_workers_and_backend_are_checked(capsys):
    assert main(["study", "--workers", "0"]) == 2
    assert "--workers 0" in capsys.readouterr().err
    assert main(["study", "--backend", "dask"]) == 2
    assert "--backend dask: use processes" in capsys.readouterr().err


def _die(*_args, **_kw):  # a cell whose process is killed (out of memory, a segfault)
    import os

    os._exit(3)


def test_a_dead_worker_is_a_one_line_error_not_a_traceback(tmp_path):
    from types import SimpleNamespace

    from pretune.errors import PretuneError
    from pretune.study.matrix import Cell
    from pretune.study.workers import run_parallel

    todo = [(i, Cell("t", "scratch", "full", 0, 16, "16", i), None, "") for i in (1, 2)]
    setup = SimpleNamespace(loaded={"t": None})
    with pytest.raises(PretuneError, match="a worker process died .* after 0 of 2 cells"):
        run_parallel(None, setup, tmp_path, todo, 2, lambda *a: None, _die)
