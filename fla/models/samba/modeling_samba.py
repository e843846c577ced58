"""Samba language models: blocks of (Mamba or sliding-window attention) + a SwiGLU MLP, fla 0.6.0's layout.

Parameter names match fla 0.6.0 (``backbone.embeddings``, ``backbone.layers.N.{mixer_norm, mixer, mlp_norm,
mlp.{gate,up,down}_proj}``, ``backbone.norm_f``, ``lm_head``; ``mixer`` is a :class:`fla.layers.mamba.Mamba`
or, at the config's ``attn`` layers, :class:`fla.layers.Attention`). ``model`` is an alias of ``backbone``.

No tensor-parallel plan (see :mod:`fla.models.mamba.modeling_mamba`): the trainer refuses TP for Samba.
"""

from __future__ import annotations

import torch
from transformers.modeling_layers import GradientCheckpointingLayer

from fla.models.mamba.modeling_mamba import SSMForCausalLM, SSMPreTrainedModel, build_mamba_mixer
from fla.models.modeling_utils import FLAModel, build_attention, build_norm
from fla.models.samba.configuration_samba import SambaConfig
from fla.modules.mlp import GatedMLP


class SambaBlock(GradientCheckpointingLayer):
    """``h = x + mixer(mixer_norm(x))``; ``out = h + mlp(mlp_norm(h))`` (fused residual + norm with ``fuse_norm``).

    The MLP's width comes from ``hidden_ratio`` (the config's ``intermediate_size`` is the mixer's, as in fla).
    As in fla 0.6.0, the Mamba mixer's convolution always has a bias (``use_conv_bias`` is not read) and its
    activation is SiLU (``hidden_act`` is the MLP's).
    """

    token_local = True  # only the mixer mixes tokens (context parallel: fla.models.modeling_utils)

    def __init__(self, config: SambaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.mixer_norm = build_norm(config)
        self.mixer = build_attention(config, layer_idx)
        if self.mixer is None:
            self.mixer = build_mamba_mixer(
                config, layer_idx, dt_rank=config.time_step_rank, dt_min=config.time_step_min,
                dt_max=config.time_step_max, dt_init=config.time_step_init_scheme, dt_scale=config.time_step_scale,
                dt_init_floor=config.time_step_floor, use_conv_bias=True,
            )  # fmt: skip
        self.mlp_norm = build_norm(config)
        self.mlp = GatedMLP(
            hidden_size=config.hidden_size,
            hidden_ratio=config.hidden_ratio,
            hidden_act=config.hidden_act,
            fuse_swiglu=config.fuse_swiglu,
        )

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, past_key_values=None, use_cache=False,
                output_attentions=False, **kwargs):  # fmt: skip
        """``hidden_states [B, T, H]`` -> ``(hidden_states, None, past_key_values)``."""
        residual = hidden_states
        hidden_states, attentions, past_key_values = self.mixer(
            self.mixer_norm(hidden_states), attention_mask=attention_mask, past_key_values=past_key_values,
            use_cache=use_cache, output_attentions=output_attentions, **kwargs,
        )  # fmt: skip
        if self.config.fuse_norm:
            hidden_states, residual = self.mlp_norm(hidden_states, residual, True)
        else:
            residual = residual + hidden_states
            hidden_states = self.mlp_norm(residual)
        return residual + self.mlp(hidden_states, **kwargs), attentions, past_key_values


class SambaPreTrainedModel(SSMPreTrainedModel):
    config_class = SambaConfig
    _no_split_modules = ["SambaBlock"]


class SambaModel(SambaPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` SambaBlocks -> ``norm_f`` (see :class:`FLAModel` for forward).
    The embedding has no padding row (fla's)."""

    block_class = SambaBlock
    final_norm = "norm_f"

    def __init__(self, config: SambaConfig):
        super().__init__(config)
        self.embeddings.padding_idx = None


class SambaForCausalLM(SambaPreTrainedModel, SSMForCausalLM):
    """SambaModel (``backbone``) + ``lm_head``."""

    base_model_class = SambaModel


__all__ = ["SambaBlock", "SambaForCausalLM", "SambaModel", "SambaPreTrainedModel"]
