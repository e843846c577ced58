"""HGRN2Config: HGRN2 models, field-compatible with fla 0.6.0."""

from __future__ import annotations

import logging

from fla.layers.hgrn2 import HGRN2_MODES, hgrn2_heads
from fla.models.config_utils import FLAConfig, check_choice, check_positive_int

logger = logging.getLogger(__name__)


class HGRN2Config(FLAConfig):
    """Config of :class:`~fla.models.hgrn2.HGRN2ForCausalLM` (``model_type = "hgrn2"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged; the shared ones
    (sizes, MLP, norms, fuse flags, tokens, ``attn``) are :class:`~fla.models.config_utils.FLAConfig`'s.
    Mixer: ``attn_mode`` (``"chunk"``; ``"fused_recurrent"``; ``"fused_chunk"`` runs the chunk op),
    ``expand_ratio`` (per-head key width, default 128) and ``num_heads`` (one is derived from the
    other as in fla: ``num_heads = hidden_size // expand_ratio`` or ``expand_ratio = hidden_size //
    num_heads``; when both are given the layers use ``expand_ratio``, as fla's do), ``use_short_conv``
    / ``conv_size``, ``use_lower_bound`` (a learned per-layer lower bound of the forget gates:
    ``model.lower_bounds [num_hidden_layers, hidden_size]``), ``elementwise_affine`` (of the output norm).

    Raises ``ValueError`` when neither ``num_heads`` nor ``expand_ratio`` is given, when the heads do
    not divide ``hidden_size``, or with ``use_lower_bound`` when ``expand_ratio`` does not (the bounds
    are ``hidden_size`` wide and must cover ``num_heads * expand_ratio`` gates).
    """

    model_type = "hgrn2"

    def __init__(
        self,
        *,
        attn_mode: str = "chunk",
        num_heads: int | None = None,
        expand_ratio: int | None = 128,
        use_short_conv: bool = False,
        conv_size: int = 4,
        use_lower_bound: bool = True,
        elementwise_affine: bool | None = True,
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(**kwargs)  # runs check_fields: derives the missing one of num_heads / expand_ratio
        heads = self.layer_heads
        if heads != self.num_heads:
            logger.warning(
                f"HGRN2Config: num_heads={self.num_heads} is not used: with expand_ratio={self.expand_ratio} the "
                f"layers have hidden_size // expand_ratio = {heads} heads (as in fla 0.6.0)"
            )

    def check_fields(self) -> None:
        """The shared checks, then HGRN2's: derive the missing one of ``num_heads`` / ``expand_ratio``
        (as fla does), the heads divide ``hidden_size``, the lower bounds cover the gates."""
        super().check_fields()
        check_choice(self, "attn_mode", HGRN2_MODES)
        hidden, num_heads, expand_ratio = self.hidden_size, self.num_heads, self.expand_ratio
        if expand_ratio is None and num_heads is not None:
            self.expand_ratio = hidden // num_heads if isinstance(num_heads, int) and num_heads > 0 else None
        elif expand_ratio is not None and num_heads is None:
            self.num_heads = hidden // expand_ratio if isinstance(expand_ratio, int) and expand_ratio > 0 else None
        heads, _ = hgrn2_heads(hidden, self.num_heads, self.expand_ratio, "HGRN2Config")
        if hidden % heads != 0:
            raise ValueError(f"HGRN2Config: hidden_size={hidden} is not a multiple of num_heads={heads}")
        if self.use_lower_bound and hidden % self.expand_ratio != 0:
            raise ValueError(
                f"HGRN2Config: use_lower_bound=true needs hidden_size={hidden} to be a multiple of "
                f"expand_ratio={self.expand_ratio} (the lower bounds are hidden_size wide)"
            )
        if self.use_short_conv:
            check_positive_int(self, "conv_size")

    @property
    def layer_heads(self) -> int:
        """Heads of the HGRN2 layers (``hidden_size // expand_ratio``)."""
        return hgrn2_heads(self.hidden_size, self.num_heads, self.expand_ratio)[0]


__all__ = ["HGRN2Config"]
