"""Fine-tuning under ``torchrun``: 2 gloo processes at batch size 8 each train on the rows one
process sees at batch size 16 (each rank takes its rows of every length-grouped batch),
evaluation splits the examples over the ranks and gathers the outputs once, and only rank 0
writes. DDP and FSDP both give the single process's metrics, predictions and weights."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pretune.config import dump_yaml
from pretune.finetune.run import finetune
from pretune.train.parallel import RankBatches, rank_part

SCRIPT = textwrap.dedent('''
    import sys
    import torch
    torch.set_num_threads(1)
    from pretune.config import FinetuneConfig, load_yaml
    from pretune.finetune.run import finetune
    finetune(FinetuneConfig.model_validate(load_yaml(sys.argv[1])))
    torch.distributed.destroy_process_group()
''')


def _torchrun(tmp_path: Path, cfg) -> None:
    script, path = tmp_path / "ft_script.py", tmp_path / f"{cfg.name}.yaml"
    script.write_text(SCRIPT)
    path.write_text(dump_yaml(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(path)], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _predictions(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_process_finetune_equals_one_process(make_cfg, tmp_path: Path):
    def cfg(name: str, batch: int, strategy: str = "ddp"):
        base = make_cfg(name=name)
        model = base.model.model_copy(update={"dropout": 0.0})  # ranks draw no own noise
        train = base.train.model_copy(update={"batch_size": batch, "epochs": 2, "strategy":
                                              strategy, "eval_every": 5})
        return base.model_copy(update={"model": model, "train": train,
                                       "optim": base.optim.model_copy(update={"lr": 1e-3})})

    one = finetune(cfg("one", 16))
    _torchrun(tmp_path, cfg("ddp", 8))
    _torchrun(tmp_path, cfg("fsdp", 8, "fsdp"))
    runs = tmp_path / "runs"
    ref = load_file(one.out_dir / "model" / "model.safetensors")
    for name in ("ddp", "fsdp"):
        m = json.loads((runs / name / "metrics.json").read_text())
        assert m["timing"]["steps"] == one.steps
        for split, want in (("test", one.metrics), ("val", one.val_metrics)):
            for k, v in want.items():  # float noise of the all-reduce may swap two tied ranks
                if isinstance(v, float):
                    assert abs(m[split][k] - v) < 2e-3, (name, split, k)
        got, ref_p = _predictions(runs / name), _predictions(one.out_dir)
        assert [r["id"] for r in got] == [r["id"] for r in ref_p]
        gap = max(abs(a["p"] - b["p"]) for a, b in zip(got, ref_p, strict=True))
        print(f"{name}: max probability difference {gap:.2e}")
        assert gap < 1e-4, name
        w = load_file(runs / name / "model" / "model.safetensors")
        assert w.keys() == ref.keys()
        diff = max((w[k] - ref[k]).abs().max().item() for k in w)
        print(f"{name}: max weight difference {diff:.2e}")
        assert diff < 1e-4, name
        # rank 0 alone wrote the run: one metrics line per log step and evaluation
        rows = [json.loads(x) for x in
                (runs / name / "train" / "metrics.jsonl").read_text().splitlines()]
        for kind in ("train", "eval"):
            steps = [r["step"] for r in rows if r["kind"] == kind]
            assert steps and len(steps) == len(set(steps)), (name, kind)
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(runs / "fsdp" / "model")


def test_rank_rows_and_parts_cover_the_data_once():
    batches = [{"input_ids": torch.arange(i, i + 5)[:, None], "labels": torch.arange(5)}
               for i in (0, 10)] + [{"input_ids": torch.tensor([[99]]), "labels": torch.tensor([0])}]

    class Stream(list):
        def set_epoch(self, e): ...
        def state_dict(self): return {"epoch": 0, "position": 0, "seed": 0}
        def load_state_dict(self, s): ...

    parts = [list(RankBatches(Stream(batches), r, 2)) for r in (0, 1)]
    rows = sorted(int(x) for p in parts for b in p[:2] for x in b["input_ids"].flatten())
    assert rows == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]  # each row once
    assert [len(p) for p in parts] == [3, 3]  # as many steps as batches, on every rank
    assert [int(p[2]["input_ids"]) for p in parts] == [99, 99]  # a 1-row batch: both take it
    with pytest.raises(Exception, match="same number of processes"):
        RankBatches(Stream(batches), 0, 2).load_state_dict({"world_size": 4})
    for n in (1, 5, 6):
        shares = [rank_part(n, r, 2) for r in (0, 1)]
        assert len(shares[0][0]) == len(shares[1][0])  # same forwards on every rank
        real = [i for idx, k in shares for i in idx[:k]]
        assert real == list(range(n))
