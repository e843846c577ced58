"""HGRNConfig: HGRN models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.hgrn import HGRN_MODES, hgrn_input_dim
from fla.models.config_utils import FLAConfig, check_choice, check_positive_int


class HGRNConfig(FLAConfig):
    """Config of :class:`~fla.models.hgrn.HGRNForCausalLM` (``model_type = "hgrn"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged; the shared ones
    (sizes, MLP, norms, fuse flags, tokens, ``attn``) are :class:`~fla.models.config_utils.FLAConfig`'s.
    Mixer: ``attn_mode`` (``"fused_recurrent"``, fla's default, or ``"chunk"``; training runs the chunk op
    either way), ``expand_ratio`` (recurrence width ``hidden_size * expand_ratio``, default 1),
    ``use_short_conv`` / ``conv_size``, ``use_lower_bound`` (learned per-layer lower bounds of the forget
    gates: ``model.lower_bounds [num_hidden_layers, hidden_size * expand_ratio]``), ``elementwise_affine``
    (of the output norm).

    Raises ``ValueError`` for an unknown ``attn_mode``, an ``expand_ratio`` that leaves no features, or a
    non-positive ``conv_size`` with ``use_short_conv``.
    """

    model_type = "hgrn"

    def __init__(
        self,
        *,
        attn_mode: str = "fused_recurrent",
        expand_ratio: int | None = 1,
        use_short_conv: bool = False,
        conv_size: int = 4,
        use_lower_bound: bool = True,
        elementwise_affine: bool | None = True,
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(**kwargs)

    def check_fields(self) -> None:
        """The shared checks, then HGRN's: the mode, a positive recurrence width, the conv size."""
        super().check_fields()
        check_choice(self, "attn_mode", HGRN_MODES)
        hgrn_input_dim(self.hidden_size, self.expand_ratio, "HGRNConfig")
        if self.use_short_conv:
            check_positive_int(self, "conv_size")

    @property
    def input_dim(self) -> int:
        """Width of the recurrence (``int(hidden_size * expand_ratio)``)."""
        return hgrn_input_dim(self.hidden_size, self.expand_ratio, "HGRNConfig")


__all__ = ["HGRNConfig"]
