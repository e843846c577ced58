"""GSAConfig: Gated Slot Attention models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.gsa import GSA_FEATURE_MAPS
from fla.layers.linear_mixer import MODES
from fla.models.config_utils import FLAConfig, check_choice, check_linear_heads, check_positive_int


def resolve_expand(expand: float | None, misspelt: float | None) -> float | None:
    """fla 0.6.0's GSA / ABC constructors spell the widths ``exapnd_k`` / ``exapnd_v`` but store (and save)
    ``expand_k`` / ``expand_v``: either spelling is accepted here, the correct one wins."""
    return misspelt if expand is None else expand


class GSAConfig(FLAConfig):
    """Config of :class:`~fla.models.gsa.GSAForCausalLM` (``model_type = "gsa"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged; the shared ones
    (sizes, MLP, norms, fuse flags, tokens, ``attn``) are :class:`~fla.models.config_utils.FLAConfig`'s.
    Mixer: ``attn_mode`` (``"chunk"`` or ``"fused_recurrent"``; an addition: fla's config has no mode, its layer
    picks the op by length), ``expand_k`` / ``expand_v`` (widths per ``hidden_size``; fla's constructor names
    ``exapnd_k`` / ``exapnd_v`` are accepted too), ``num_heads``, ``num_kv_heads``, ``num_slots`` (``None``: the
    per-head key width), ``gate_logit_normalizer``, ``feature_map`` (``swish``, ``relu``, ``t2r``),
    ``use_short_conv`` / ``conv_size``, ``elementwise_affine`` and ``norm_eps`` (of the output norm).
    ``clamp_min``, ``clamp_max``, ``use_output_gate`` and ``use_norm`` are stored and passed on but unused (as in
    fla).
    """

    model_type = "gsa"

    def __init__(
        self,
        *,
        attn_mode: str = "chunk",
        gate_logit_normalizer: int | None = 8,
        clamp_min: float | None = None,
        clamp_max: float | None = None,
        num_heads: int = 4,
        num_kv_heads: int | None = None,
        num_slots: int | None = 64,
        use_short_conv: bool = False,
        conv_size: int = 4,
        expand_k: float | None = None,
        expand_v: float | None = None,
        exapnd_k: float = 1,
        exapnd_v: float = 1,
        feature_map: str = "swish",
        use_output_gate: bool = False,
        use_norm: bool = True,
        elementwise_affine: bool | None = True,
        **kwargs,
    ):
        fields = dict(locals())
        fields["expand_k"] = resolve_expand(expand_k, fields.pop("exapnd_k"))
        fields["expand_v"] = resolve_expand(expand_v, fields.pop("exapnd_v"))
        self.set_fields(fields)
        super().__init__(**kwargs)

    def check_fields(self) -> None:
        """The shared checks, then GSA's: head widths, ``num_slots``, ``feature_map``, ``conv_size``."""
        super().check_fields()
        check_choice(self, "attn_mode", MODES)
        check_linear_heads(self, self.expand_k, self.expand_v, self.num_kv_heads)
        check_positive_int(self, "num_slots", allow_none=True)
        check_choice(self, "feature_map", GSA_FEATURE_MAPS)
        g = self.gate_logit_normalizer
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not g > 0:
            raise ValueError(f"GSAConfig: gate_logit_normalizer={g!r} must be a positive number")
        if self.use_short_conv:
            check_positive_int(self, "conv_size")


__all__ = ["GSAConfig", "resolve_expand"]
