"""MomConfig: mixture-of-memories models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.delta_net import DELTA_MODES
from fla.models.config_utils import FLAConfig, check_choice, check_positive_int

MOM_BACKENDS = ("gated_deltanet",)


class MomConfig(FLAConfig):
    """Config of :class:`~fla.models.mom.MomForCausalLM` (``model_type = "mom"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged; the shared ones
    (sizes, MLP, norms, fuse flags, tokens, ``attn``) are :class:`~fla.models.config_utils.FLAConfig`'s.
    Mixer (see :class:`fla.layers.MomAttention`): ``attn_mode`` (``"chunk"`` or ``"fused_recurrent"``),
    ``num_heads``, ``head_dim`` (q / k head size), ``expand_v`` (value head size per ``head_dim``),
    ``use_output_gate``, ``use_short_conv`` / ``conv_size``, ``num_memories`` (routed memories),
    ``topk`` (memories per token), ``capacity`` (kept for fla; no token is dropped), ``shared_mem``
    (a memory every token updates), ``single_kv_proj`` (one k / v / beta / decay projection for all
    memories), ``mom_backend`` (only ``"gated_deltanet"``). Load balancing: the model adds
    ``aux_loss_scale`` times :func:`~fla.models.mom.load_balancing_loss_func` to the loss when
    labels are given; ``use_layer_wise_balance`` is kept for fla (fla 0.6.0 does not read it either).
    """

    model_type = "mom"

    def __init__(
        self,
        *,
        attn_mode: str = "chunk",
        conv_size: int = 4,
        num_heads: int = 4,
        head_dim: int = 256,
        expand_v: float = 1.0,
        use_output_gate: bool = True,
        use_short_conv: bool = True,
        num_memories: int = 4,
        topk: int = 2,
        capacity: float = 1.0,
        use_layer_wise_balance: bool = True,
        aux_loss_scale: float = 0.01,
        shared_mem: bool = True,
        single_kv_proj: bool = False,
        mom_backend: str = "gated_deltanet",
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(**kwargs)

    def check_fields(self) -> None:
        """The shared checks, then MoM's: mode, backend, head sizes, memories and ``topk``, the loss scale."""
        super().check_fields()
        name = type(self).__name__
        check_choice(self, "attn_mode", DELTA_MODES)
        check_choice(self, "mom_backend", MOM_BACKENDS)
        for field in ("num_heads", "head_dim", "num_memories", "topk"):
            check_positive_int(self, field)
        if self.topk > self.num_memories:
            raise ValueError(f"{name}: topk={self.topk} must not exceed num_memories={self.num_memories}")
        expand = self.expand_v
        if isinstance(expand, bool) or not isinstance(expand, (int, float)) or not expand > 0:
            raise ValueError(f"{name}: expand_v={expand!r} must be a positive number")
        head_v_dim = self.head_dim * expand
        if abs(head_v_dim - round(head_v_dim)) > 1e-6:
            raise ValueError(f"{name}: head_dim * expand_v = {self.head_dim} * {expand} is not an integer")
        scale = self.aux_loss_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale >= 0:
            raise ValueError(f"{name}: aux_loss_scale={scale!r} must be a number >= 0")
        if self.use_short_conv:
            check_positive_int(self, "conv_size")


__all__ = ["MOM_BACKENDS", "MomConfig"]
