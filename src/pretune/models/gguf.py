"""Embedded GGUF checkpoints (``builtin:smollm2``) as plain Hugging Face directories.

transformers reads a GGUF file (``from_pretrained(dir, gguf_file=...)``, needs the ``gguf``
package) by de-quantising every tensor to float32, ~30-60 s on 2 cores. We do that once, on
``pretune install-data`` or first use, and save a safetensors directory with the tokenizer and
chat template next to the packages, so later loads take a second and the directory works like
any other start (``hf:<dir>``, LoRA, ``save_pretrained``).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pretune.data.builtin import EMBEDDED, builtin_path, data_dir
from pretune.errors import PretuneError

CONVERTED = "converted"  # under the data dir
_DONE = "pretune_converted.txt"  # written last: a directory without it is incomplete

CARD = """---
library_name: transformers
pipeline_tag: text-generation
license: apache-2.0
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
---
# {name}

HuggingFaceTB/SmolLM2-135M-Instruct as shipped in `{dist}` (`{file}`), converted by pretune
into a float32 safetensors directory. **The weights are de-quantised 4-bit (GGUF Q4_1)**: they
are close to, not equal to, the original bfloat16 checkpoint; expect slightly lower quality.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{path}")
tokenizer = AutoTokenizer.from_pretrained("{path}")
```
"""


def is_gguf_builtin(name: str) -> bool:
    entry = EMBEDDED.get(name.removeprefix("builtin:"))
    return entry is not None and entry.relpath.endswith(".gguf")


def converted_dir(name: str) -> Path:
    """The HF directory of a GGUF builtin, converting it on first use."""
    name = name.removeprefix("builtin:")
    gguf = builtin_path(name)
    out = data_dir() / CONVERTED / gguf.stem
    if (out / _DONE).is_file():
        return out
    print(f"note: converting builtin:{name} ({gguf.name}) to a safetensors directory once, "
          f"into {out} (~1 min)", file=sys.stderr)
    _convert(name, gguf, out)
    return out


def _convert(name: str, gguf: Path, out: Path) -> None:
    try:
        import gguf as _  # noqa: F401 - transformers needs it to read the file
    except ImportError:
        raise PretuneError(f"builtin:{name} is a GGUF file; reading it needs the `gguf` package: "
                           "pip install gguf") from None
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
    config = quantised.config
    # The GGUF loader marks the model as quantised, which save_pretrained refuses; the tensors
    # are already float32, so move them into a plain model built from the same config.
    del config.quantization_config
    config._name_or_path = gguf.stem.split(".")[0]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantised.state_dict(), assign=True, strict=True)
    model.tie_weights()
    tokenizer.model_max_length = int(getattr(config, "max_position_embeddings", 2048))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    entry = EMBEDDED[name]
    (tmp / "README.md").write_text(CARD.format(name=config._name_or_path, dist=entry.dist,
                                               file=gguf.name, path=out))
    (tmp / _DONE).write_text(f"{gguf}\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
