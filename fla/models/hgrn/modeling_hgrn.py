"""HGRN language models: pre-norm blocks of HGRNAttention (or hybrid softmax attention) and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.lower_bounds`` (with ``use_lower_bound``),
``model.layers.N.{attn_norm, attn.{i,f,g}_proj, attn.{i,f}_conv1d, attn.g_norm, attn.o_proj, mlp_norm,
mlp.{gate,up,down}_proj}``, ``model.norm``, ``lm_head``), so its checkpoints load as is.

Lower bounds (fla's): ``lower_bounds [L, D]`` (``D = hidden_size * expand_ratio``, zeros at init) become
per-layer bounds ``lb = cumsum(softmax(lower_bounds, dim=0)) - softmax(lower_bounds, dim=0)[0]``, increasing
with depth from ``lb[0] = 0``; layer ``i`` gets ``lb[i]`` (see :mod:`fla.layers.hgrn`).
"""

from __future__ import annotations

import torch

from fla.layers.hgrn import HGRNAttention
from fla.models.flops import TokenMixer
from fla.models.hgrn.configuration_hgrn import HGRNConfig
from fla.models.lower_bounds import LowerBoundedModel
from fla.models.modeling_utils import FLABlock, FLAForCausalLM, FLAPreTrainedModel, build_attention
from fla.models.tp_plan import MLP_REGION, TPPlan, TPRegion


class HGRNBlock(FLABlock):
    """One layer: ``HGRNAttention`` (or ``Attention`` at the config's hybrid layers) + ``GatedMLP``.

    ``forward`` takes this layer's row of the model's lower bounds (``lower_bound [D]``) and hands it to the mixer.
    """

    def __init__(self, config: HGRNConfig, layer_idx: int):
        mixer = build_attention(config, layer_idx)
        if mixer is None:
            mixer = HGRNAttention(
                mode=config.attn_mode,
                hidden_size=config.hidden_size,
                expand_ratio=config.expand_ratio,
                use_short_conv=config.use_short_conv,
                conv_size=config.conv_size,
                elementwise_affine=config.elementwise_affine,
                norm_eps=config.norm_eps,
                layer_idx=layer_idx,
            )
        super().__init__(config, layer_idx, mixer)

    def forward(self, hidden_states: torch.Tensor, *args, lower_bound: torch.Tensor | None = None, **kwargs):
        if lower_bound is not None and isinstance(self.attn, HGRNAttention):
            kwargs["lower_bound"] = lower_bound
        return super().forward(hidden_states, *args, **kwargs)


class HGRNPreTrainedModel(FLAPreTrainedModel):
    config_class = HGRNConfig
    _no_split_modules = ["HGRNBlock"]

    tensor_parallel_plan = TPPlan(
        embed="model.embeddings",
        head="lm_head",
        regions={
            "attn": TPRegion(
                col=("i_proj", "f_proj", "g_proj"),
                row=("o_proj",),
                shard=("i_conv1d", "f_conv1d"),
                divide=("input_dim", "value_dim", "value_dim_per_group", "head_v_dim"),
                full_norms=("g_norm",),
                split_inputs=("lower_bound",),
            ),
            "mlp": MLP_REGION,
        },
    )
    """The scan is element-wise: the ``D`` features split over the ranks like heads (one "head" of ``D / tp``).
    The output RMSNorm spans all ``D`` (a full norm: its mean square is all-reduced). ``model.lower_bounds
    [L, D]`` stays replicated outside the blocks (its softmax runs over layers, per feature); each rank's
    region takes its share of the layer's row (``split_inputs``), the features its projections hold."""

    @classmethod
    def token_mixer(cls, config: HGRNConfig) -> TokenMixer:
        # one "head" whose state is a D-vector, counted as linear attention (6 D per token and layer); the
        # element-wise ``scan`` kind (Mamba's) would count 21 D: either is well under 1% of 6N at these sizes
        return TokenMixer("linear", 1, 1, config.input_dim)


class HGRNModel(HGRNPreTrainedModel, LowerBoundedModel):
    """Embeddings -> ``num_hidden_layers`` HGRNBlocks -> RMSNorm (see :class:`FLAModel` for forward),
    with the per-layer forget-gate lower bounds when ``use_lower_bound``."""

    block_class = HGRNBlock
    lower_bounds_dim = "input_dim"


class HGRNForCausalLM(HGRNPreTrainedModel, FLAForCausalLM):
    """HGRNModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = HGRNModel


__all__ = ["HGRNBlock", "HGRNForCausalLM", "HGRNModel", "HGRNPreTrainedModel"]
