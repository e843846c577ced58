"""HGRN2 language models: pre-norm blocks of HGRN2Attention (or hybrid softmax attention) and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.lower_bounds`` (with ``use_lower_bound``),
``model.layers.N.{attn_norm, attn.{q,f,i}_proj, attn.{q,f,i}_conv1d, attn.g_norm, attn.o_proj, mlp_norm,
mlp.{gate,up,down}_proj}``, ``model.norm``, ``lm_head``), so its checkpoints load as is.

Lower bounds (fla's): ``lower_bounds [L, hidden_size]`` (zeros at init) become per-layer bounds
``lb = cumsum(softmax(lower_bounds, dim=0)) - softmax(lower_bounds, dim=0)[0]``, increasing with depth
from ``lb[0] = 0``; layer ``i`` gets ``lb[i]`` (see :mod:`fla.layers.hgrn2`).
"""

from __future__ import annotations

import torch

from fla.layers.hgrn2 import HGRN2Attention
from fla.models.flops import TokenMixer
from fla.models.hgrn2.configuration_hgrn2 import HGRN2Config
from fla.models.lower_bounds import LowerBoundedModel
from fla.models.modeling_utils import FLABlock, FLAForCausalLM, FLAPreTrainedModel, build_attention
from fla.models.tp_plan import linear_mixer_plan


class HGRN2Block(FLABlock):
    """One layer: ``HGRN2Attention`` (or ``Attention`` at the config's hybrid layers) + ``GatedMLP``.

    ``forward`` takes this layer's row of the model's lower bounds (``lower_bound [hidden_size]``) and hands it to
    the mixer.
    """

    def __init__(self, config: HGRN2Config, layer_idx: int):
        mixer = build_attention(config, layer_idx)
        if mixer is None:
            mixer = HGRN2Attention(
                mode=config.attn_mode,
                hidden_size=config.hidden_size,
                num_heads=config.num_heads,
                expand_ratio=config.expand_ratio,
                use_short_conv=config.use_short_conv,
                conv_size=config.conv_size,
                elementwise_affine=config.elementwise_affine,
                norm_eps=config.norm_eps,
                layer_idx=layer_idx,
            )
        super().__init__(config, layer_idx, mixer)

    def forward(self, hidden_states: torch.Tensor, *args, lower_bound: torch.Tensor | None = None, **kwargs):
        if lower_bound is not None and isinstance(self.attn, HGRN2Attention):
            kwargs["lower_bound"] = lower_bound
        return super().forward(hidden_states, *args, **kwargs)


class HGRN2PreTrainedModel(FLAPreTrainedModel):
    config_class = HGRN2Config
    _no_split_modules = ["HGRN2Block"]

    tensor_parallel_plan = linear_mixer_plan(
        col=("q_proj", "f_proj", "i_proj"),
        shard=("q_conv1d", "f_conv1d", "i_conv1d"),
        widths=("forget_dim", "input_dim"),
        full_norms=("g_norm",),
        split_inputs=("lower_bound",),
    )
    """The output RMSNorm spans all heads (a full norm: its mean square is all-reduced). ``model.lower_bounds
    [L, H * K]`` stays replicated outside the blocks (its softmax runs over layers, per feature); each rank's
    region takes its heads' share of the layer's row (``split_inputs``)."""

    @classmethod
    def token_mixer(cls, config: HGRN2Config) -> TokenMixer:
        heads = config.layer_heads
        return TokenMixer("linear", heads, config.expand_ratio, config.hidden_size // heads)


class HGRN2Model(HGRN2PreTrainedModel, LowerBoundedModel):
    """Embeddings -> ``num_hidden_layers`` HGRN2Blocks -> RMSNorm (see :class:`FLAModel` for forward),
    with the per-layer forget-gate lower bounds when ``use_lower_bound``."""

    block_class = HGRN2Block
    lower_bounds_dim = "hidden_size"


class HGRN2ForCausalLM(HGRN2PreTrainedModel, FLAForCausalLM):
    """HGRN2Model + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = HGRN2Model


__all__ = ["HGRN2Block", "HGRN2ForCausalLM", "HGRN2Model", "HGRN2PreTrainedModel"]
