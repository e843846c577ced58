"""MesaNetConfig: MesaNet models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.mesa_net import LAMBDA_INIT, MESA_MODES
from fla.models.config_utils import FLAConfig, check_choice, check_positive_int


class MesaNetConfig(FLAConfig):
    """Config of :class:`~fla.models.mesa_net.MesaNetForCausalLM` (``model_type = "mesa_net"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged; the shared ones (sizes, MLP,
    norms, fuse flags, tokens, ``attn``) are :class:`~fla.models.config_utils.FLAConfig`'s. Mixer (see
    :class:`fla.layers.MesaNet`): ``attn_mode`` (``"chunk"``), ``num_heads``, ``head_dim`` (key and value head
    size), ``use_output_gate``, ``use_short_conv`` (accepted; the q / k convolutions are always there),
    ``conv_size``, ``lambda_lower_bound``, ``max_cg_step_training`` / ``max_cg_step_decoding`` (CG steps).
    """

    model_type = "mesa_net"

    def __init__(
        self,
        *,
        attn_mode: str = "chunk",
        use_output_gate: bool = False,
        use_short_conv: bool = True,
        conv_size: int = 4,
        num_heads: int = 16,
        head_dim: int = 128,
        lambda_lower_bound: float = 0.25,
        max_cg_step_training: int = 30,
        max_cg_step_decoding: int = 30,
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(**kwargs)

    def check_fields(self) -> None:
        """The shared checks, then MesaNet's: ``attn_mode``, head sizes, CG steps, ``lambda_lower_bound``."""
        super().check_fields()
        check_choice(self, "attn_mode", MESA_MODES)
        check_positive_int(self, "num_heads")
        check_positive_int(self, "head_dim")
        check_positive_int(self, "conv_size")
        for name in ("max_cg_step_training", "max_cg_step_decoding"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"MesaNetConfig: {name}={value!r} must be an int >= 0")
        bound = self.lambda_lower_bound
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not 0 <= bound < LAMBDA_INIT:
            raise ValueError(f"MesaNetConfig: lambda_lower_bound={bound!r} must be a number in [0, {LAMBDA_INIT})")


__all__ = ["MesaNetConfig"]
