"""ELECTRA replaced-token detection (Clark et al. 2020) for a registry encoder (``bert-*``).

A small generator (an MLM of ``electra_generator_size`` x the width, same depth) fills the
masked positions with samples; the discriminator — the model we keep — says for *every* token
whether it was replaced. Learning from all tokens instead of the 15% that are masked is what
makes ELECTRA-Small strong for its compute. Generator and discriminator share the token,
position and type embeddings (the generator projects them down to its width).

The discriminator is an ``ElectraForPreTraining`` of the same shape as the BERT architecture
(``embedding_size == hidden_size``, no projection), so a pretune-exported ELECTRA model loads
with plain ``AutoModel`` / ``AutoModelForSequenceClassification`` and costs the same to
fine-tune as the scratch BERT it is compared with.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining, PretrainedConfig

from pretune.errors import PretuneError
from pretune.train.runtime import default_save


def electra_configs(bert: PretrainedConfig, generator_size: float
                    ) -> tuple[ElectraConfig, ElectraConfig]:
    """(discriminator, generator) configs from a registry BERT config."""
    common = dict(
        vocab_size=bert.vocab_size, embedding_size=bert.hidden_size,
        num_hidden_layers=bert.num_hidden_layers, max_position_embeddings=bert.max_position_embeddings,
        type_vocab_size=bert.type_vocab_size, pad_token_id=bert.pad_token_id,
        hidden_dropout_prob=bert.hidden_dropout_prob,
        attention_probs_dropout_prob=bert.attention_probs_dropout_prob,
        initializer_range=bert.initializer_range, layer_norm_eps=bert.layer_norm_eps,
    )
    disc = ElectraConfig(hidden_size=bert.hidden_size, num_attention_heads=bert.num_attention_heads,
                         intermediate_size=bert.intermediate_size, **common)
    head_dim = bert.hidden_size // bert.num_attention_heads
    heads = max(1, round(bert.num_attention_heads * generator_size))
    gen = ElectraConfig(hidden_size=heads * head_dim, num_attention_heads=heads,
                        intermediate_size=max(4, round(bert.intermediate_size * generator_size)),
                        **common)
    for c in (disc, gen):
        c._attn_implementation = "sdpa"
    return disc, gen


class ElectraPair(nn.Module):
    """Generator + discriminator as one module for the loop. The discriminator's submodules
    are registered under their own names (``electra``, ``discriminator_predictions``), so its
    ``save_pretrained`` files hold those weights by the names the checkpoint needs; only the
    generator's go to the checkpoint's extra file (and are left out of the exported model)."""

    def __init__(self, disc_config: ElectraConfig, gen_config: ElectraConfig,
                 discriminator: ElectraForPreTraining | None = None) -> None:
        super().__init__()
        disc = discriminator or ElectraForPreTraining(disc_config)
        gen = ElectraForMaskedLM(gen_config)
        # shared embeddings: the generator's input table and (tied) output table are the
        # discriminator's
        gen.electra.embeddings = disc.electra.embeddings
        gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight
        self.electra = disc.electra
        self.discriminator_predictions = disc.discriminator_predictions
        self.generator = gen
        object.__setattr__(self, "discriminator", disc)  # a view, not a second registration

    @property
    def config(self) -> ElectraConfig:
        return self.discriminator.config

    def get_input_embeddings(self) -> nn.Embedding:
        return self.electra.embeddings.word_embeddings

    def save_pretrained(self, path: Path | str) -> None:
        default_save(self.discriminator, Path(path))


def electra_loss(pair: ElectraPair, batch: dict[str, Tensor], weight: float,
                 sample_seed: int | None = None) -> tuple[Tensor, Tensor]:
    """(generator MLM loss + ``weight`` x discriminator loss, the discriminator's loss).

    batch: an MLM batch (input_ids (B, T) masked, labels (B, T), masked_index (M,)). The
    generator's samples at the M positions are drawn from its softmax (no gradient flows
    through the sampling); positions where the sample equals the original count as original,
    as in the paper."""
    ids, labels = batch["input_ids"], batch["labels"]
    index = batch.get("masked_index")
    if index is None:
        index = (labels.reshape(-1) != -100).nonzero().squeeze(1)
    gen = pair.generator
    hidden = gen.electra(input_ids=ids, attention_mask=batch.get("attention_mask"))[0]  # (B, T, h)
    rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)  # (M, h)
    logits = gen.generator_lm_head(gen.generator_predictions(rows)).float()  # (M, V)
    original = labels.reshape(-1).index_select(0, index)  # (M,)
    gen_loss = F.cross_entropy(logits, original)
    with torch.no_grad():
        generator = None
        if sample_seed is not None:
            generator = torch.Generator(device=logits.device).manual_seed(sample_seed)
        sampled = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)  # (M,)
    flat = torch.where(labels.reshape(-1) != -100, labels.reshape(-1), ids.reshape(-1))
    corrupted = flat.index_copy(0, index, sampled).reshape(ids.shape)  # (B, T)
    replaced = (corrupted != flat.reshape(ids.shape)).float()  # (B, T)
    disc_hidden = pair.electra(input_ids=corrupted, attention_mask=batch.get("attention_mask"))[0]
    disc_logits = pair.discriminator_predictions(disc_hidden).float()  # (B, T)
    disc_loss = F.binary_cross_entropy_with_logits(disc_logits, replaced)
    return gen_loss + weight * disc_loss, disc_loss


def check_electra_start(random_init: bool, family: str | None, name: str) -> None:
    if not random_init or family != "bert":
        raise PretuneError(f"objective=electra pre-trains a registry encoder from scratch "
                           f"(bert-*); model.name={name} is not one: choose bert-mini etc., "
                           "or continue this checkpoint with objective=mlm")
