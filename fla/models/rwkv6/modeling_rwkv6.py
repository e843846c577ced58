"""RWKV6 language models: blocks of RWKV6 time mixing (or hybrid softmax attention) and RWKV channel mixing.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.0.pre_norm`` (with ``norm_first``),
``model.layers.N.{attn_norm, attn.{x_proj.{0.mu, 0.linear, 2}, x_bias, {r,k,v,g}_proj.linear,
w_proj.linear.lora.{0,2}, bonus, g_norm, o_proj}, ffn_norm, ffn.{key.{mu, linear}, value, receptance.{mu,
linear}}}``, ``model.norm``, ``lm_head``), so its checkpoints load as is. Every norm is a LayerNorm (bias with
``norm_bias``). A block (fla's maths)::

    x = pre_norm(x)                          (layer 0 with norm_first)
    x = x + attn(attn_norm(x))
    x = x + ffn(ffn_norm(x))                 ffn(x) = sigmoid(receptance(x, delta)) * value(act(key(x, delta)))

with ``delta = x_{t-1} - x_t`` (:func:`fla.modules.token_shift.token_shift`). Cache: the time mixing keeps its
state and last token in layer ``i``'s slot (``recurrent_state``, ``conv_state``), the channel mixing its last
token as ``ffn_state``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.modeling_layers import GradientCheckpointingLayer

from fla.context_parallel import CPContext, token_shift_with_halo
from fla.layers.rwkv6 import LerpLinear, RWKV6Attention
from fla.layers.utils import get_padding_info, repad, unpad
from fla.models.cache import FLACache
from fla.models.flops import TokenMixer
from fla.models.modeling_utils import FLAForCausalLM, FLAModel, FLAPreTrainedModel, build_attention
from fla.models.rwkv6.configuration_rwkv6 import RWKV6Config
from fla.models.tp_plan import MIXER_DIMS, TPPlan, TPRegion
from fla.modules.norm import LayerNorm
from fla.modules.token_shift import token_shift

FFN_ACTIVATIONS = {"sqrelu": lambda x: F.relu(x).square(), "relu": F.relu, "swish": F.silu, "silu": F.silu}
FFN_ACTIVATIONS["gelu"] = F.gelu


def build_layer_norm(config: RWKV6Config) -> nn.Module:
    """LayerNorm of the residual stream: fla's fused one with ``fuse_norm``, else ``torch.nn.LayerNorm``."""
    norm = LayerNorm if config.fuse_norm else nn.LayerNorm
    return norm(config.hidden_size, bias=config.norm_bias, eps=config.norm_eps)


def ffn_width(hidden_size: int, hidden_ratio: float | None, intermediate_size: int | None) -> int:
    """``intermediate_size``, else fla's ``int(hidden_size * hidden_ratio)`` rounded up to a multiple of 32."""
    if intermediate_size is not None:
        return intermediate_size
    width = int(hidden_size * (3.5 if hidden_ratio is None else hidden_ratio))
    return 32 * ((width + 31) // 32)


def shifted_channel_mix(
    ffn: nn.Module,
    x: torch.Tensor,
    attention_mask: torch.Tensor | None,
    past_key_values: FLACache | None,
    cu_seqlens: torch.Tensor | None,
    cp_context: CPContext | None = None,
) -> torch.Tensor:
    """RWKV channel mixing's token-shift plumbing (RWKV6 and RWKV7 FFNs): ``ffn.mix(x, delta)`` with ``delta`` the
    difference to the previous token (the cached ``ffn_state`` across calls, per sequence with ``cu_seqlens``;
    a padded batch without a cache is unpacked first, ``attention_mask [B, cached + T]``), and the last token
    kept in the cache. ``x``: ``[B, T, hidden_size]``; returns ``mix``'s ``[B, T, hidden_size]``. Under context
    parallel (``cp_context``) the first token's predecessor comes from the previous rank (no cache).

    ``ffn.layer_idx`` is read only with a cache: torch.compile guards on an int attribute that a forward reads,
    even one passed along unused, and a training forward that read it compiled every layer anew (torch 2.11)."""
    if cp_context is not None:
        return ffn.mix(x, token_shift_with_halo(x, cp_context, cu_seqlens))
    prev = None
    if past_key_values is not None:
        layer_idx = ffn.layer_idx
        if past_key_values.get_seq_length(layer_idx) > 0:
            prev = past_key_values[layer_idx]["ffn_state"]  # None on the first call (the mixer wrote first)
    info = None
    if attention_mask is not None and cu_seqlens is None and prev is None:
        info = get_padding_info(attention_mask, x.shape[1])
        x, cu_seqlens = unpad(x, info)[None], info.cu_seqlens
    delta, last = token_shift(x, cu_seqlens, prev, output_cache=True)
    out = ffn.mix(x, delta)
    if past_key_values is not None:
        past_key_values.update(ffn_state=last, layer_idx=layer_idx, offset=0)  # the mixer counted the tokens
    return out if info is None else repad(out[0], info)


class RWKV6FeedForward(nn.Module):
    """RWKV channel mixing: ``sigmoid(receptance(x, delta)) * value(act(key(x, delta)))`` (fla's names).

    Padding: with a padding mask and no cached token, the real tokens are packed so each sequence's shift
    starts at zero; the output is zero at padding.
    """

    def __init__(
        self,
        hidden_size: int,
        hidden_ratio: float | None = None,
        intermediate_size: int | None = None,
        hidden_act: str = "sqrelu",
        layer_idx: int | None = None,
    ):
        super().__init__()
        if hidden_act not in FFN_ACTIVATIONS:
            raise ValueError(f"RWKV6FeedForward: hidden_act={hidden_act!r} is not one of {tuple(FFN_ACTIVATIONS)}")
        self.hidden_size, self.layer_idx = hidden_size, layer_idx
        self.intermediate_size = ffn_width(hidden_size, hidden_ratio, intermediate_size)
        self.key = LerpLinear(hidden_size, self.intermediate_size)
        self.value = nn.Linear(self.intermediate_size, hidden_size, bias=False)
        self.receptance = LerpLinear(hidden_size, hidden_size)
        self.act_fn = FFN_ACTIVATIONS[hidden_act]

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: FLACache | None = None,
        cu_seqlens: torch.Tensor | None = None,
        cp_context: CPContext | None = None,
    ) -> torch.Tensor:
        """``x [B, T, hidden_size]`` -> ``[B, T, hidden_size]``; ``attention_mask [B, cached + T]`` (padding);
        ``cp_context``: this rank's slice of sequences split over ranks (:func:`shifted_channel_mix`)."""
        return shifted_channel_mix(self, x, attention_mask, past_key_values, cu_seqlens, cp_context)

    def mix(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The channel mixing of ``x`` given its token-shift difference ``delta`` (both ``[B, T, hidden_size]``)."""
        return torch.sigmoid(self.receptance(x, delta)) * self.value(self.act_fn(self.key(x, delta)))


class RWKVBlock(GradientCheckpointingLayer):
    """What the RWKV6 and RWKV7 blocks share: the norms (``pre_norm`` on layer 0 with ``norm_first``,
    ``attn_norm``, ``ffn_norm``), the time mixing from :meth:`build_mixer` unless the config makes the layer a
    softmax-attention one, and the channel mixing from :meth:`build_ffn` (built in this order, as fla does)."""

    def __init__(self, config: RWKV6Config, layer_idx: int):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        if config.norm_first and layer_idx == 0:
            self.pre_norm = build_layer_norm(config)
        self.attn_norm = build_layer_norm(config)
        attn = build_attention(config, layer_idx)
        self.attn = self.build_mixer(config, layer_idx) if attn is None else attn
        self.ffn_norm = build_layer_norm(config)
        self.ffn = self.build_ffn(config, layer_idx)

    def build_mixer(self, config, layer_idx: int) -> nn.Module:
        raise NotImplementedError

    def build_ffn(self, config, layer_idx: int) -> nn.Module:
        raise NotImplementedError

    def residual_in(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The block's input as the residual stream (``pre_norm``-ed on layer 0 with ``norm_first``)."""
        return self.pre_norm(hidden_states) if hasattr(self, "pre_norm") else hidden_states

    def channel_mix(
        self,
        mixed: torch.Tensor,
        residual: torch.Tensor,
        attention_mask: torch.Tensor | None,
        past_key_values: FLACache | None,
        cu_seqlens: torch.Tensor | None,
        cp_context: CPContext | None = None,
    ) -> torch.Tensor:
        """``x + ffn(ffn_norm(x))`` with ``x = residual + mixed`` (the time mixing's output; the add is fused
        into the norm with ``fuse_norm``); all ``[B, T, hidden_size]``."""
        if self.config.fuse_norm:
            hidden_states, residual = self.ffn_norm(mixed, residual, True)
        else:
            residual = residual + mixed
            hidden_states = self.ffn_norm(residual)
        return residual + self.ffn(hidden_states, attention_mask, past_key_values, cu_seqlens, cp_context)


class RWKV6Block(RWKVBlock):
    """One layer (see the module docstring); ``forward`` returns ``(hidden_states, None, past_key_values)``."""

    token_local = True  # the channel mixing's token shift reads across ranks itself (context parallel)

    def build_mixer(self, config: RWKV6Config, layer_idx: int) -> nn.Module:
        return RWKV6Attention(
            mode=config.attn_mode,
            hidden_size=config.hidden_size,
            expand_k=config.expand_k,
            expand_v=config.expand_v,
            num_heads=config.num_heads,
            proj_low_rank_dim=config.proj_low_rank_dim,
            gate_low_rank_dim=config.gate_low_rank_dim,
            norm_eps=config.norm_eps,
            fuse_norm=config.fuse_norm,
            layer_idx=layer_idx,
        )

    def build_ffn(self, config: RWKV6Config, layer_idx: int) -> nn.Module:
        return RWKV6FeedForward(
            config.hidden_size, config.hidden_ratio, config.intermediate_size, config.hidden_act, layer_idx
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
        residual = self.residual_in(hidden_states)
        hidden_states, attentions, past_key_values = self.attn(
            self.attn_norm(residual),
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_attentions=output_attentions,
            cu_seqlens=cu_seqlens,
            **kwargs,
        )
        cp = kwargs.get("cp_context")
        hidden_states = self.channel_mix(hidden_states, residual, attention_mask, past_key_values, cu_seqlens, cp)
        return hidden_states, attentions, past_key_values


class RWKV6PreTrainedModel(FLAPreTrainedModel):
    config_class = RWKV6Config
    _no_split_modules = ["RWKV6Block"]

    tensor_parallel_plan = TPPlan(
        embed="model.embeddings",
        head="lm_head",
        regions={
            "attn": TPRegion(
                col=("r_proj.linear", "k_proj.linear", "v_proj.linear", "g_proj.linear", "w_proj.linear.lora.2"),
                row=("o_proj",),
                shard=("bonus", "g_norm"),
                divide=("num_heads", "num_kv_heads", *MIXER_DIMS),
            ),
            "ffn": TPRegion(col=("key.linear",), row=("value",)),
        },
    )
    """Time mixing split by heads (the five token-shift mixes and the decay's first low-rank Linear replicated);
    channel mixing: ``key`` column-, ``value`` row-parallel, ``receptance`` replicated (its sigmoid gate scales
    the summed output, so gating each rank's partial sum is exact)."""

    @classmethod
    def token_mixer(cls, config: RWKV6Config) -> TokenMixer:
        return TokenMixer.from_expand("linear", config.hidden_size, config.num_heads, config.expand_k, config.expand_v)


class RWKV6Model(RWKV6PreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` RWKV6Blocks -> LayerNorm (see :class:`FLAModel` for forward)."""

    block_class = RWKV6Block

    def build_final_norm(self, config: RWKV6Config) -> nn.Module:
        return build_layer_norm(config)


class RWKV6ForCausalLM(RWKV6PreTrainedModel, FLAForCausalLM):
    """RWKV6Model + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = RWKV6Model


__all__ = ["RWKVBlock", "RWKV6Block", "RWKV6FeedForward", "RWKV6ForCausalLM", "RWKV6Model", "RWKV6PreTrainedModel"]
