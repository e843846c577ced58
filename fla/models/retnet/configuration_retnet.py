"""RetNetConfig: RetNet models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.linear_mixer import MODES
from fla.layers.multiscale_retention import MAX_HEAD_K_DIM
from fla.models.config_utils import FLAConfig, check_choice, check_feature_map, check_linear_heads


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

    def check_fields(self) -> None:
        """The shared checks, then RetNet's: ``attn_mode``, head widths (key heads of at most 256), ``feature_map``."""
        super().check_fields()
        check_choice(self, "attn_mode", MODES)
        head_k_dim, _ = check_linear_heads(self, self.expand_k, self.expand_v, self.num_kv_heads)
        if head_k_dim > MAX_HEAD_K_DIM:
            raise ValueError(
                f"RetNetConfig: the key head size hidden_size * expand_k / num_heads = {self.hidden_size} * "
                f"{self.expand_k} / {self.num_heads} = {head_k_dim} exceeds {MAX_HEAD_K_DIM}"
            )
        check_feature_map(self)


__all__ = ["RetNetConfig"]
