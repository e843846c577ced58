"""KDAConfig: Kimi Delta Attention models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.delta_net import DELTA_MODES
from fla.models.config_utils import FLAConfig, check_choice, check_positive_int


class KDAConfig(FLAConfig):
    """Config of :class:`~fla.models.kda.KDAForCausalLM` (``model_type = "kda"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged; the shared ones
    (sizes, MLP, norms, fuse flags, tokens, ``attn``) are :class:`~fla.models.config_utils.FLAConfig`'s,
    with KDA's own default ``num_hidden_layers=24``. Mixer (see :class:`fla.layers.KimiDeltaAttention`):
    ``attn_mode`` (``"chunk"`` or ``"fused_recurrent"``), ``head_dim`` (q / k head size), ``num_heads``,
    ``num_v_heads`` (value heads, a multiple of ``num_heads``; default ``num_heads``), ``expand_v`` (value
    head size per ``head_dim``), ``use_short_conv`` / ``conv_size``, ``allow_neg_eigval``, ``safe_gate`` /
    ``lower_bound`` (the bounded sigmoid gate; ``safe_gate`` needs ``lower_bound``).
    """

    model_type = "kda"

    def __init__(
        self,
        *,
        attn_mode: str = "chunk",
        expand_v: float = 1.0,
        use_short_conv: bool = True,
        allow_neg_eigval: bool = False,
        safe_gate: bool = False,
        lower_bound: float | None = None,
        conv_size: int = 4,
        head_dim: int = 128,
        num_heads: int = 16,
        num_v_heads: int | None = None,
        num_hidden_layers: int = 24,
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(num_hidden_layers=num_hidden_layers, **kwargs)

    def check_fields(self) -> None:
        """The shared checks, then KDA's: ``attn_mode``, head counts and sizes, the gate bound."""
        super().check_fields()
        check_choice(self, "attn_mode", DELTA_MODES)
        check_positive_int(self, "num_heads")
        check_positive_int(self, "head_dim")
        check_positive_int(self, "num_v_heads", allow_none=True)
        num_v_heads = self.num_heads if self.num_v_heads is None else self.num_v_heads
        if num_v_heads % self.num_heads != 0:
            raise ValueError(f"KDAConfig: num_v_heads={num_v_heads} is not a multiple of num_heads={self.num_heads}")
        expand = self.expand_v
        if isinstance(expand, bool) or not isinstance(expand, (int, float)) or not expand > 0:
            raise ValueError(f"KDAConfig: expand_v={expand!r} must be a positive number")
        head_v_dim = self.head_dim * expand
        if abs(head_v_dim - round(head_v_dim)) > 1e-6:
            raise ValueError(
                f"KDAConfig: head_dim * expand_v = {self.head_dim} * {expand} is not an integer "
                f"(the value head size, {head_v_dim})"
            )
        bound = self.lower_bound
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float)) or not bound < 0):
            raise ValueError(f"KDAConfig: lower_bound={bound!r} must be a negative number or null")
        if self.safe_gate and (bound is None or not -5 <= bound < 0):
            raise ValueError(f"KDAConfig: safe_gate=true needs lower_bound in [-5, 0) (recommended -5), got {bound!r}")
        if self.use_short_conv:
            check_positive_int(self, "conv_size")


__all__ = ["KDAConfig"]
