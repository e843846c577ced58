"""LinearAttentionConfig: linear-attention models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.linear_attn import FEATURE_MAPS, LINEAR_ATTN_MODES
from fla.models.config_utils import FLAConfig, check_choice, check_linear_heads


class LinearAttentionConfig(FLAConfig):
    """Config of :class:`~fla.models.linear_attn.LinearAttentionForCausalLM` (``model_type = "linear_attn"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged; the shared ones
    (sizes, MLP, norms, fuse flags, tokens, ``attn``) are :class:`~fla.models.config_utils.FLAConfig`'s.
    Mixer (:class:`fla.layers.LinearAttention`): ``attn_mode`` (``"fused_chunk"``, which runs the chunk
    op; ``"chunk"``; ``"fused_recurrent"``), ``expand_k`` / ``expand_v`` (key / value widths per
    ``hidden_size``), ``num_heads``, ``num_kv_heads``, ``feature_map`` (one of
    :data:`fla.layers.linear_attn.FEATURE_MAPS`), ``tie_feature_map_qk``, ``norm_q`` / ``norm_k``
    (sum-normalize the mapped q / k), ``norm_feature_map`` (the layer's ``do_feature_map_norm``: divide
    the output by ``q_t . sum_{s <= t} k_s``), ``elementwise_affine`` (of the per-head output norm).
    """

    model_type = "linear_attn"

    def __init__(
        self,
        *,
        attn_mode: str = "fused_chunk",
        expand_k: float = 1.0,
        expand_v: float = 1.0,
        num_heads: int = 4,
        num_kv_heads: int | None = None,
        feature_map: str = "elementwise_product",
        tie_feature_map_qk: bool = False,
        norm_q: bool = False,
        norm_k: bool = False,
        norm_feature_map: bool = False,
        elementwise_affine: bool | None = True,
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(**kwargs)

    def check_fields(self) -> None:
        """The shared checks, then the layer's: ``attn_mode``, head widths, ``feature_map``."""
        super().check_fields()
        check_choice(self, "attn_mode", LINEAR_ATTN_MODES)
        check_linear_heads(self, self.expand_k, self.expand_v, self.num_kv_heads)
        check_choice(self, "feature_map", FEATURE_MAPS)


__all__ = ["LinearAttentionConfig"]
