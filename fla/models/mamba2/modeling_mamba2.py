"""Mamba2 language models: pre-norm residual blocks of one Mamba2 mixer each (no MLP).

Parameter names match fla 0.6.0 (``backbone.embeddings``, ``backbone.layers.N.{norm, mixer.{in_proj, conv1d,
dt_bias, A_log, norm, D, out_proj}}``, ``backbone.norm_f``, ``lm_head``), so its checkpoints load as is; the
original ``backbone.embedding.weight`` is renamed on load. ``model`` is an alias of ``backbone``, so the
shared :class:`~fla.models.modeling_utils.FLAForCausalLM` code (and whoever reads ``model.model``) works.

Tensor parallelism: not offered. ``in_proj`` packs ``[z | x | B | C | dt]`` in one weight and ``conv1d`` runs
over ``[x | B | C]``, with ``B``, ``C`` shared by groups of heads: a column split of those weights does not
give each rank whole heads with their groups (it would need the rows regrouped per rank, a layout fla 0.6.0's
checkpoints do not have), so the model declares no plan and the trainer refuses TP > 1 with a clear error.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer

from fla.layers.mamba2 import Mamba2
from fla.models.cache import FLACache
from fla.models.flops import TokenMixer
from fla.models.mamba2.configuration_mamba2 import Mamba2Config
from fla.models.modeling_utils import FLAForCausalLM, FLAModel, FLAPreTrainedModel, build_norm


class Mamba2Block(GradientCheckpointingLayer):
    """``x + mixer(norm(x))`` (the residual in float32 with ``residual_in_fp32``)."""

    token_local = True  # only the mixer mixes tokens (context parallel: fla.models.modeling_utils)

    def __init__(self, config: Mamba2Config, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = build_norm(config)
        self.mixer = Mamba2(
            num_heads=config.num_heads,
            head_dim=config.head_dim,
            hidden_size=config.hidden_size,
            state_size=config.state_size,
            expand=config.expand,
            n_groups=config.n_groups,
            conv_kernel=config.conv_kernel,
            conv_init=config.conv_init,
            use_conv_bias=config.use_conv_bias,
            hidden_act=config.hidden_act,
            A_init_range=config.A_init_range,
            D_has_hdim=config.D_has_hdim,
            rmsnorm=config.rmsnorm,
            norm_before_gate=config.norm_before_gate,
            dt_min=config.dt_min,
            dt_max=config.dt_max,
            dt_init_floor=config.dt_init_floor,
            dt_limit=config.dt_limit,
            use_bias=config.use_bias,
            norm_eps=config.norm_eps,
            chunk_size=config.chunk_size,
            layer_idx=layer_idx,
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: FLACache | None = None,
        use_cache: bool | None = False,
        output_attentions: bool | None = False,
        cu_seqlens: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None, FLACache | None]:
        """``hidden_states [B, T, H]`` -> ``(hidden_states, None, past_key_values)``."""
        residual = hidden_states.float() if self.residual_in_fp32 else hidden_states
        out, _, past_key_values = self.mixer(
            self.norm(hidden_states), attention_mask=attention_mask, past_key_values=past_key_values,
            use_cache=use_cache, cu_seqlens=cu_seqlens, **kwargs,
        )  # fmt: skip
        return (residual + out).to(hidden_states.dtype), None, past_key_values


class Mamba2PreTrainedModel(FLAPreTrainedModel):
    config_class = Mamba2Config
    base_model_prefix = "backbone"
    _no_split_modules = ["Mamba2Block"]

    @classmethod
    def token_mixer(cls, config: Mamba2Config) -> TokenMixer:
        """Chunked scalar-decay linear attention: ``num_heads`` states of ``state_size x head_dim``."""
        return TokenMixer("linear", config.num_heads, config.state_size, config.head_dim)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The shared init, then fla 0.6.0's Mamba2 extras: the mixer's own parameters
        (:meth:`fla.layers.Mamba2.reset_parameters`) and, with ``rescale_prenorm_residual``, ``out_proj``
        ~ ``U(+-1 / sqrt(fan_in * num_hidden_layers))`` (kaiming-uniform(a=sqrt(5)) scaled by ``1/sqrt(L)``)."""
        super()._init_weights(module)
        if isinstance(module, Mamba2) and self.config.rescale_prenorm_residual:
            weight = module.out_proj.weight
            bound = 1.0 / math.sqrt(weight.shape[1] * self.config.num_hidden_layers)
            init.uniform_(weight, -bound, bound)


class Mamba2Model(Mamba2PreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` Mamba2Blocks -> ``norm_f`` (see :class:`FLAModel` for forward)."""

    block_class = Mamba2Block

    def __init__(self, config: Mamba2Config):
        FLAPreTrainedModel.__init__(self, config)
        self.vocab_size = config.vocab_size
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([Mamba2Block(config, i) for i in range(config.num_hidden_layers)])
        self.norm_f = build_norm(config)
        self.gradient_checkpointing = False
        self._register_load_state_dict_pre_hook(self._rename_embedding)
        self.post_init()

    @property
    def norm(self) -> nn.Module:
        """The final norm (``norm_f``, fla 0.6.0's name), under the name :class:`FLAModel` uses."""
        return self.norm_f

    @staticmethod
    def _rename_embedding(state_dict, prefix, *args) -> None:
        """state-spaces checkpoints call the embedding ``embedding``: load it as ``embeddings``."""
        old = f"{prefix}embedding.weight"
        if old in state_dict:
            state_dict[f"{prefix}embeddings.weight"] = state_dict.pop(old)


class Mamba2ForCausalLM(Mamba2PreTrainedModel, FLAForCausalLM):
    """Mamba2Model (``backbone``, also reachable as ``model``) + ``lm_head``."""

    _tied_weights_keys = {"lm_head.weight": "backbone.embeddings.weight"}
    base_model_class = Mamba2Model

    def __init__(self, config: Mamba2Config):
        FLAPreTrainedModel.__init__(self, config)
        self.backbone = Mamba2Model(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.criterion = None
        self.post_init()

    @property
    def model(self) -> Mamba2Model:
        return self.backbone

    @model.setter
    def model(self, value: Mamba2Model) -> None:
        self.backbone = value


__all__ = ["Mamba2Block", "Mamba2ForCausalLM", "Mamba2Model", "Mamba2PreTrainedModel"]
