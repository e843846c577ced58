"""MoM language models: pre-norm blocks of a mixture-of-memories layer (or hybrid softmax attention) and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{attn_norm, attn.{q_proj, gate,
k_proj.E, v_proj.E, b_proj.E, a_proj.E, shared_{k,v,b,a}, A_log, dt_bias, {q,k,v}_conv1d, g_proj, o_norm,
o_proj}, mlp_norm, mlp.{gate,up,down}_proj}``, ``model.norm``, ``lm_head``), so its checkpoints load as is.
Init as fla 0.6.0's: the shared one, except inside each MoM layer (xavier-uniform projections, see
:meth:`fla.layers.MomAttention.reset_parameters`, which the shared ``_init_weights`` calls after the submodules).

Every MoM layer returns its router logits; :class:`MomModel` collects them (``router_logits``, one
``[B * T, num_memories]`` tensor per MoM layer) and :class:`MomForCausalLM` adds ``aux_loss_scale`` times
the Switch-Transformer load-balancing loss (:func:`load_balancing_loss_func`, fla's) to the language-model
loss when labels are given (the output's ``aux_loss`` holds the unscaled value).

Tensor parallelism: none. The router and the per-memory projections are ``ModuleList`` entries whose number
depends on the config, which a static plan cannot name; flame refuses ``tensor_parallel_degree > 1`` for
this family with "its model has no TP plan".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from fla.layers.mom import MomAttention
from fla.models import flops
from fla.models.config_utils import get_attn_spec
from fla.models.flops import TokenMixer
from fla.models.modeling_utils import (
    CACHE_FIELD,
    FLABlock,
    FLAForCausalLM,
    FLAModel,
    FLAPreTrainedModel,
    build_attention,
)
from fla.models.mom.configuration_mom import MomConfig


def load_balancing_loss_func(
    gate_logits: tuple[torch.Tensor, ...] | None,
    num_experts: int | None = None,
    top_k: int = 2,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor | int:
    """Switch Transformer's load-balancing loss over all layers' router logits (fla 0.6.0's definition).

    With routing probabilities ``p = softmax(logits)`` of every (layer, token) and ``f[j, e]`` the fraction of
    (layer, token) pairs whose ``j``-th choice is memory ``e``::

        loss = num_experts * sum_{j, e} f[j, e] * mean(p[:, e])

    Args:
        gate_logits: one ``[B * T, num_experts]`` tensor per layer (fla's ``router_logits``).
        num_experts: number of memories; ``top_k``: choices per token.
        attention_mask: ``[B, T]`` (1 = token, 0 = padding): padding positions are left out of both means.
    Returns:
        the loss (a scalar tensor), or ``0`` when there are no logits (fla's convention).
    """
    if not isinstance(gate_logits, tuple) or len(gate_logits) == 0:
        return 0
    device = gate_logits[0].device
    logits = torch.cat([g.to(device) for g in gate_logits])  # [layers * B * T, E]
    probs = F.softmax(logits, dim=-1)
    chosen = F.one_hot(torch.topk(probs, top_k, dim=-1).indices, num_experts).float()  # [rows, top_k, E]
    if attention_mask is None:
        frac, mean_prob = chosen.mean(0), probs.mean(0)
    else:
        w = attention_mask.to(device).reshape(-1).float()
        w = w.repeat(logits.shape[0] // w.numel())  # the same mask for every layer, layer-major like the logits
        frac = (chosen * w[:, None, None]).sum(0) / w.sum()
        mean_prob = (probs * w[:, None]).sum(0) / w.sum()
    return (frac * mean_prob[None]).sum() * num_experts


class MomBlock(FLABlock):
    """One layer: ``MomAttention`` (or ``Attention`` at the config's hybrid layers) + ``GatedMLP``.

    ``forward`` appends the MoM layer's router logits to ``router_logits_sink`` (a list from :class:`MomModel`).
    """

    def __init__(self, config: MomConfig, layer_idx: int):
        mixer = build_attention(config, layer_idx)
        if mixer is None:
            mixer = MomAttention(
                hidden_size=config.hidden_size,
                head_dim=config.head_dim,
                num_heads=config.num_heads,
                expand_v=config.expand_v,
                mode=config.attn_mode,
                use_output_gate=config.use_output_gate,
                use_short_conv=config.use_short_conv,
                conv_size=config.conv_size,
                layer_idx=layer_idx,
                norm_eps=config.norm_eps,
                num_memories=config.num_memories,
                topk=config.topk,
                capacity=config.capacity,
                shared_mem=config.shared_mem,
                single_kv_proj=config.single_kv_proj,
            )
        super().__init__(config, layer_idx, mixer)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool | None = False,
        output_attentions: bool | None = False,
        router_logits_sink: list | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None, Any]:
        """As :meth:`FLABlock.forward`; the mixer's router logits (MoM layers) go to ``router_logits_sink``."""
        residual = hidden_states
        out = self.attn(
            self.attn_norm(hidden_states),
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_attentions=output_attentions,
            **kwargs,
        )
        hidden_states, past_key_values = out[0], out[2]
        if len(out) > 3 and router_logits_sink is not None:
            router_logits_sink.append(out[3])
        if self.config.fuse_norm:
            hidden_states, residual = self.mlp_norm(hidden_states, residual, True)
        else:
            residual = residual + hidden_states
            hidden_states = self.mlp_norm(residual)
        hidden_states = residual + self.mlp(hidden_states, **kwargs)
        return hidden_states, None, past_key_values


def mom_layers(config: MomConfig) -> int:
    """Layers holding a MoM mixer (the rest are the hybrid ``attn`` spec's softmax attention)."""
    return sum(get_attn_spec(config.attn, i) is None for i in range(config.num_hidden_layers))


class MomPreTrainedModel(FLAPreTrainedModel):
    config_class = MomConfig
    _no_split_modules = ["MomBlock"]

    @classmethod
    def token_mixer(cls, config: MomConfig) -> TokenMixer:
        """Every token runs the gated delta rule in ``topk`` memories (+ the shared one): as many times the heads."""
        memories = config.topk + int(config.shared_mem)
        return TokenMixer.from_head_dim("delta", config.num_heads * memories, config.head_dim, config.expand_v)

    @classmethod
    def flops_per_token_of(cls, config: MomConfig, num_params: int, num_embedding_params: int, seq_len: int) -> float:
        """As the base rule, but a token only multiplies by the k / v / beta / decay projections of its ``topk``
        memories: the other ``num_memories - topk`` memories' projections are left out of ``6 N``."""
        idle = 0
        if not config.single_kv_proj:
            key_dim = config.num_heads * config.head_dim
            width = key_dim + round(key_dim * config.expand_v) + 2 * config.num_heads  # one memory's k, v, b, a
            idle = (config.num_memories - config.topk) * width * config.hidden_size * mom_layers(config)
        return flops.flops_per_token(config, num_params - idle, num_embedding_params, seq_len, cls.token_mixer(config))


@dataclass
class MomOutputWithPast(BaseModelOutputWithPast):
    """:class:`MomModel`'s output: the base fields plus ``router_logits`` (one tensor per MoM layer)."""

    router_logits: tuple[torch.Tensor, ...] | None = None


@dataclass
class MomCausalLMOutputWithPast(CausalLMOutputWithPast):
    """:class:`MomForCausalLM`'s output: the base fields, ``aux_loss`` (unscaled; with labels) and ``router_logits``."""

    aux_loss: torch.Tensor | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None


class MomModel(MomPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` MomBlocks -> RMSNorm; also returns every MoM layer's router logits."""

    block_class = MomBlock

    def forward(self, *args, return_dict: bool | None = None, **kwargs) -> MomOutputWithPast | tuple:
        """:meth:`FLAModel.forward` (same arguments) plus ``router_logits`` in the output."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        sink: list[torch.Tensor] = []
        out = super().forward(*args, return_dict=True, router_logits_sink=sink, **kwargs)
        cache = getattr(out, CACHE_FIELD)
        if not return_dict:
            return tuple(v for v in (out.last_hidden_state, cache, out.hidden_states) if v is not None)
        return MomOutputWithPast(
            last_hidden_state=out.last_hidden_state,
            hidden_states=out.hidden_states,
            router_logits=tuple(sink),
            **{CACHE_FIELD: cache},
        )


class MomForCausalLM(MomPreTrainedModel, FLAForCausalLM):
    """MomModel + ``lm_head``; with labels the loss is cross-entropy + ``aux_loss_scale`` * load-balancing loss."""

    base_model_class = MomModel

    output_class = MomCausalLMOutputWithPast

    def auxiliary_outputs(self, outputs, labels, attention_mask, cu_seqlens) -> tuple[torch.Tensor | None, dict]:
        """fla's load-balancing loss over the router logits (with labels), scaled by ``aux_loss_scale``, and the
        ``aux_loss`` / ``router_logits`` output fields."""
        aux_loss = None
        if labels is not None:
            # the router logits cover this call's tokens: the mask's last T columns (none for a packed batch)
            T = outputs.last_hidden_state.shape[1]
            mask = None if attention_mask is None or cu_seqlens is not None else attention_mask[:, -T:]
            aux_loss = load_balancing_loss_func(outputs.router_logits, self.config.num_memories, self.config.topk, mask)
        term = self.config.aux_loss_scale * aux_loss if torch.is_tensor(aux_loss) else None
        return term, {"aux_loss": aux_loss, "router_logits": outputs.router_logits}


__all__ = [
    "MomBlock",
    "MomCausalLMOutputWithPast",
    "MomForCausalLM",
    "MomModel",
    "MomOutputWithPast",
    "MomPreTrainedModel",
    "load_balancing_loss_func",
    "mom_layers",
]
