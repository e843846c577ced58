"""ABCConfig: ABC models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.linear_mixer import MODES
from fla.models.config_utils import FLAConfig, check_choice, check_linear_heads, check_positive_int
from fla.models.gsa.configuration_gsa import resolve_expand


class ABCConfig(FLAConfig):
    """Config of :class:`~fla.models.abc.ABCForCausalLM` (``model_type = "abc"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged; the shared ones
    (sizes, MLP, norms, fuse flags, tokens, ``attn``) are :class:`~fla.models.config_utils.FLAConfig`'s.
    Mixer: ``attn_mode`` (``"chunk"`` or ``"fused_recurrent"``; an addition: fla's config has no mode, its layer
    always runs the chunk op), ``expand_k`` / ``expand_v`` (widths per ``hidden_size``; fla's constructor names
    ``exapnd_k`` / ``exapnd_v`` are accepted too), ``num_heads``, ``num_slots`` (``None``: the per-head key
    width), ``clamp_min`` / ``clamp_max`` (bounds of the slot logits), ``use_rope``, ``use_short_conv`` /
    ``conv_size``, ``elementwise_affine`` (of the output norm). ``gate_low_rank_dim`` is stored but unused (as in
    fla).
    """

    model_type = "abc"

    def __init__(
        self,
        *,
        attn_mode: str = "chunk",
        gate_low_rank_dim: int = 16,
        clamp_min: float | None = -32,
        clamp_max: float | None = 32,
        num_heads: int = 4,
        num_slots: int | None = 64,
        use_short_conv: bool = False,
        conv_size: int = 4,
        expand_k: float | None = None,
        expand_v: float | None = None,
        exapnd_k: float = 0.5,
        exapnd_v: float = 1,
        elementwise_affine: bool | None = True,
        use_rope: bool = True,
        **kwargs,
    ):
        fields = dict(locals())
        fields["expand_k"] = resolve_expand(expand_k, fields.pop("exapnd_k"))
        fields["expand_v"] = resolve_expand(expand_v, fields.pop("exapnd_v"))
        self.set_fields(fields)
        super().__init__(**kwargs)

    def check_fields(self) -> None:
        """The shared checks, then ABC's: head widths, ``num_slots``, the clamp bounds, ``conv_size``."""
        super().check_fields()
        check_choice(self, "attn_mode", MODES)
        check_linear_heads(self, self.expand_k, self.expand_v)
        check_positive_int(self, "num_slots", allow_none=True)
        lo, hi = self.clamp_min, self.clamp_max
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"ABCConfig: clamp_min={lo!r} is larger than clamp_max={hi!r}")
        if self.use_short_conv:
            check_positive_int(self, "conv_size")


__all__ = ["ABCConfig"]
