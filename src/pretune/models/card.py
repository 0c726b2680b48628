"""The one model card (``README.md``) every model directory pretune writes carries: what the
model is, how it was made, its scores, and how to load it with plain ``transformers``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

# The public checkpoints behind the builtin starts: their Hub ids and licenses.
BUILTIN_BASES = {"builtin:minilm": ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
                 "builtin:smollm2": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")}
_SNAPSHOT = re.compile(r"models--([^/]+)--([^/]+)/snapshots/")


def front_matter(path: Path) -> dict[str, Any]:
    """The YAML front matter of a model dir's README.md ({} when none or unreadable)."""
    try:
        text = (path / "README.md").read_text(encoding="utf-8")
        if text.startswith("---"):
            data = yaml.safe_load(text.split("---", 2)[1])
            return data if isinstance(data, dict) else {}
    except (OSError, yaml.YAMLError, IndexError):
        pass
    return {}


def lineage(name: str, path: Path | None) -> tuple[str | None, str | None]:
    """(base_model Hub id, license) of a start: a builtin's public checkpoint, a Hub
    snapshot's id and the license its card declares, or what a local dir's card says."""
    if name in BUILTIN_BASES:
        return BUILTIN_BASES[name]
    if path is None:  # a registry architecture: random init, no base model
        return None, None
    meta = front_matter(path)
    m = _SNAPSHOT.search(str(path.resolve()).replace("\\", "/"))
    if m:
        return f"{m.group(1)}/{m.group(2)}", meta.get("license")
    return meta.get("base_model"), meta.get("license")


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def model_card(*, title: str, summary: str, facts: list[tuple[str, Any]],
               auto_class: str, path: str | Path, processor_class: str = "AutoTokenizer",
               pipeline_tag: str | None = None, tags: tuple[str, ...] = ("pretune",),
               metrics: dict[str, Any] | None = None, metrics_title: str = "Test metrics",
               footer: str = "", base_model: str | None = None, license: str | None = None,
               datasets: list[str] | tuple[str, ...] = ()) -> str:
    """Markdown with Hugging Face front matter (license, base_model, datasets, pipeline tag):
    ``facts`` as a table, scalar ``metrics`` as a second one, then a load snippet for
    ``auto_class`` (+ its tokenizer / image processor) from ``path``, the dir it describes."""
    meta: dict[str, Any] = {"library_name": "transformers", "license": license or "other"}
    if base_model:
        meta["base_model"] = base_model
    if datasets:
        meta["datasets"] = list(datasets)
    if pipeline_tag:
        meta["pipeline_tag"] = pipeline_tag
    meta["tags"] = list(tags)
    front = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---"]
    rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in facts)
    parts = ["\n".join(front), f"# {title}", summary, f"| | |\n|---|---|\n{rows}"]
    scalars = {k: v for k, v in (metrics or {}).items() if isinstance(v, int | float)
               and not isinstance(v, bool)}
    if scalars:
        table = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in scalars.items())
        parts.append(f"## {metrics_title}\n\n| metric | value |\n|---|---|\n{table}")
    parts.append(f"""## Load it (no pretune needed)

```python
from transformers import {processor_class}, {auto_class}
processor = {processor_class}.from_pretrained("{path}")
model = {auto_class}.from_pretrained("{path}")
```""")
    if footer:
        parts.append(footer)
    return "\n\n".join(parts) + "\n"
