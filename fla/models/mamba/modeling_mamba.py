"""Mamba language models: pre-norm residual blocks of the Mamba mixer alone (no MLP), fla 0.6.0's layout.

Parameter names match fla 0.6.0 (``backbone.embeddings``, ``backbone.layers.N.norm``,
``backbone.layers.N.mixer.{in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj}``, ``backbone.norm_f``,
``lm_head``), so its checkpoints load as is. ``model`` is an alias of ``backbone`` (the name the other fla
models use).

No tensor-parallel plan: ``x_proj`` reduces over all ``Di`` channels in the middle of the mixer, which the
column / row split of :mod:`fla.models.tp_plan` does not express, so the trainer refuses TP for Mamba.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from transformers.modeling_layers import GradientCheckpointingLayer

from fla.layers.mamba import Mamba
from fla.models.flops import TokenMixer
from fla.models.mamba.configuration_mamba import MambaConfig
from fla.models.modeling_utils import FLAForCausalLM, FLAModel, FLAPreTrainedModel, build_norm


def build_mamba_mixer(config, layer_idx: int, **options) -> Mamba:
    """The Mamba mixer of a Mamba / Samba config (``options``: the config's step-size init fields, ...)."""
    return Mamba(
        hidden_size=config.hidden_size,
        state_size=config.state_size,
        conv_kernel=config.conv_kernel,
        intermediate_size=config.intermediate_size,
        use_bias=config.use_bias,
        layer_idx=layer_idx,
        **options,
    )


class MambaBlock(GradientCheckpointingLayer):
    """``x + mixer(norm(x))`` (the residual in float32 with ``residual_in_fp32``)."""

    token_local = True  # only the mixer mixes tokens (context parallel: fla.models.modeling_utils)

    def __init__(self, config: MambaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = build_norm(config)
        self.mixer = build_mamba_mixer(
            config, layer_idx, dt_rank=config.dt_rank, dt_min=config.dt_min, dt_max=config.dt_max,
            dt_init=config.dt_init_scheme, dt_scale=config.dt_scale, dt_init_floor=config.dt_init_floor,
            hidden_act=config.hidden_act, use_conv_bias=config.use_conv_bias,
        )  # fmt: skip

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, past_key_values=None, use_cache=False,
                output_attentions=False, **kwargs):  # fmt: skip
        """``hidden_states [B, T, H]`` -> ``(hidden_states, None, past_key_values)``."""
        residual = hidden_states.float() if self.residual_in_fp32 else hidden_states
        out, attentions, past_key_values = self.mixer(
            self.norm(hidden_states), attention_mask=attention_mask, past_key_values=past_key_values,
            use_cache=use_cache, output_attentions=output_attentions, **kwargs,
        )  # fmt: skip
        return (residual + out).to(hidden_states.dtype), attentions, past_key_values


class SSMPreTrainedModel(FLAPreTrainedModel):
    """Shared by Mamba and Samba: ``backbone`` as the base-model attribute (fla's), the mixers' SSM init
    (:meth:`fla.layers.mamba.Mamba.reset_parameters`, run after the Linear init of its children) and
    ``rescale_prenorm_residual``."""

    base_model_prefix = "backbone"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Mamba) and self.config.rescale_prenorm_residual:
            weight = module.out_proj.weight
            if weight.device.type != "meta" and not getattr(weight, "_is_hf_initialized", False):
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
                weight /= math.sqrt(self.config.num_hidden_layers)

    @classmethod
    def token_mixer(cls, config) -> TokenMixer:
        # the scan is element-wise work on the [Di, Ds] state (fla.models.flops' "scan" kind)
        return TokenMixer("scan", 1, config.intermediate_size, config.state_size)


class SSMForCausalLM(FLAForCausalLM):
    """:class:`FLAForCausalLM` whose decoder is ``self.backbone`` (fla's name for Mamba / Samba);
    ``model`` reads it."""

    _tied_weights_keys = {"lm_head.weight": "backbone.embeddings.weight"}

    def __init__(self, config):
        FLAPreTrainedModel.__init__(self, config)
        self.backbone = self.base_model_class(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.criterion = None
        self.post_init()

    @property
    def model(self) -> FLAModel:
        return self.backbone

    def set_decoder(self, decoder: FLAModel) -> None:
        self.backbone = decoder


class MambaPreTrainedModel(SSMPreTrainedModel):
    config_class = MambaConfig
    _no_split_modules = ["MambaBlock"]


class MambaModel(MambaPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` MambaBlocks -> ``norm_f`` (see :class:`FLAModel` for forward).
    The embedding has no padding row (fla's); state-spaces checkpoints' ``embedding`` loads as ``embeddings``."""

    block_class = MambaBlock
    final_norm = "norm_f"

    def __init__(self, config: MambaConfig):
        super().__init__(config)
        self.embeddings.padding_idx = None
        self._register_load_state_dict_pre_hook(self._rename_embedding)

    @staticmethod
    def _rename_embedding(state_dict, prefix, *args) -> None:
        old = f"{prefix}embedding.weight"
        if old in state_dict:
            state_dict[f"{prefix}embeddings.weight"] = state_dict.pop(old)


class MambaForCausalLM(MambaPreTrainedModel, SSMForCausalLM):
    """MambaModel (``backbone``) + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = MambaModel


__all__ = ["MambaBlock", "MambaForCausalLM", "MambaModel", "MambaPreTrainedModel", "SSMForCausalLM",
           "SSMPreTrainedModel", "build_mamba_mixer"]  # fmt: skip
