"""DeltaNetConfig: DeltaNet models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.delta_net import DELTA_MODES, QK_ACTIVATIONS, QK_NORMS
from fla.models.config_utils import FLAConfig, check_choice, check_linear_heads, check_positive_int


class DeltaNetConfig(FLAConfig):
    """Config of :class:`~fla.models.delta_net.DeltaNetForCausalLM` (``model_type = "delta_net"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged; the shared ones
    (sizes, MLP, norms, fuse flags, tokens, ``attn``) are :class:`~fla.models.config_utils.FLAConfig`'s.
    Mixer (see :class:`fla.layers.DeltaNet`): ``attn_mode`` (``"chunk"`` or ``"fused_recurrent"``),
    ``expand_k`` / ``expand_v`` (key / value widths per ``hidden_size``), ``num_heads``,
    ``use_beta``, ``use_gate`` (gated output norm), ``use_short_conv`` / ``conv_size``,
    ``allow_neg_eigval``, ``qk_activation`` (``silu`` / ``relu`` / ``elu`` / ``identity``),
    ``qk_norm`` (``l2`` / ``sum``). ``use_output_norm`` is stored but unused (as in fla 0.6.0: the
    output norm is always there).
    """

    model_type = "delta_net"

    def __init__(
        self,
        *,
        attn_mode: str = "chunk",
        expand_k: float = 1.0,
        expand_v: float = 1.0,
        use_gate: bool = False,
        use_short_conv: bool = True,
        allow_neg_eigval: bool = False,
        conv_size: int = 4,
        use_beta: bool = True,
        use_output_norm: bool = True,
        num_heads: int = 16,
        qk_norm: str = "l2",
        qk_activation: str = "silu",
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(**kwargs)

    def check_fields(self) -> None:
        """The shared checks, then DeltaNet's: ``attn_mode``, head widths, qk activation and norm, ``conv_size``."""
        super().check_fields()
        check_choice(self, "attn_mode", DELTA_MODES)
        check_linear_heads(self, self.expand_k, self.expand_v)
        check_choice(self, "qk_activation", QK_ACTIVATIONS)
        check_choice(self, "qk_norm", QK_NORMS)
        if self.use_short_conv:
            check_positive_int(self, "conv_size")


__all__ = ["DeltaNetConfig"]
