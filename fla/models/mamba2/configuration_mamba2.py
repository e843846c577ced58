"""Mamba2Config: Mamba2 models, field-compatible with fla 0.6.0 (whose config files load unchanged)."""

from __future__ import annotations

import math

from fla.layers.mamba2 import mamba2_dims
from fla.models.config_utils import FLAConfig, check_positive_int


def _pair(config, name: str) -> list[float]:
    """``config.<name>`` as a ``[low, high]`` list of numbers (JSON keeps lists; a tuple would not round-trip)."""
    value = getattr(config, name)
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok or not value[0] <= value[1]:
        raise ValueError(f"{type(config).__name__}: {name}={value!r} must be a [low, high] pair with low <= high")
    return [float(v) for v in value]


class Mamba2Config(FLAConfig):
    """Config of :class:`~fla.models.mamba2.Mamba2ForCausalLM` (``model_type = "mamba2"``).

    Field names and defaults are fla 0.6.0's: ``hidden_size`` (2048), ``num_hidden_layers`` (48),
    ``head_dim`` (64), ``state_size`` (128), ``expand`` (2; ``num_heads = expand * hidden_size / head_dim``,
    derived when not given), ``n_groups`` (1), ``conv_kernel`` (4), ``use_conv_bias``, ``conv_init``,
    ``use_bias``, ``A_init_range``, ``D_has_hdim``, ``hidden_act`` (``"silu"``: the conv and, without
    ``rmsnorm``, the output gate), ``rmsnorm`` / ``norm_before_gate`` (the gated output norm), ``dt_min``,
    ``dt_max``, ``dt_init_floor``, ``dt_limit``, ``residual_in_fp32``, ``rescale_prenorm_residual``,
    ``chunk_size`` (accepted; the kernels use their own), ``norm_eps`` (1e-5), ``pad_token_id`` (0). The
    blocks have no MLP and no hybrid attention (the shared MLP fields are unused). Pairs are stored as lists.
    """

    model_type = "mamba2"
    hybrid_attn = False  # fla 0.6.0's Mamba2 has no softmax-attention layers

    def __init__(
        self,
        *,
        head_dim: int = 64,
        vocab_size: int = 32000,
        hidden_size: int = 2048,
        state_size: int = 128,
        num_hidden_layers: int = 48,
        norm_eps: float = 1e-5,
        pad_token_id: int = 0,
        expand: int = 2,
        conv_kernel: int = 4,
        n_groups: int = 1,
        use_bias: bool = False,
        use_conv_bias: bool = True,
        conv_init: float | None = None,
        A_init_range: tuple[float, float] = (1, 16),
        D_has_hdim: bool = False,
        hidden_act: str = "silu",
        residual_in_fp32: bool = True,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit: tuple[float, float] = (0.0, math.inf),
        rescale_prenorm_residual: bool = True,
        rmsnorm: bool = True,
        norm_before_gate: bool = False,
        chunk_size: int = 256,
        num_heads: int | None = None,
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(
            vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers, norm_eps=norm_eps,
            pad_token_id=pad_token_id, hidden_act=hidden_act, **kwargs,
        )  # fmt: skip

    def check_fields(self) -> None:
        """The shared checks, then Mamba2's: sizes that divide into heads and groups, the init ranges."""
        super().check_fields()
        for name in ("head_dim", "state_size", "expand", "n_groups", "conv_kernel"):
            check_positive_int(self, name)
        self.num_heads = mamba2_dims(self.hidden_size, self.expand, self.head_dim, self.num_heads, self.n_groups)
        self.A_init_range = _pair(self, "A_init_range")
        self.dt_limit = _pair(self, "dt_limit")
        if self.A_init_range[0] <= 0:
            raise ValueError(f"Mamba2Config: A_init_range={self.A_init_range} must be positive")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(
                f"Mamba2Config: dt_min={self.dt_min}, dt_max={self.dt_max} must satisfy 0 < dt_min <= dt_max"
            )
        if not self.dt_init_floor > 0:
            raise ValueError(f"Mamba2Config: dt_init_floor={self.dt_init_floor} must be > 0")


__all__ = ["Mamba2Config"]
