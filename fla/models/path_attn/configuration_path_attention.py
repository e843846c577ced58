"""PaTHAttentionConfig: PaTH attention (Householder-product positions, RMSNorm, SwiGLU, GQA), field-compatible
with fla 0.6.0."""

from __future__ import annotations

from fla.models.config_utils import FLAConfig, check_positive_int


class PaTHAttentionConfig(FLAConfig):
    """Config of :class:`~fla.models.path_attn.PaTHAttentionForCausalLM` (``model_type = "path_attn"``).

    Field names and defaults are fla 0.6.0's; the shared ones are :class:`~fla.models.config_utils.FLAConfig`'s
    (no ``attn``: every layer is PaTH attention). Attention: ``num_heads``, ``num_kv_heads`` (GQA; default
    ``num_heads``), ``use_forget_gate`` (FoX's gate on top), ``use_w_shortconv`` (SiLU short convolution on the
    Householder directions), ``use_low_rank_w`` (rank-32 ``w_proj``). No RoPE: the Householder products carry the
    positions. ``elementwise_affine`` is stored but unused (as in fla).
    """

    model_type = "path_attn"
    hybrid_attn = False

    def __init__(
        self,
        *,
        num_heads: int = 32,
        num_kv_heads: int | None = None,
        use_forget_gate: bool = False,
        use_w_shortconv: bool = True,
        use_low_rank_w: bool = True,
        elementwise_affine: bool | None = True,
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(**kwargs)

    def check_fields(self) -> None:
        """The shared checks, then attention's: head counts dividing ``hidden_size``."""
        super().check_fields()
        check_positive_int(self, "num_heads")
        check_positive_int(self, "num_kv_heads", allow_none=True)
        heads, kv_heads, name = self.num_heads, self.num_kv_heads, type(self).__name__
        if self.hidden_size % heads != 0:
            raise ValueError(f"{name}: hidden_size={self.hidden_size} is not a multiple of num_heads={heads}")
        if kv_heads is not None and heads % kv_heads != 0:
            raise ValueError(f"{name}: num_heads={heads} is not a multiple of num_kv_heads={kv_heads}")


__all__ = ["PaTHAttentionConfig"]
