"""GatedDeltaNetConfig: Gated DeltaNet models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.delta_net import DELTA_MODES
from fla.layers.gated_deltanet import GATE_ACTIVATIONS
from fla.models.config_utils import FLAConfig, check_choice, check_positive_int


class GatedDeltaNetConfig(FLAConfig):
    """Config of :class:`~fla.models.gated_deltanet.GatedDeltaNetForCausalLM` (``model_type = "gated_deltanet"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged; the shared ones
    (sizes, MLP, norms, fuse flags, tokens, ``attn``) are :class:`~fla.models.config_utils.FLAConfig`'s,
    with Gated DeltaNet's own default ``num_hidden_layers=21``. Mixer (see
    :class:`fla.layers.GatedDeltaNet`): ``attn_mode`` (``"chunk"`` or ``"fused_recurrent"``),
    ``head_dim`` (q / k head size), ``num_heads``, ``num_v_heads`` (value heads, a multiple of
    ``num_heads``; default ``num_heads``), ``expand_v`` (value head size per ``head_dim``),
    ``use_gate`` / ``output_gate_activation`` (gated output norm), ``use_short_conv`` /
    ``conv_size``, ``allow_neg_eigval``.
    """

    model_type = "gated_deltanet"

    def __init__(
        self,
        *,
        attn_mode: str = "chunk",
        expand_v: float = 2.0,
        use_gate: bool = True,
        use_short_conv: bool = True,
        allow_neg_eigval: bool = False,
        conv_size: int = 4,
        head_dim: int = 256,
        num_heads: int = 6,
        num_v_heads: int | None = None,
        num_hidden_layers: int = 21,
        output_gate_activation: str = "swish",
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(num_hidden_layers=num_hidden_layers, **kwargs)

    def check_fields(self) -> None:
        """The shared checks, then Gated DeltaNet's: ``attn_mode``, head counts and sizes, the gate activation."""
        super().check_fields()
        check_choice(self, "attn_mode", DELTA_MODES)
        check_choice(self, "output_gate_activation", GATE_ACTIVATIONS)
        check_positive_int(self, "num_heads")
        check_positive_int(self, "head_dim")
        check_positive_int(self, "num_v_heads", allow_none=True)
        num_v_heads = self.num_heads if self.num_v_heads is None else self.num_v_heads
        if num_v_heads % self.num_heads != 0:
            raise ValueError(
                f"GatedDeltaNetConfig: num_v_heads={num_v_heads} is not a multiple of num_heads={self.num_heads}"
            )
        expand = self.expand_v
        if isinstance(expand, bool) or not isinstance(expand, (int, float)) or not expand > 0:
            raise ValueError(f"GatedDeltaNetConfig: expand_v={expand!r} must be a positive number")
        head_v_dim = self.head_dim * expand
        if abs(head_v_dim - round(head_v_dim)) > 1e-6:
            raise ValueError(
                f"GatedDeltaNetConfig: head_dim * expand_v = {self.head_dim} * {expand} is not an integer "
                f"(the value head size, {head_v_dim})"
            )
        if self.use_short_conv:
            check_positive_int(self, "conv_size")


__all__ = ["GatedDeltaNetConfig"]
