"""RetNetConfig: RetNet models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.models.config_utils import FLAConfig


class RetNetConfig(FLAConfig):
    """Config of :class:`~fla.models.retnet.RetNetForCausalLM` (``model_type = "retnet"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged; the shared ones
    (sizes, MLP, norms, fuse flags, tokens, ``attn``) are :class:`~fla.models.config_utils.FLAConfig`'s,
    with RetNet's own default ``hidden_ratio=2``. Mixer: ``attn_mode`` (``"chunk"``;
    ``"fused_recurrent"``; ``"fused_chunk"`` / ``"parallel"`` run the chunk op), ``expand_k`` /
    ``expand_v``, ``num_heads``, ``num_kv_heads``, ``feature_map``, ``use_output_gate``,
    ``elementwise_affine``. ``hidden_act`` is both the MLP activation and the output-gate activation.
    ``use_short_conv`` / ``conv_size`` are stored but, as in fla 0.6.0's RetNet, not used: its
    retention layers have no short convolutions, and neither do these (same checkpoints).
    """

    model_type = "retnet"

    def __init__(
        self,
        *,
        attn_mode: str = "chunk",
        expand_k: float = 1.0,
        expand_v: float = 2.0,
        hidden_ratio: int | None = 2,
        num_heads: int = 8,
        num_kv_heads: int | None = None,
        feature_map: str | None = None,
        use_short_conv: bool = False,
        conv_size: int = 4,
        use_output_gate: bool = True,
        elementwise_affine: bool | None = True,
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(hidden_ratio=hidden_ratio, **kwargs)


__all__ = ["RetNetConfig"]
