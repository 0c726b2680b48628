"""The one model card (``README.md``) every model directory pretune writes carries: what the
model is, how it was made, its scores, and how to load it with plain ``transformers``."""

from __future__ import annotations

from typing import Any


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def model_card(*, title: str, summary: str, facts: list[tuple[str, Any]],
               auto_class: str, processor_class: str = "AutoTokenizer",
               pipeline_tag: str | None = None, tags: tuple[str, ...] = ("pretune",),
               metrics: dict[str, Any] | None = None, metrics_title: str = "Test metrics",
               footer: str = "") -> str:
    """Markdown with Hugging Face front matter: ``facts`` as a table, scalar ``metrics`` as a
    second one, then a load snippet for ``auto_class`` (+ its tokenizer / image processor)."""
    front = ["---", "library_name: transformers"]
    if pipeline_tag:
        front.append(f"pipeline_tag: {pipeline_tag}")
    front += [f"tags: [{', '.join(tags)}]", "---"]
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
processor = {processor_class}.from_pretrained("<this dir>")
model = {auto_class}.from_pretrained("<this dir>")
```""")
    if footer:
        parts.append(footer)
    return "\n\n".join(parts) + "\n"
