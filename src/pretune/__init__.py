"""pretune: pre-train -> fine-tune, and find out whether pre-training helped.

Public entry points (each also a CLI command, see `pretune --help`):
``pretune.data.pipeline.prepare``, ``pretune.train.pretrain.pretrain``,
``pretune.finetune.run.finetune``, ``pretune.study.runner.run_study``.
"""

__version__ = "0.1.0"
