"""Rodimus language models: ``rodimus`` blocks (Rodimus mixer only) or ``rodimus_plus`` blocks (Rodimus, then
sliding-window shared-key attention and a SwiGLU MLP), plus optional hybrid softmax-attention layers.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{mixer_norm, mixer.*, ska_attn_norm,
ska_attn.{q,k,v,o}_proj, mlp_norm, mlp.{gate,up,down}_proj}`` (the last four with ``rodimus_plus``),
``model.layers.N.{attn_norm, attn.*, mlp_norm, mlp.*}`` at hybrid ``attn`` layers, ``model.norm``, ``lm_head``),
so its checkpoints load as is. Blocks (fla's maths; ``norm`` are RMSNorms)::

    rodimus:       x = x + Rodimus(mixer_norm(x))
    rodimus_plus:  x = x + Rodimus(mixer_norm(x))
                   x = x + MLP(mlp_norm(x + SKA(ska_attn_norm(x))))      fla's two-hop residual
    hybrid attn:   x = x + Attention(attn_norm(x));  x = x + MLP(mlp_norm(x))

Cache: the Rodimus mixer of layer ``i`` keeps its state in slot ``i`` of the :class:`~fla.models.cache.FLACache`,
the SW-SKA of layer ``i`` its windowed keys / values in slot ``num_hidden_layers + i`` (each mixer counts its
own tokens; fla 0.6.0 shares one slot between the two).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer

from fla.layers.rodimus import RodimusAttention, SlidingWindowSharedKeyAttention, align_multiple
from fla.models import flops
from fla.models.flops import TokenMixer
from fla.models.modeling_utils import FLAForCausalLM, FLAModel, FLAPreTrainedModel, build_attention, build_norm
from fla.models.rodimus.configuration_rodimus import RodimusConfig
from fla.modules.mlp import GatedMLP


def mlp_width(config: RodimusConfig) -> int:
    """``intermediate_size``, else fla's ``align_multiple(int(hidden_ratio * hidden_size), 8)``."""
    if config.intermediate_size is not None:
        return config.intermediate_size
    return align_multiple(int(config.hidden_ratio * config.hidden_size), 8)


class RodimusBlock(GradientCheckpointingLayer):
    """One layer (see the module docstring); ``forward`` returns ``(hidden_states, None, past_key_values)``."""

    token_local = True  # only the mixers mix tokens; SW-SKA is an Attention (context parallel: modeling_utils)

    def __init__(self, config: RodimusConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.block_type = config.block_type
        self.residual_in_fp32 = config.residual_in_fp32
        self.fuse_norm = config.fuse_norm

        def mlp():
            return GatedMLP(config.hidden_size, None, mlp_width(config), config.hidden_act, config.fuse_swiglu)

        attn = build_attention(config, layer_idx)
        self.is_attention = attn is not None
        if self.is_attention:
            self.attn_norm, self.attn = build_norm(config), attn
            self.mlp_norm, self.mlp = build_norm(config), mlp()
            return
        self.mixer_norm = build_norm(config)
        self.mixer = RodimusAttention(
            block_type=config.block_type,
            mode=config.attn_mode,
            hidden_size=config.hidden_size,
            input_gate_low_rank=config.input_gate_low_rank,
            expand_ratio=config.expand_ratio,
            use_short_conv=config.use_short_conv,
            conv_size=config.conv_size,
            norm_eps=config.norm_eps,
            k_norm_eps=config.k_norm_eps,
            residual_in_fp32=config.residual_in_fp32,
            layer_idx=layer_idx,
        )
        if self.block_type == "rodimus_plus":
            ska = config.ska_attn
            self.ska_attn_norm = build_norm(config)
            self.ska_attn = SlidingWindowSharedKeyAttention(
                hidden_size=config.hidden_size,
                num_heads=ska["num_heads"],
                qkv_bias=ska["qkv_bias"],
                qk_norm=ska["qk_norm"],
                window_size=ska["window_size"],
                rope_theta=ska["rope_theta"],
                max_position_embeddings=config.max_position_embeddings,
                layer_idx=layer_idx,
            )
            self.ska_attn.layer_idx = config.num_hidden_layers + layer_idx  # its own cache slot
            self.mlp_norm, self.mlp = build_norm(config), mlp()

    def _add_norm(self, norm: nn.Module, x: torch.Tensor, residual: torch.Tensor) -> tuple:
        """``(norm(x + residual), x + residual)``, the sum in float32 with ``residual_in_fp32``."""
        if self.fuse_norm:
            return norm(x, residual, True, self.residual_in_fp32)
        h = residual + x
        return norm(h.to(norm.weight.dtype)), h

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool | None = False,
        output_attentions: bool | None = False,
        **kwargs,
    ) -> tuple:
        dtype = hidden_states.dtype
        residual = hidden_states.float() if self.residual_in_fp32 else hidden_states
        norm, mixer = (self.attn_norm, self.attn) if self.is_attention else (self.mixer_norm, self.mixer)
        out, _, past_key_values = mixer(
            norm(hidden_states),
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_attentions=output_attentions,
            **kwargs,
        )
        if self.is_attention:
            h, residual = self._add_norm(self.mlp_norm, out, residual)
            out = self.mlp(h, **kwargs)
        elif self.block_type == "rodimus_plus":
            h, residual = self._add_norm(self.ska_attn_norm, out, residual)
            out, _, past_key_values = self.ska_attn(
                h,
                attention_mask=attention_mask,
                past_key_values=past_key_values,
                use_cache=use_cache,
                output_attentions=output_attentions,
                **kwargs,
            )
            h, _ = self._add_norm(self.mlp_norm, out, residual)  # two-hop: SKA's output only feeds the MLP
            out = self.mlp(h, **kwargs)
        return (residual + out).to(dtype), None, past_key_values


class RodimusPreTrainedModel(FLAPreTrainedModel):
    config_class = RodimusConfig
    _no_split_modules = ["RodimusBlock"]

    tensor_parallel_plan = None
    """None: the Rodimus mixer is a single head (one ``[expand_ratio, d_inner]`` state) whose output RMSNorm
    spans all of ``d_inner``, and SW-SKA's one key head is shared by every query head: neither splits by heads
    without a collective inside the region (fla.models.tp_plan has no such hook yet)."""

    @classmethod
    def token_mixer(cls, config: RodimusConfig) -> TokenMixer:
        """The Rodimus mixer: one head, key width ``expand_ratio``, value width ``d_inner``."""
        return TokenMixer("linear", 1, config.expand_ratio, align_multiple(2 * config.hidden_size, 8))

    @classmethod
    def flops_per_token_of(cls, config, num_params: int, num_embedding_params: int, seq_len: int) -> float:
        """The shared count plus, with ``rodimus_plus``, each Rodimus layer's sliding-window SKA."""
        total = super().flops_per_token_of(config, num_params, num_embedding_params, seq_len)
        if config.block_type != "rodimus_plus" or config.ska_attn is None:
            return total
        heads = config.ska_attn["num_heads"]
        head_dim = config.hidden_size // heads
        ska = TokenMixer("softmax", heads, head_dim, head_dim, config.ska_attn["window_size"])
        rodimus_layers = [m for m in flops.layer_mixers(config, cls.token_mixer(config)) if m.kind == "linear"]
        return total + len(rodimus_layers) * ska.flops_per_token(seq_len)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The shared init, plus fla's for the Rodimus mixer: xavier-uniform gates (gain ``2 ** -2.5``), a
        ``g_gate_proj`` bias whose softplus lies in ``[1e-3, 0.1]`` (log-uniform), a ``tau_gate_proj`` bias
        ``logit(U(1/16, 0.9))``, ``residual_weight`` ones."""
        super()._init_weights(module)
        if not isinstance(module, RodimusAttention):
            return
        gain = 2**-2.5
        init.xavier_uniform_(module.i_gate_proj[0].weight, gain=gain)
        init.xavier_uniform_(module.i_gate_proj[1].weight, gain=gain)
        init.zeros_(module.i_gate_proj[1].bias)
        init.xavier_uniform_(module.g_gate_proj.weight, gain=gain)
        init.xavier_uniform_(module.tau_gate_proj.weight, gain=gain)
        m = module.mem_size
        lo, hi = math.log(1 - 0.999), math.log(1 - 0.9)
        g = torch.exp(torch.rand(m) * (hi - lo) + lo).clamp(min=1e-4)
        init.copy_(module.g_gate_proj.bias, g + torch.log(-torch.expm1(-g)))  # softplus^-1(g)
        init.copy_(module.tau_gate_proj.bias, torch.logit(torch.empty(m).uniform_(1 / 16, 0.9)))
        init.ones_(module.residual_weight)


class RodimusModel(RodimusPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` RodimusBlocks -> RMSNorm (see :class:`FLAModel` for forward)."""

    block_class = RodimusBlock

    def __init__(self, config: RodimusConfig):
        config.check_model()
        super().__init__(config)


class RodimusForCausalLM(RodimusPreTrainedModel, FLAForCausalLM):
    """RodimusModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``, fla's default)."""

    base_model_class = RodimusModel


__all__ = ["RodimusBlock", "RodimusForCausalLM", "RodimusModel", "RodimusPreTrainedModel", "mlp_width"]
