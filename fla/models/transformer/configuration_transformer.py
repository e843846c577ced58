"""TransformerConfig: Transformer++ (RMSNorm, RoPE, SwiGLU, GQA), field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.models.config_utils import FLAConfig


class TransformerConfig(FLAConfig):
    """Config of :class:`~fla.models.transformer.TransformerForCausalLM` (``model_type = "transformer"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged; the shared ones
    (sizes, MLP, norms, fuse flags, tokens) are :class:`~fla.models.config_utils.FLAConfig`'s (no
    ``attn``: every layer is attention). Attention: ``num_heads``, ``num_kv_heads`` (GQA; default
    ``num_heads``), ``qkv_bias``, ``qk_norm``, ``window_size`` (sliding window, ``None`` = full),
    ``rope_theta`` (``None`` = no RoPE). ``elementwise_affine`` is stored but unused (as in fla's
    Transformer).
    """

    model_type = "transformer"
    hybrid_attn = False

    def __init__(
        self,
        *,
        num_heads: int = 32,
        num_kv_heads: int | None = None,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        window_size: int | None = None,
        rope_theta: float | None = 10000.0,
        elementwise_affine: bool | None = True,
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(**kwargs)
        if self.hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size={self.hidden_size} is not a multiple of num_heads={num_heads}")
        if num_kv_heads is not None and (num_kv_heads <= 0 or num_heads % num_kv_heads != 0):
            raise ValueError(f"num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}")
        if window_size is not None and (isinstance(window_size, bool) or window_size <= 0):
            raise ValueError(f"window_size must be a positive integer or null, got {window_size!r}")


__all__ = ["TransformerConfig"]
