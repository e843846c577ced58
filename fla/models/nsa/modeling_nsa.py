"""NSA: pre-norm blocks of native sparse attention and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{attn_norm, attn.{q,k,v,g,o}_proj,
mlp_norm, mlp.{gate,up,down}_proj}``, ``model.norm``, ``lm_head``), so its checkpoints load as is.
"""

from __future__ import annotations

from dataclasses import dataclass

from fla.layers.nsa import NativeSparseAttention
from fla.models.flops import TokenMixer
from fla.models.modeling_utils import FLABlock, FLAForCausalLM, FLAModel, FLAPreTrainedModel
from fla.models.nsa.configuration_nsa import NSAConfig
from fla.models.tp_plan import MLP_REGION, TPPlan, TPRegion


@dataclass(frozen=True)
class NSAMixer(TokenMixer):
    """NSA's FLOPs: three softmax-attention branches per query head (``K = V = head_dim``), each
    ``6 * H * (K + V) * keys`` for training, over ``L / BS`` block means (compressed), ``min(L, S * BS)`` selected
    keys and ``min(L, W)`` window keys, plus the top-k scores ``2 * H * K * L / BS`` (forward only)."""

    block_size: int = 64
    block_counts: int = 16

    def flops_per_token(self, seq_len: int) -> float:
        h, k, v = self.heads, self.key_dim, self.value_dim
        keys = seq_len / self.block_size + min(seq_len, self.block_counts * self.block_size)
        keys += min(seq_len, self.window or 0)
        return 6.0 * h * (k + v) * keys + 2.0 * h * k * seq_len / self.block_size


class NSABlock(FLABlock):
    """One layer: ``NativeSparseAttention`` + ``GatedMLP`` with pre-norms."""

    def __init__(self, config: NSAConfig, layer_idx: int):
        attn = NativeSparseAttention(
            hidden_size=config.hidden_size,
            num_heads=config.num_heads,
            num_kv_heads=config.num_kv_heads,
            head_dim=config.head_dim,
            qkv_bias=config.qkv_bias,
            block_size=config.block_size,
            block_counts=config.block_counts,
            window_size=config.window_size,
            rope_theta=config.rope_theta,
            max_position_embeddings=config.max_position_embeddings,
            layer_idx=layer_idx,
        )
        super().__init__(config, layer_idx, attn)


class NSAPreTrainedModel(FLAPreTrainedModel):
    config_class = NSAConfig
    _no_split_modules = ["NSABlock"]

    tensor_parallel_plan = TPPlan(
        embed="model.embeddings",
        head="lm_head",
        regions={
            "attn": TPRegion(
                col=("q_proj", "k_proj", "v_proj", "g_proj"),
                row=("o_proj",),
                divide=("num_heads", "num_kv_heads"),
            ),
            "mlp": MLP_REGION,
        },
    )
    """Heads split: q/k/v and the gates (``g_proj``'s outputs are laid out head by head, three per head)
    column-wise, ``o_proj`` row-wise; each rank keeps whole key/value groups (``num_kv_heads`` divides)."""

    @classmethod
    def token_mixer(cls, config: NSAConfig) -> TokenMixer:
        d = config.head_dim
        return NSAMixer(
            "softmax", config.num_heads, d, d, window=config.window_size or None, block_size=config.block_size,
            block_counts=config.block_counts,
        )  # fmt: skip


class NSAModel(NSAPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` NSABlocks -> RMSNorm (see :class:`FLAModel`)."""

    block_class = NSABlock


class NSAForCausalLM(NSAPreTrainedModel, FLAForCausalLM):
    """NSAModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = NSAModel


__all__ = ["NSABlock", "NSAForCausalLM", "NSAMixer", "NSAModel", "NSAPreTrainedModel"]
