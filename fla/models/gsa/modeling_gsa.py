"""GSA language models: pre-norm blocks of Gated Slot Attention (or hybrid softmax attention) and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{attn_norm, attn.{q,k,v,f}_proj,
attn.{q,k,v}_conv1d, attn.feature_map.layer (t2r), attn.g_norm, attn.o_proj, mlp_norm,
mlp.{gate,up,down}_proj}``, ``model.norm``, ``lm_head``), so its checkpoints load as is.
"""

from __future__ import annotations

from dataclasses import dataclass

from fla.layers.gsa import GatedSlotAttention
from fla.models.flops import TokenMixer
from fla.models.gsa.configuration_gsa import GSAConfig
from fla.models.modeling_utils import FLABlock, FLAForCausalLM, FLAModel, FLAPreTrainedModel, build_attention
from fla.models.tp_plan import linear_mixer_plan


@dataclass(frozen=True)
class SlotMixer(TokenMixer):
    """A two-pass slot mixer (GSA, ABC) for the FLOPs rule: chunked linear attention ``K -> M`` slots, then
    ``M -> V`` (``slots`` = ``M``; the softmax over the slots is negligible)."""

    slots: int = 1

    def flops_per_token(self, seq_len: int) -> float:
        first = TokenMixer("linear", self.heads, self.key_dim, self.slots)
        second = TokenMixer("linear", self.heads, self.slots, self.value_dim)
        return first.flops_per_token(seq_len) + second.flops_per_token(seq_len)

    @classmethod
    def from_config(cls, config, num_kv_heads: int | None = None) -> SlotMixer:
        """From a GSA / ABC config: ``num_heads`` heads, widths ``hidden_size * expand_{k,v}`` split over them."""
        base = TokenMixer.from_expand("linear", config.hidden_size, config.num_heads, config.expand_k, config.expand_v)
        return cls("linear", base.heads, base.key_dim, base.value_dim, slots=config.num_slots or base.key_dim)


class GSABlock(FLABlock):
    """One layer: ``GatedSlotAttention`` (or ``Attention`` at the config's hybrid layers) + ``GatedMLP``."""

    def __init__(self, config: GSAConfig, layer_idx: int):
        mixer = build_attention(config, layer_idx)
        if mixer is None:
            mixer = GatedSlotAttention(
                mode=config.attn_mode,
                hidden_size=config.hidden_size,
                expand_k=config.expand_k,
                expand_v=config.expand_v,
                num_heads=config.num_heads,
                num_kv_heads=config.num_kv_heads,
                num_slots=config.num_slots,
                use_short_conv=config.use_short_conv,
                conv_size=config.conv_size,
                feature_map=config.feature_map,
                use_output_gate=config.use_output_gate,
                use_norm=config.use_norm,
                gate_logit_normalizer=config.gate_logit_normalizer,
                elementwise_affine=config.elementwise_affine,
                norm_eps=config.norm_eps,
                layer_idx=layer_idx,
            )
        super().__init__(config, layer_idx, mixer)


class GSAPreTrainedModel(FLAPreTrainedModel):
    config_class = GSAConfig
    _no_split_modules = ["GSABlock"]

    tensor_parallel_plan = linear_mixer_plan(col=("q_proj", "k_proj", "v_proj", "f_proj"), full_norms=("g_norm",))
    """Heads split over the ranks, each with its whole slot dimension (``f_proj``'s rows are ``[kv head, slot]``,
    split with the heads); ``o_proj`` row-parallel. The output RMSNorm spans all heads (``value_dim`` wide), as in
    fla: a full norm (its mean square all-reduced over the ranks).

    The trainer's TP test runs ``configs/gsa_cpu.json`` (vocabulary 2048, as gla / hgrn2): with ``gsa_tiny.json``
    (vocabulary 32000) it measured a 6e-5 relative step-1 gradient-norm difference, but the gradients themselves
    match one rank (every parameter within 4e-7, bar q/k_proj's tiny ones at 1.3e-5); the difference is the fp32
    CPU norm of the [32000, 128] ``lm_head`` gradient (6e-4 off its float64 norm on one rank, another error on
    each rank's half), not the split or GSA's maths."""

    @classmethod
    def token_mixer(cls, config: GSAConfig) -> TokenMixer:
        return SlotMixer.from_config(config)


class GSAModel(GSAPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` GSABlocks -> RMSNorm (see :class:`FLAModel` for forward)."""

    block_class = GSABlock


class GSAForCausalLM(GSAPreTrainedModel, FLAForCausalLM):
    """GSAModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = GSAModel


__all__ = ["GSABlock", "GSAForCausalLM", "GSAModel", "GSAPreTrainedModel", "SlotMixer"]
