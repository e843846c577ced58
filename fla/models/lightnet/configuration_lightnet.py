"""LightNetConfig: LightNet models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.lightnet import LIGHTNET_MODES, lightnet_heads
from fla.models.config_utils import FLAConfig, check_choice, check_positive_int


class LightNetConfig(FLAConfig):
    """Config of :class:`~fla.models.lightnet.LightNetForCausalLM` (``model_type = "lightnet"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged; the shared ones
    (sizes, MLP, norms, fuse flags, tokens, ``attn``) are :class:`~fla.models.config_utils.FLAConfig`'s.
    Mixer: ``attn_mode`` (``"chunk"`` or ``"fused_recurrent"``), ``expand_ratio`` (per-head key width,
    default 128) and ``num_heads`` (the missing one is derived as in fla: ``num_heads = hidden_size //
    expand_ratio`` or ``expand_ratio = hidden_size // num_heads``; both given are used as they are),
    ``use_short_conv`` / ``conv_size``, ``gate_low_rank_dim`` (rank of the output gate) and
    ``elementwise_affine`` (of the output norm).

    Raises ``ValueError`` when neither ``num_heads`` nor ``expand_ratio`` is given or the heads do not
    divide ``hidden_size``.
    """

    model_type = "lightnet"

    def __init__(
        self,
        *,
        attn_mode: str = "chunk",
        num_heads: int | None = None,
        expand_ratio: int | None = 128,
        use_short_conv: bool = False,
        conv_size: int = 4,
        gate_low_rank_dim: int = 128,
        elementwise_affine: bool | None = True,
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(**kwargs)  # runs check_fields: derives the missing one of num_heads / expand_ratio

    def check_fields(self) -> None:
        """The shared checks, then LightNet's: ``attn_mode``, derive the missing one of ``num_heads`` /
        ``expand_ratio`` (as fla does), the heads divide ``hidden_size``, positive ``gate_low_rank_dim``."""
        super().check_fields()
        check_choice(self, "attn_mode", LIGHTNET_MODES)
        self.num_heads, self.expand_ratio = lightnet_heads(
            self.hidden_size, self.num_heads, self.expand_ratio, "LightNetConfig"
        )
        check_positive_int(self, "gate_low_rank_dim")
        if self.use_short_conv:
            check_positive_int(self, "conv_size")


__all__ = ["LightNetConfig"]
