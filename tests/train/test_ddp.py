"""Multi-process training: 2 CPU processes under torchrun (gloo) train a tiny BERT MLM on
disjoint data shards; DDP averages gradients, so the weights end equal on both ranks, and only
rank 0 writes logs and checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

SCRIPT = textwrap.dedent('''
    import os, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from safetensors.torch import save_file
    from pretune.config import LoopConfig, ModelConfig, OptimConfig
    from pretune.data.shards import PackedTokens
    from pretune.models.registry import load_model, load_tokenizer_for
    from pretune.train.loop import fit
    from pretune.train.runtime import distributed
    from pretune.train.objectives import BlockBatches, MaskingSpec, mlm_loss

    artifact, out = Path(sys.argv[1]), Path(sys.argv[2])
    rank, world, _ = distributed()
    spec = ModelConfig(name="bert-tiny", dropout=0.0, overrides={"hidden_size": 32,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64})
    tok = load_tokenizer_for(spec, artifact / "tokenizer")
    torch.manual_seed(0)  # same init on every rank (DDP also broadcasts rank 0's weights)
    model = load_model(spec, "mlm", tok)
    batches = BlockBatches(PackedTokens(artifact).tokens, "mlm", 32, 4,
                           masking=MaskingSpec.from_tokenizer(tok), cls_id=tok.cls_token_id,
                           rank=rank, world_size=world)
    loop = LoopConfig(max_steps=4, log_every=2, progress=False, tensorboard=False)
    res = fit(model, mlm_loss, batches, loop, OptimConfig(lr=1e-2), out / "run")
    save_file({k: v.detach().contiguous() for k, v in model.named_parameters()},
              str(out / f"rank{rank}.safetensors"))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
''')


@pytest.mark.slow
def test_two_process_ddp_keeps_ranks_in_sync(wp_artifact, tmp_path: Path):
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(wp_artifact), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_file(tmp_path / "rank0.safetensors")
    b = load_file(tmp_path / "rank1.safetensors")
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-6, k
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4]  # rank 0 only
    assert lines[-1]["tokens"] == 4 * 2 * 4 * 32  # both ranks' tokens counted
    assert (tmp_path / "run" / "checkpoints" / "step-4" / "model.safetensors").is_file()
