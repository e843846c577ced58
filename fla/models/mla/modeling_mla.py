"""MLA: pre-norm blocks of multi-head latent attention and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{attn_norm, attn.{q_proj(.0/.1/.2),
k_rope, kv_proj.{0,1,2}, o_proj}, mlp_norm, mlp.{gate,up,down}_proj}``, ``model.norm``, ``lm_head``), so its
checkpoints load as is.
"""

from __future__ import annotations

from fla.layers.mla import MultiheadLatentAttention
from fla.models.flops import TokenMixer
from fla.models.mla.configuration_mla import MLAConfig
from fla.models.modeling_utils import FLABlock, FLAForCausalLM, FLAModel, FLAPreTrainedModel
from fla.models.tp_plan import MLP_REGION, TPPlan, TPRegion


class MLABlock(FLABlock):
    """One layer: ``MultiheadLatentAttention`` + ``GatedMLP`` with pre-norms."""

    def __init__(self, config: MLAConfig, layer_idx: int):
        attn = MultiheadLatentAttention(
            hidden_size=config.hidden_size,
            num_heads=config.num_heads,
            q_lora_rank=config.q_lora_rank,
            qk_rope_head_dim=config.qk_rope_head_dim,
            kv_lora_rank=config.kv_lora_rank,
            v_head_dim=config.v_head_dim,
            qk_nope_head_dim=config.qk_nope_head_dim,
            qk_head_dim=config.qk_head_dim,
            window_size=config.window_size,
            rope_theta=config.rope_theta,
            max_position_embeddings=config.max_position_embeddings,
            rope_scaling=config.rope_scaling,
            layer_idx=layer_idx,
        )
        super().__init__(config, layer_idx, attn)


class MLAPreTrainedModel(FLAPreTrainedModel):
    config_class = MLAConfig
    _no_split_modules = ["MLABlock"]

    tensor_parallel_plan = TPPlan(
        embed="model.embeddings",
        head="lm_head",
        regions={
            "attn": TPRegion(col=("q_proj.2", "kv_proj.2"), row=("o_proj",), divide=("num_heads",)),
            "mlp": MLP_REGION,
        },
        unsupported={"q_lora_rank": None},
    )
    """Heads split: the query and key/value up-projections column-wise (their outputs are laid out by head),
    ``o_proj`` row-wise; the low-rank down-projections, their norms and ``k_rope`` (shared by all heads) are
    replicated. Without ``q_lora_rank`` the query projection is one plain ``q_proj``, which this plan does not
    split: TP refuses that config."""

    @classmethod
    def token_mixer(cls, config: MLAConfig) -> TokenMixer:
        """Softmax attention over ``H`` heads with q/k width ``Dn + Dr`` and value width ``Dv``: the rule counts
        ``6 * H * K * L`` for the scores and ``6 * H * V * L`` for the outputs (keys/values are expanded)."""
        qk = config.qk_nope_head_dim + config.qk_rope_head_dim
        return TokenMixer("softmax", config.num_heads, qk, config.v_head_dim, config.window_size)


class MLAModel(MLAPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` MLABlocks -> RMSNorm (see :class:`FLAModel` for forward)."""

    block_class = MLABlock


class MLAForCausalLM(MLAPreTrainedModel, FLAForCausalLM):
    """MLAModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = MLAModel


__all__ = ["MLABlock", "MLAForCausalLM", "MLAModel", "MLAPreTrainedModel"]
