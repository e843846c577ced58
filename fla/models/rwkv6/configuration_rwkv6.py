"""RWKV6Config: RWKV6 (Finch) models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.rwkv6 import RWKV6_MODES
from fla.models.config_utils import FLAConfig, check_choice, check_linear_heads, check_positive_int

RWKV6_FFN_ACTS = ("sqrelu", "relu", "swish", "silu", "gelu")


class RWKV6Config(FLAConfig):
    """Config of :class:`~fla.models.rwkv6.RWKV6ForCausalLM` (``model_type = "rwkv6"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged; the shared ones (sizes,
    norms, fuse flags, tokens, ``attn``) are :class:`~fla.models.config_utils.FLAConfig`'s, with RWKV6's
    defaults ``hidden_ratio=3.5``, ``hidden_act="sqrelu"`` (the channel mixing's activation, one of
    :data:`RWKV6_FFN_ACTS`) and ``norm_eps=1e-5``. Time mixing: ``attn_mode`` (``"chunk"`` or
    ``"fused_recurrent"``), ``expand_k`` / ``expand_v``, ``num_heads``, ``proj_low_rank_dim`` (the five
    data-dependent mixes), ``gate_low_rank_dim`` (the decay projection). Norms: LayerNorms with bias
    (``norm_bias``) and, with ``norm_first``, an extra LayerNorm before the first block (``pre_norm``).
    """

    model_type = "rwkv6"
    mlp_acts = RWKV6_FFN_ACTS

    def __init__(
        self,
        *,
        attn_mode: str = "chunk",
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        num_heads: int = 4,
        proj_low_rank_dim: int = 32,
        gate_low_rank_dim: int = 64,
        norm_first: bool = True,
        norm_bias: bool = True,
        hidden_ratio: float | None = 3.5,
        hidden_act: str = "sqrelu",
        norm_eps: float = 1e-5,
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(hidden_ratio=hidden_ratio, hidden_act=hidden_act, norm_eps=norm_eps, **kwargs)

    def check_fields(self) -> None:
        """The shared checks, then RWKV6's: ``attn_mode``, head widths, the low ranks."""
        super().check_fields()
        check_choice(self, "attn_mode", RWKV6_MODES)
        check_linear_heads(self, self.expand_k, self.expand_v)
        check_positive_int(self, "proj_low_rank_dim")
        check_positive_int(self, "gate_low_rank_dim")


__all__ = ["RWKV6Config", "RWKV6_FFN_ACTS"]
