"""GLAConfig: Gated Linear Attention models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.linear_mixer import MODES
from fla.models.config_utils import FLAConfig, check_choice, check_feature_map, check_linear_heads


class GLAConfig(FLAConfig):
    """Config of :class:`~fla.models.gla.GLAForCausalLM` (``model_type = "gla"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged; the shared ones
    (sizes, MLP, norms, fuse flags, tokens, ``attn``) are :class:`~fla.models.config_utils.FLAConfig`'s.
    Mixer: ``attn_mode`` (``"chunk"``; ``"fused_recurrent"``; ``"fused_chunk"`` runs the chunk op),
    ``expand_k`` / ``expand_v`` (key / value widths per ``hidden_size``), ``num_heads``,
    ``num_kv_heads``, ``feature_map``, ``use_short_conv`` / ``conv_size``, ``use_output_gate``,
    ``clamp_min`` (lower bound of the log decays), ``elementwise_affine`` (of the output norm).
    ``hidden_act`` is both the MLP activation and the output-gate activation (as in fla).
    ``use_gk`` / ``use_gv`` are stored but unused (as in fla).
    """

    model_type = "gla"

    def __init__(
        self,
        *,
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        num_heads: int = 4,
        num_kv_heads: int | None = None,
        feature_map: str | None = None,
        attn_mode: str = "chunk",
        use_short_conv: bool = False,
        conv_size: int = 4,
        use_output_gate: bool = True,
        clamp_min: float | None = None,
        elementwise_affine: bool | None = True,
        use_gk: bool = True,
        use_gv: bool = False,
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(**kwargs)

    def check_fields(self) -> None:
        """The shared checks, then GLA's: ``attn_mode``, head widths, ``feature_map``, ``conv_size``."""
        super().check_fields()
        check_choice(self, "attn_mode", MODES)
        check_linear_heads(self, self.expand_k, self.expand_v, self.num_kv_heads)
        check_feature_map(self)


__all__ = ["GLAConfig"]
