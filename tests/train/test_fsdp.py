"""FSDP pre-training (``train.strategy=fsdp``) with 2 gloo processes under torchrun: each rank
holds half of every weight and optimizer state (PyTorch's ``fully_shard``). At batch size 4
per rank it follows the one-process run at batch 4 x grad_accum 2 (the same rows per step):
the logged losses agree within 1e-5 and the weights within 1e-4. Checkpoints carry every
rank's shards (DCP) beside a plain HF export; a resume from the shards is bitwise exact, and
the final model loads with plain transformers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pretune.config import LoopConfig, ModelConfig, OptimConfig, PretrainConfig, dump_yaml
from pretune.errors import PretuneError
from pretune.train.pretrain import pretrain

GPT = ModelConfig(name="gpt-tiny", dropout=0.0, overrides={"n_embd": 32, "n_layer": 2,
                                                          "n_head": 2})
SCRIPT = textwrap.dedent('''
    import sys
    import torch
    torch.set_num_threads(1)
    from pretune.config import PretrainConfig, load_yaml
    from pretune.train.pretrain import pretrain
    pretrain(PretrainConfig.model_validate(load_yaml(sys.argv[1])), resume=len(sys.argv) > 2)
    torch.distributed.destroy_process_group()
''')


def _cfg(tmp_path: Path, artifact: Path, name: str, **loop) -> PretrainConfig:
    train = LoopConfig(**{"max_steps": 8, "batch_size": 4, "eval_every": 4, "save_every": 4,
                          "log_every": 1, "progress": False, "report_to": [], **loop})
    return PretrainConfig(name=name, output_dir=str(tmp_path / "runs"), data=str(artifact),
                          model=GPT, seq_len=32, optim=OptimConfig(lr=3e-3, warmup_steps=2),
                          train=train, val_batches=2)


def _torchrun(tmp_path: Path, cfg: PretrainConfig, *extra: str) -> None:
    script, path = tmp_path / "fsdp_script.py", tmp_path / f"{cfg.name}.yaml"
    script.write_text(SCRIPT)
    path.write_text(dump_yaml(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(path), *extra], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _losses(run: Path) -> tuple[list[float], list[float]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return ([r["loss"] for r in rows if r["kind"] == "train"],
            [r["val_loss"] for r in rows if r["kind"] == "eval"])


@pytest.mark.slow
def test_fsdp_follows_one_process_resumes_from_shards_and_exports(bpe_artifact, tmp_path):
    one = pretrain(_cfg(tmp_path, bpe_artifact, "one", grad_accum=2))
    _torchrun(tmp_path, _cfg(tmp_path, bpe_artifact, "fsdp", strategy="fsdp"))
    runs = tmp_path / "runs"
    (a_train, a_val), (b_train, b_val) = _losses(one.parent), _losses(runs / "fsdp")
    assert len(a_train) == len(b_train) == 8 and len(a_val) == len(b_val) == 2
    assert max(abs(x - y) for x, y in zip(a_train + a_val, b_train + b_val,
                                                 strict=True)) < 1e-5
    ref = load_file(one / "model.safetensors")
    got = load_file(runs / "fsdp" / "final" / "model.safetensors")
    assert max((ref[k] - got[k]).abs().max().item() for k in ref) < 1e-4

    step4 = runs / "fsdp" / "checkpoints" / "step-4"
    assert sorted(p.name for p in (step4 / "dcp").glob("*.distcp")) == ["__0_0.distcp",
                                                                       "__1_0.distcp"]
    assert (step4 / "model.safetensors").is_file()  # the plain export beside the shards

    # A run killed after step 4: its step-8 checkpoint and final model never written.
    cut = runs / "cut"
    shutil.copytree(runs / "fsdp", cut)
    shutil.rmtree(cut / "checkpoints" / "step-8")
    shutil.rmtree(cut / "final")
    (cut / "checkpoints" / "latest").write_text("step-4\n")
    rows = (cut / "metrics.jsonl").read_text().splitlines()
    (cut / "metrics.jsonl").write_text("".join(r + "\n" for r in rows
                                               if json.loads(r)["step"] <= 4))
    _torchrun(tmp_path, _cfg(tmp_path, bpe_artifact, "cut", strategy="fsdp"), "--resume")
    resumed = load_file(cut / "final" / "model.safetensors")
    assert all(torch.equal(resumed[k], got[k]) for k in got)

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(runs / "fsdp" / "final")
    sd = model.state_dict()
    assert all(torch.equal(sd[k], got[k]) for k in got if k in sd)

    # Sharded state resumes only where there are shards to read: one line, not a traceback.
    with pytest.raises(PretuneError, match="saved with train.strategy=fsdp"):
        pretrain(_cfg(tmp_path, bpe_artifact, "cut", strategy="fsdp", max_steps=12),
                 resume=True)


BEST_SCRIPT = textwrap.dedent('''
    import os, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from safetensors.torch import save_file
    from pretune.config import LoopConfig, ModelConfig, OptimConfig
    from pretune.data.shards import PackedTokens
    from pretune.models.registry import load_model, load_tokenizer_for
    from pretune.train.loop import Evaluation, fit
    from pretune.train.objectives import BlockBatches, clm_loss
    from pretune.train.runtime import distributed

    artifact, out, steps, resume = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), \\
        sys.argv[4] == "resume"
    rank, world, _ = distributed()
    spec = ModelConfig(name="gpt-tiny", dropout=0.0, overrides={"n_embd": 32, "n_layer": 2,
                                                                "n_head": 2})
    tok = load_tokenizer_for(spec, artifact / "tokenizer")
    torch.manual_seed(0)
    model = load_model(spec, "clm", tok)
    batches = BlockBatches(PackedTokens(artifact).tokens, "clm", 32, 4, rank=rank,
                           world_size=world)
    counter = out / f"evals-{rank}"  # scripted scores by evaluation: the best is the 2nd
    def evaluate(m):
        n = int(counter.read_text()) if counter.is_file() else 0
        counter.write_text(str(n + 1))
        return {"score": [1.0, 0.5, 2.0, 3.0][n]}
    loop = LoopConfig(max_steps=steps, eval_every=2, save_every=3, log_every=1, progress=False,
                      report_to=[], strategy="fsdp")
    fit(model, clm_loss, batches, loop, OptimConfig(lr=1e-2, schedule="constant"), out / "run",
        evaluate=Evaluation(evaluate, metric="score", mode="min", restore_best=True),
        resume=resume)
    if rank == 0:
        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
                  str(out / "final.safetensors"))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
''')


@pytest.mark.slow
def test_fsdp_resume_still_ends_on_the_best_weights(bpe_artifact, tmp_path):
    """The best evaluation (step 4) is not a checkpoint step (3, 6): its gathered weights are
    written beside the checkpoints, so a run stopped at step 6 and resumed to 8 ends on them,
    as the uninterrupted run does."""
    script = tmp_path / "best.py"
    script.write_text(BEST_SCRIPT)

    def run(out: Path, steps: int, mode: str) -> None:
        out.mkdir(exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
             "2", str(script), str(bpe_artifact), str(out), str(steps), mode],
            capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]

    run(tmp_path / "whole", 8, "fresh")
    run(tmp_path / "cut", 6, "fresh")
    assert (tmp_path / "cut" / "run" / "checkpoints" / "best-step-4.safetensors").is_file()
    run(tmp_path / "cut", 8, "resume")
    a = load_file(tmp_path / "whole" / "final.safetensors")
    b = load_file(tmp_path / "cut" / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
