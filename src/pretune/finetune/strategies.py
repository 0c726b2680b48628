"""Fine-tuning strategies, model-agnostic through ``Backbone`` (embeddings, layers, head).

``apply_strategy`` freezes/unfreezes parameters, builds optimizer parameter groups (per-layer
learning rates for LLRD, no weight decay on biases and norms), wraps the model for LoRA and
returns a ``StrategyPlan``. The ``prompt`` strategy lives in ``prompt.py``; the scikit-learn
linear probe (features extracted once, no training loop) in ``probe.py``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from pretune.config import OptimConfig, StrategyConfig
from pretune.errors import PretuneError
from pretune.models.backbone import Backbone
from pretune.models.vision import ImageBackbone, is_image_model
from pretune.train.runtime import no_decay_ids


@dataclass
class StrategyPlan:
    model: nn.Module  # possibly wrapped (LoRA: a peft model)
    param_groups: list[dict[str, Any]]  # for the optimizer: params, lr, weight_decay, name
    on_epoch_start: Callable[[int, nn.Module], None] | None  # fit's hook: (epoch, model)
    trainable_params: int  # parameters updated at some point of the run
    sklearn: bool = False  # linear probe fitted with scikit-learn: no loop at all
    name: str = "full"


def _params(groups: Any) -> list[nn.Parameter]:
    """Parameters of a module, a list of modules, or a list of parameters (deduplicated)."""
    items = groups if isinstance(groups, list | tuple) else [groups]
    out: dict[int, nn.Parameter] = {}
    for item in items:
        if isinstance(item, nn.Parameter):
            out[id(item)] = item
        elif isinstance(item, nn.Module):
            for p in item.parameters():
                out[id(p)] = p
    return list(out.values())


def _groups(model: nn.Module, named: list[tuple[str, list[nn.Parameter], float]],
            optim: OptimConfig) -> list[dict[str, Any]]:
    """Split each (name, params, lr) into decay / no-decay optimizer groups."""
    skip = no_decay_ids(model)
    out = []
    for name, params, lr in named:
        for tag, wd, sel in (("", optim.weight_decay, False), ("/no_decay", 0.0, True)):
            chosen = [p for p in params if (id(p) in skip) == sel]
            if chosen:
                out.append({"params": chosen, "lr": lr, "weight_decay": wd, "name": name + tag})
    return out


def _set_trainable(params: Iterable[nn.Parameter], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """Parameter groups bottom -> top: embeddings, each layer, head. Parameters the backbone
    does not place (e.g. a pooler outside head()) join the head group so nothing is lost."""
    # image models (ResNet/ViT) have their own adapter with the same layer_groups() contract
    adapter = ImageBackbone(model) if is_image_model(model) else Backbone(model)
    groups = [_params(g) for g in adapter.layer_groups()]
    placed = {id(p) for g in groups for p in g}
    groups[-1] += [p for p in model.parameters() if id(p) not in placed]
    return groups


def _head_module_names(model: nn.Module) -> list[str]:
    head = Backbone(model).head()
    heads = head if isinstance(head, list | tuple) else [head]
    names = [n for n, m in model.named_modules() if any(m is h for h in heads) and n]
    if not names:
        raise PretuneError(f"{type(model).__name__}: cannot locate the task head for LoRA")
    return names


def apply_strategy(model: nn.Module, cfg: StrategyConfig, optim: OptimConfig,
                   peft_task_type: str = "SEQ_CLS") -> StrategyPlan:
    """Prepare ``model`` for ``cfg.name``; returns optimizer groups and an epoch hook.
    ``peft_task_type`` is the task kind's PEFT ``TaskType`` name (LoRA only)."""
    name = cfg.name
    if name == "prompt":
        raise PretuneError("strategy 'prompt' is run by pretune.finetune.prompt, not apply_strategy")
    if name == "lora":
        return _lora(model, cfg, optim, peft_task_type)
    groups = layer_groups(model)  # [embeddings, layer_0 .. layer_{L-1}, head]
    head, body = groups[-1], groups[:-1]
    lr = optim.lr
    hook = None
    if name == "full":
        _set_trainable(model.parameters(), True)
        named = [("all", [p for g in groups for p in g], lr)]
    elif name == "linear-probe":
        _set_trainable(model.parameters(), False)
        _set_trainable(head, True)
        named = [("head", head, lr)]
        if cfg.sklearn:
            return StrategyPlan(model, [], None, 0, sklearn=True, name=name)
    elif name == "partial":
        _set_trainable(model.parameters(), False)
        layers = body[1:]  # transformer layers, bottom -> top (embeddings stay frozen)
        top = layers[len(layers) - min(cfg.top_k, len(layers)) :] if cfg.top_k else []
        chosen = [p for g in top for p in g] + head
        _set_trainable(chosen, True)
        named = [("top_layers+head", chosen, lr)]
    elif name == "llrd":
        _set_trainable(model.parameters(), True)
        # Head at the base lr; layer at depth d from the top (top layer d=1) gets lr * decay^d;
        # embeddings are the deepest group.
        named = [("head", head, lr)]
        for depth, g in enumerate(reversed(body), start=1):
            named.append((f"depth{depth}", g, lr * cfg.llrd_decay**depth))
    elif name == "gradual":
        # ULMFiT: epoch 0 trains the head only; each later epoch unfreezes one more group
        # from the top. All groups are in the optimizer from the start; frozen ones get no
        # gradient, so the optimizer skips them.
        order = [head, *reversed(body)]  # top -> bottom

        def hook(epoch: int, _model: nn.Module | None = None) -> None:
            for i, g in enumerate(order):
                _set_trainable(g, i <= epoch)

        hook(0)
        named = [("all", [p for g in groups for p in g], lr)]
    else:  # pragma: no cover - Literal in the config forbids it
        raise PretuneError(f"unknown strategy '{name}'")
    trainable = sum(p.numel() for _, ps, _ in named for p in ps)
    trainable_named = [(n, [p for p in ps if p.requires_grad or name == "gradual"], r)
                       for n, ps, r in named]
    return StrategyPlan(model, _groups(model, trainable_named, optim), hook, trainable, name=name)


def _lora(model: nn.Module, cfg: StrategyConfig, optim: OptimConfig, peft_task_type: str
          ) -> StrategyPlan:
    from peft import LoraConfig, TaskType, get_peft_model  # peft is slow to import

    targets = cfg.lora_targets or list(Backbone(model).lora_targets())
    # A new task head trains beside the adapter; a language model's head is the (tied) LM head
    # the adapter is there to leave alone.
    heads = None if peft_task_type in ("CAUSAL_LM", "SEQ_2_SEQ_LM") else _head_module_names(model)
    lcfg = LoraConfig(
        task_type=TaskType[peft_task_type], r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout, target_modules=targets,
        # The freshly initialised task head must train and be saved with the adapter.
        modules_to_save=heads,
        # GPT-2's projections are Conv1D (weights stored transposed): say so, not be warned
        fan_in_fan_out=getattr(getattr(model, "config", None), "model_type", "") == "gpt2",
    )
    try:
        with _quiet_peft():
            peft_model = get_peft_model(model, lcfg)
    except ValueError as e:
        raise PretuneError(
            f"LoRA: target modules {targets} not found in {type(model).__name__} ({e}); "
            "set strategy.lora_targets"
        ) from None
    params = [p for p in peft_model.parameters() if p.requires_grad]
    return StrategyPlan(peft_model, _groups(peft_model, [("lora+head", params, optim.lr)], optim),
                        None, sum(p.numel() for p in params), name="lora")


def export_model(model: nn.Module) -> nn.Module:
    """A plain transformers model to save: LoRA weights merged, the trained head kept."""
    if hasattr(model, "merge_and_unload"):
        with _quiet_peft():
            return model.merge_and_unload()
    return model


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """PEFT calls transformers' deprecated ``is_gradient_checkpointing``: a FutureWarning on
    every LoRA run that a user can do nothing about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                category=FutureWarning)
        yield
