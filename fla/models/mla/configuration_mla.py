"""MLAConfig: multi-head latent attention (DeepSeek-V2 style), field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.models.config_utils import FLAConfig, check_positive_int


class MLAConfig(FLAConfig):
    """Config of :class:`~fla.models.mla.MLAForCausalLM` (``model_type = "mla"``).

    Field names and defaults are fla 0.6.0's; the shared ones are
    :class:`~fla.models.config_utils.FLAConfig`'s (no ``attn``: every layer is MLA). Attention:
    ``num_heads``; ``q_lora_rank`` (low-rank query projection, ``None``: a full one);
    ``kv_lora_rank`` (the compressed key/value latent the cache keeps); per-head widths
    ``qk_nope_head_dim``, ``qk_rope_head_dim`` (the decoupled RoPE part), ``v_head_dim`` and
    ``qk_head_dim`` (their q/k sum, checked); ``window_size`` (sliding window, ``None`` = full);
    ``rope_theta``; ``rope_scaling`` (transformers keeps it as ``rope_parameters``; as in fla 0.6.0 it
    changes nothing).
    ``elementwise_affine`` is stored but unused (as in fla's MLA).
    """

    model_type = "mla"
    hybrid_attn = False

    def __init__(
        self,
        *,
        num_heads: int = 16,
        q_lora_rank: int | None = 64,
        qk_rope_head_dim: int = 64,
        kv_lora_rank: int = 512,
        v_head_dim: int = 128,
        qk_nope_head_dim: int = 128,
        qk_head_dim: int | None = 192,
        window_size: int | None = None,
        rope_theta: float | None = 10000.0,
        rope_scaling: dict | None = None,
        elementwise_affine: bool | None = True,
        **kwargs,
    ):
        fields = dict(locals())
        # transformers keeps RoPE scaling as ``rope_parameters`` (``rope_scaling`` is its deprecated alias,
        # which warns when set): store it there directly, as the alias would
        self.rope_parameters = fields.pop("rope_scaling")
        self.set_fields(fields)
        super().__init__(**kwargs)

    def check_fields(self) -> None:
        """The shared checks, then MLA's: positive widths, an even RoPE width, ``qk_head_dim`` = nope + rope."""
        super().check_fields()
        name = type(self).__name__
        for field in ("num_heads", "kv_lora_rank", "v_head_dim", "qk_nope_head_dim", "qk_rope_head_dim"):
            check_positive_int(self, field)
        for field in ("q_lora_rank", "window_size", "qk_head_dim"):
            check_positive_int(self, field, allow_none=True)
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"{name}: qk_rope_head_dim={self.qk_rope_head_dim} must be even (RoPE rotates pairs)")
        nope, rope = self.qk_nope_head_dim, self.qk_rope_head_dim
        if self.qk_head_dim is not None and self.qk_head_dim != nope + rope:
            raise ValueError(
                f"{name}: qk_head_dim={self.qk_head_dim} != qk_nope_head_dim + qk_rope_head_dim = {nope} + {rope}"
            )
        theta = self.rope_theta
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 0:
            raise ValueError(f"{name}: rope_theta={theta!r} must be a positive number (MLA always applies RoPE)")


__all__ = ["MLAConfig"]
