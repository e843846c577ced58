"""NSAConfig: native sparse attention (RoPE, GQA, SwiGLU), field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.models.config_utils import FLAConfig, check_positive_int


class NSAConfig(FLAConfig):
    """Config of :class:`~fla.models.nsa.NSAForCausalLM` (``model_type = "nsa"``).

    Field names and defaults are fla 0.6.0's; the shared ones are :class:`~fla.models.config_utils.FLAConfig`'s
    (no ``attn``: every layer is NSA). Attention: ``num_heads``, ``num_kv_heads`` (GQA), ``head_dim``,
    ``qkv_bias``, ``block_size`` (tokens per compressed / selected block), ``block_counts`` (blocks each query
    selects), ``window_size`` (sliding-window branch, ``0`` / ``None``: off), ``rope_theta``.
    ``elementwise_affine`` is stored but unused (as in fla).
    """

    model_type = "nsa"
    hybrid_attn = False

    def __init__(
        self,
        *,
        num_heads: int = 64,
        num_kv_heads: int = 4,
        head_dim: int = 32,
        qkv_bias: bool = False,
        block_size: int = 64,
        block_counts: int | None = 16,
        window_size: int | None = 512,
        rope_theta: float | None = 10000.0,
        elementwise_affine: bool | None = True,
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(**kwargs)

    def check_fields(self) -> None:
        """The shared checks, then NSA's: positive sizes, ``num_kv_heads | num_heads``, a non-negative window."""
        super().check_fields()
        name = type(self).__name__
        for field in ("num_heads", "num_kv_heads", "head_dim", "block_size", "block_counts"):
            check_positive_int(self, field)
        window = self.window_size
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 0):
            raise ValueError(f"{name}: window_size={window!r} must be a non-negative integer or null")
        heads, kv_heads = self.num_heads, self.num_kv_heads
        if heads % kv_heads != 0:
            raise ValueError(f"{name}: num_heads={heads} is not a multiple of num_kv_heads={kv_heads}")
        theta = self.rope_theta
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 0:
            raise ValueError(f"{name}: rope_theta={theta!r} must be a positive number (NSA always applies RoPE)")


__all__ = ["NSAConfig"]
