"""MambaConfig: Mamba (v1) models, field-compatible with fla 0.6.0 (``model_type = "mamba"``)."""

from __future__ import annotations

from fla.layers.mamba import DT_INITS, check_mamba_sizes, mamba_dt_rank
from fla.models.config_utils import FLAConfig, check_choice


def inner_size(config, expand, intermediate_size) -> int:
    """``intermediate_size`` when given (fla lets an explicit value override), else ``int(expand * hidden_size)``."""
    if intermediate_size is not None:
        return intermediate_size
    if isinstance(expand, bool) or not isinstance(expand, (int, float)) or expand <= 0:
        raise ValueError(f"{type(config).__name__}: expand={expand!r} must be a positive number")
    return int(expand * config.hidden_size)


class MambaConfig(FLAConfig):
    """Config of :class:`~fla.models.mamba.MambaForCausalLM`.

    fla 0.6.0's fields and defaults: ``state_size`` (``Ds``, at most 64 here), ``expand`` (``intermediate_size =
    int(expand * hidden_size)`` unless given), ``conv_kernel``, ``use_bias`` (in/out projections),
    ``use_conv_bias``, ``hidden_act`` (the conv activation, ``"silu"``), ``residual_in_fp32``, ``dt_rank``
    (``"auto"`` = ``ceil(hidden_size / 16)``, stored resolved), ``dt_scale`` / ``dt_min`` / ``dt_max`` /
    ``dt_init_scheme`` / ``dt_init_floor`` (the step-size init), ``rescale_prenorm_residual`` (``out_proj``
    scaled by ``1 / sqrt(num_hidden_layers)`` at init). Mamba blocks have no MLP and no hybrid ``attn`` layers.

    Raises ``ValueError`` naming the field for sizes the model cannot build.
    """

    model_type = "mamba"
    hybrid_attn = False

    def __init__(
        self,
        *,
        state_size: int = 16,
        expand: int = 2,
        conv_kernel: int = 4,
        use_bias: bool = False,
        use_conv_bias: bool = True,
        residual_in_fp32: bool = False,
        dt_rank: str | int = "auto",
        dt_scale: float = 1.0,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_scheme: str = "random",
        dt_init_floor: float = 1e-4,
        rescale_prenorm_residual: bool = False,
        hidden_size: int = 2048,
        num_hidden_layers: int = 48,
        norm_eps: float = 1e-5,
        pad_token_id: int | None = 0,
        hidden_act: str = "silu",
        intermediate_size: int | None = None,
        **kwargs,
    ):
        self.set_fields(locals())
        self.dt_rank = mamba_dt_rank(hidden_size, dt_rank)
        super().__init__(
            hidden_size=hidden_size,
            num_hidden_layers=num_hidden_layers,
            norm_eps=norm_eps,
            pad_token_id=pad_token_id,
            hidden_act=hidden_act,
            intermediate_size=inner_size(self, expand, intermediate_size),
            **kwargs,
        )

    def check_fields(self) -> None:
        """The shared checks, then the SSM's sizes, the conv activation and the dt init scheme."""
        super().check_fields()
        check_mamba_sizes(
            type(self).__name__, self.state_size, self.conv_kernel, self.intermediate_size, self.hidden_act
        )
        check_choice(self, "dt_init_scheme", DT_INITS)


__all__ = ["MambaConfig"]
