"""PaTH attention model: pre-norm blocks of PaTH attention and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{attn_norm, attn.{q,k,v,bt,g,o}_proj,
attn.w_proj[.0/.1], attn.w_conv1d, mlp_norm, mlp.{gate,up,down}_proj}``, ``model.norm``, ``lm_head``), so its
checkpoints load as is.
"""

from __future__ import annotations

from fla.layers.path_attn import PaTHAttention
from fla.models.flops import TokenMixer
from fla.models.modeling_utils import FLABlock, FLAForCausalLM, FLAModel, FLAPreTrainedModel
from fla.models.path_attn.configuration_path_attention import PaTHAttentionConfig
from fla.models.tp_plan import MLP_REGION, TPPlan, TPRegion


class PaTHAttentionBlock(FLABlock):
    """One layer: ``PaTHAttention`` + ``GatedMLP`` with pre-norms."""

    def __init__(self, config: PaTHAttentionConfig, layer_idx: int):
        attn = PaTHAttention(
            hidden_size=config.hidden_size,
            num_heads=config.num_heads,
            num_kv_heads=config.num_kv_heads,
            use_forget_gate=config.use_forget_gate,
            use_w_shortconv=config.use_w_shortconv,
            use_low_rank_w=config.use_low_rank_w,
            layer_idx=layer_idx,
        )
        super().__init__(config, layer_idx, attn)


class PaTHAttentionPreTrainedModel(FLAPreTrainedModel):
    config_class = PaTHAttentionConfig
    _no_split_modules = ["PaTHAttentionBlock"]

    tensor_parallel_plan = TPPlan(
        embed="model.embeddings",
        head="lm_head",
        regions={
            "attn": TPRegion(
                col=("q_proj", "k_proj", "v_proj", "w_proj.1", "bt_proj", "g_proj"),
                row=("o_proj",),
                shard=("w_conv1d",),
                divide=("num_heads", "num_kv_heads"),
            ),
            "mlp": MLP_REGION,
        },
        unsupported={"use_low_rank_w": False},
    )
    """Every input projection splits by heads (``bt_proj``: one output per key head, ``g_proj`` one per query
    head; the low-rank ``w_proj.1`` by key head, its rank-32 input ``w_proj.0`` is replicated) and the w short
    convolution by channel. A full-rank ``w_proj`` (``use_low_rank_w = false``, one ``nn.Linear`` at the path
    the low-rank one nests) is not in the plan: such models run without TP."""

    @classmethod
    def token_mixer(cls, config: PaTHAttentionConfig) -> TokenMixer:
        """Softmax attention plus the Householder work that grows with the context: carrying each query past
        every earlier key chunk (``q W^T`` and ``(q W^T) U``, ``2 C K`` FLOPs each per query and chunk of ``C``
        keys, i.e. ``4 K`` per query-key pair) on top of the scores (``2 K``) and the output (``2 V``): attention
        with key width ``3 K``, ``6 H (3 K + V) L``. The per-token chunk factors (``U``, ``TM``, ``k_hat``:
        ``O(C K)`` per token and key head, independent of ``L``) are left out."""
        head_dim = config.hidden_size // config.num_heads
        return TokenMixer("softmax", config.num_heads, 3 * head_dim, head_dim)


class PaTHAttentionModel(PaTHAttentionPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` PaTHAttentionBlocks -> RMSNorm (see :class:`FLAModel`)."""

    block_class = PaTHAttentionBlock


class PaTHAttentionForCausalLM(PaTHAttentionPreTrainedModel, FLAForCausalLM):
    """PaTHAttentionModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = PaTHAttentionModel


__all__ = ["PaTHAttentionBlock", "PaTHAttentionForCausalLM", "PaTHAttentionModel", "PaTHAttentionPreTrainedModel"]
