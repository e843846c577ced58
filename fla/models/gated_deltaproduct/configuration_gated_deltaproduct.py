"""GatedDeltaProductConfig: Gated DeltaProduct models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.delta_net import DELTA_MODES
from fla.models.comba.configuration_comba import check_delta_heads
from fla.models.config_utils import FLAConfig, check_choice, check_positive_int


class GatedDeltaProductConfig(FLAConfig):
    """Config of :class:`~fla.models.gated_deltaproduct.GatedDeltaProductForCausalLM`
    (``model_type = "gated_deltaproduct"``).

    fla 0.6.0's field names and defaults (shared ones from :class:`~fla.models.config_utils.FLAConfig`, with
    ``num_hidden_layers=21``). Mixer (see :class:`fla.layers.GatedDeltaProduct`): ``attn_mode``, ``head_dim``,
    ``num_heads``, ``expand_v``, ``use_output_gate``, ``use_short_conv`` / ``conv_size``, ``use_forget_gate``
    (default off, as in fla 0.6.0's config), ``allow_neg_eigval``, ``num_householder``. There is no
    ``num_v_heads`` field (fla 0.6.0's model has none): value heads equal ``num_heads``.
    """

    model_type = "gated_deltaproduct"

    def __init__(
        self,
        *,
        attn_mode: str = "chunk",
        conv_size: int = 4,
        head_dim: int = 256,
        num_heads: int = 6,
        expand_v: float = 2.0,
        use_output_gate: bool = True,
        use_short_conv: bool = True,
        num_hidden_layers: int = 21,
        use_forget_gate: bool = False,
        allow_neg_eigval: bool = False,
        num_householder: int = 1,
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(num_hidden_layers=num_hidden_layers, **kwargs)

    def check_fields(self) -> None:
        """The shared checks, then Gated DeltaProduct's: ``attn_mode``, head sizes, ``num_householder``."""
        super().check_fields()
        check_choice(self, "attn_mode", DELTA_MODES)
        check_delta_heads(self, "GatedDeltaProductConfig")
        check_positive_int(self, "num_householder")


__all__ = ["GatedDeltaProductConfig"]
