"""CombaConfig: Comba models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.delta_net import DELTA_MODES
from fla.models.config_utils import FLAConfig, check_choice, check_positive_int


def check_delta_heads(config, name: str) -> None:
    """``num_heads``, ``head_dim`` positive; ``num_v_heads`` a multiple of ``num_heads`` (or ``None``);
    ``head_dim * expand_v`` a positive integer (the value head size). Errors name ``name`` and the field."""
    check_positive_int(config, "num_heads")
    check_positive_int(config, "head_dim")
    num_v_heads = getattr(config, "num_v_heads", None)  # None: as many as num_heads (or no such field)
    if num_v_heads is not None:
        check_positive_int(config, "num_v_heads")
    num_v_heads = config.num_heads if num_v_heads is None else num_v_heads
    if num_v_heads % config.num_heads != 0:
        raise ValueError(f"{name}: num_v_heads={num_v_heads} is not a multiple of num_heads={config.num_heads}")
    expand = config.expand_v
    if isinstance(expand, bool) or not isinstance(expand, (int, float)) or not expand > 0:
        raise ValueError(f"{name}: expand_v={expand!r} must be a positive number")
    head_v_dim = config.head_dim * expand
    if abs(head_v_dim - round(head_v_dim)) > 1e-6:
        raise ValueError(
            f"{name}: head_dim * expand_v = {config.head_dim} * {expand} is not an integer (the value head size, "
            f"{head_v_dim})"
        )
    if config.use_short_conv:
        check_positive_int(config, "conv_size")


class CombaConfig(FLAConfig):
    """Config of :class:`~fla.models.comba.CombaForCausalLM` (``model_type = "comba"``).

    fla 0.6.0's field names and defaults (shared ones from :class:`~fla.models.config_utils.FLAConfig`, with
    ``num_hidden_layers=21``). Mixer (see :class:`fla.layers.Comba`): ``attn_mode``, ``head_dim``, ``num_heads``,
    ``num_v_heads`` (default ``num_heads``), ``expand_v``, ``use_output_gate``, ``use_short_conv`` /
    ``conv_size``, ``use_output_correction`` / ``correction_factor`` (``q - D p``), ``use_inner_decay``
    (``p = k sigmoid(decay)``). fla 0.6.0's model builds every layer with the last three at their defaults
    whatever the config says; here the config's values are used.
    """

    model_type = "comba"

    def __init__(
        self,
        *,
        attn_mode: str = "chunk",
        conv_size: int = 4,
        head_dim: int = 256,
        num_heads: int = 6,
        num_v_heads: int | None = None,
        expand_v: float = 2.0,
        use_output_gate: bool = True,
        use_short_conv: bool = True,
        use_output_correction: bool = True,
        use_inner_decay: bool = True,
        correction_factor: float = 1.0,
        num_hidden_layers: int = 21,
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(num_hidden_layers=num_hidden_layers, **kwargs)

    def check_fields(self) -> None:
        """The shared checks, then Comba's: ``attn_mode``, head counts and sizes."""
        super().check_fields()
        check_choice(self, "attn_mode", DELTA_MODES)
        check_delta_heads(self, "CombaConfig")


__all__ = ["CombaConfig", "check_delta_heads"]
