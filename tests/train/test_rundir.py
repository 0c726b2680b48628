"""Run directories: names that are not paths, --overwrite that only removes runs, and a real
(kernel) lock so two processes never share one run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pretune.config import FinetuneConfig, PretrainConfig, StudyConfig, load_config
from pretune.errors import PretuneError
from pretune.train.rundir import MARKER, prepare_run_dir, remove_run, run_lock


@pytest.mark.parametrize("name", ["", "..", ".", "../x", "a/b"])
@pytest.mark.parametrize("cls", [FinetuneConfig, PretrainConfig, StudyConfig])
def test_names_that_are_paths_are_refused(cls, name):
    with pytest.raises(PretuneError, match="'name'.*not a plain directory name"):
        load_config(cls, None, [f"name={name}"])


def test_overwrite_removes_runs_and_nothing_else(tmp_path):
    out = tmp_path / "runs"
    (out / "sibling").mkdir(parents=True)
    (out / "sibling" / "keep.txt").write_text("mine")
    run = prepare_run_dir(str(out), "r", overwrite=False)
    assert (run / MARKER).is_file()
    (run / "metrics.json").write_text("{}")
    with pytest.raises(PretuneError, match="already exists; pass --overwrite"):
        prepare_run_dir(str(out), "r", overwrite=False)
    run = prepare_run_dir(str(out), "r", overwrite=True)
    assert not (run / "metrics.json").exists() and (run / MARKER).is_file()
    # a folder of the user's that happens to have the run's name is not deleted
    with pytest.raises(PretuneError, match="not a pretune run directory"):
        prepare_run_dir(str(out), "sibling", overwrite=True)
    assert (out / "sibling" / "keep.txt").read_text() == "mine"
    (out / "empty").mkdir()
    remove_run(out / "empty")  # an empty dir is nobody's work
    assert not (out / "empty").exists()


HOLD = """
import sys, time
from pathlib import Path
from pretune.train.rundir import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_process_on_the_same_run_is_refused(tmp_path):
    run = tmp_path / "runs" / "r"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PretuneError, match=rf"run .*r is in use by pid {holder.pid}"), \
                run_lock(run):
            pass
        with run_lock(tmp_path / "runs" / "other"):  # other runs are free
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # a killed holder leaves no stale lock: the kernel released it
    deadline = time.time() + 5
    while True:
        try:
            with run_lock(run):
                break
        except PretuneError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def test_runs_nested_in_a_held_run_take_no_lock_of_their_own(tmp_path):
    study = tmp_path / "runs" / "study"
    with run_lock(study):
        with run_lock(study / "cells" / "c1"):  # a study's cell, same process
            pass
        assert not (study / "cells" / ".c1.lock").exists()
    assert (tmp_path / "runs" / ".study.lock").is_file()


def test_finetune_into_a_locked_run_is_refused(tmp_path, rt_csv, tiny_bert):
    from pretune.finetune.run import finetune

    cfg = FinetuneConfig(name="r", output_dir=str(tmp_path), model=tiny_bert,
                         task={"path": str(rt_csv)})
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(Path(tmp_path) / "r")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PretuneError, match="in use by pid"):
            finetune(cfg, overwrite=True)
    finally:
        holder.kill()
        holder.wait()
