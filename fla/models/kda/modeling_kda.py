"""KDA language models: pre-norm blocks of Kimi Delta Attention (or hybrid softmax attention) and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{attn_norm, attn.{q,k,v,b}_proj,
attn.f_proj.{0,1}, attn.g_proj.{0,1}, attn.A_log, attn.dt_bias, attn.{q,k,v}_conv1d, attn.o_norm, attn.o_proj,
mlp_norm, mlp.{gate,up,down}_proj}``, ``model.norm``, ``lm_head``), so its checkpoints load as is. ``A_log`` /
``dt_bias`` get their own init (:meth:`fla.layers.KimiDeltaAttention.reset_parameters`, called by the shared
``_init_weights``).
"""

from __future__ import annotations

from fla.layers.kda import KimiDeltaAttention
from fla.models.flops import TokenMixer
from fla.models.kda.configuration_kda import KDAConfig
from fla.models.modeling_utils import FLABlock, FLAForCausalLM, FLAModel, FLAPreTrainedModel, build_attention
from fla.models.tp_plan import SHORT_CONVS, linear_mixer_plan


class KDABlock(FLABlock):
    """One layer: ``KimiDeltaAttention`` (or ``Attention`` at the config's hybrid layers) + ``GatedMLP``."""

    def __init__(self, config: KDAConfig, layer_idx: int):
        mixer = build_attention(config, layer_idx)
        if mixer is None:
            mixer = KimiDeltaAttention(
                hidden_size=config.hidden_size,
                expand_v=config.expand_v,
                head_dim=config.head_dim,
                num_heads=config.num_heads,
                num_v_heads=config.num_v_heads,
                mode=config.attn_mode,
                use_short_conv=config.use_short_conv,
                allow_neg_eigval=config.allow_neg_eigval,
                safe_gate=config.safe_gate,
                lower_bound=config.lower_bound,
                conv_size=config.conv_size,
                norm_eps=config.norm_eps,
                layer_idx=layer_idx,
            )
        super().__init__(config, layer_idx, mixer)


class KDAPreTrainedModel(FLAPreTrainedModel):
    config_class = KDAConfig
    _no_split_modules = ["KDABlock"]

    tensor_parallel_plan = linear_mixer_plan(
        col=("q_proj", "k_proj", "v_proj", "b_proj", "f_proj.1", "g_proj.1"),
        shard=(*SHORT_CONVS, "A_log", "dt_bias"),
        heads=("num_heads", "num_v_heads"),
    )
    """The low-rank gates' second maps (``f_proj.1``, ``g_proj.1`` with its bias) and the per-value-head gate
    parameters ``A_log``, ``dt_bias`` are split with the heads; their first maps (to ``head_v_dim``) are
    replicated."""

    @classmethod
    def token_mixer(cls, config: KDAConfig) -> TokenMixer:
        heads = config.num_v_heads or config.num_heads
        return TokenMixer.from_head_dim("delta", heads, config.head_dim, config.expand_v)


class KDAModel(KDAPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` KDABlocks -> RMSNorm (see :class:`FLAModel` for forward)."""

    block_class = KDABlock


class KDAForCausalLM(KDAPreTrainedModel, FLAForCausalLM):
    """KDAModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = KDAModel


__all__ = ["KDABlock", "KDAForCausalLM", "KDAModel", "KDAPreTrainedModel"]
