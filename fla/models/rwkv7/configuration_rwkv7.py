"""RWKV7Config: RWKV7 (Goose) models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.rwkv7 import RWKV7_MODES
from fla.models.config_utils import FLAConfig, check_choice, check_positive_int
from fla.models.rwkv6.configuration_rwkv6 import RWKV6_FFN_ACTS


class RWKV7Config(FLAConfig):
    """Config of :class:`~fla.models.rwkv7.RWKV7ForCausalLM` (``model_type = "rwkv7"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged; the shared ones (sizes,
    norms, fuse flags, tokens, ``attn``) are :class:`~fla.models.config_utils.FLAConfig`'s, with RWKV7's defaults
    ``hidden_ratio=4``, ``hidden_act="sqrelu"`` (the channel mixing's activation, one of ``RWKV6_FFN_ACTS``) and
    ``norm_eps=1e-5``. Time mixing: ``attn_mode`` (``"chunk"`` or ``"fused_recurrent"``), ``head_dim`` /
    ``num_heads`` (one derives the other; given both, they must multiply to ``hidden_size``), the LoRA ranks
    ``decay_low_rank_dim``, ``gate_low_rank_dim``, ``a_low_rank_dim``, ``v_low_rank_dim``, and ``value_dim``
    (``None``, one int or one per layer; each a multiple of ``hidden_size``, normalized to a per-layer list).
    Norms: LayerNorms with bias (``norm_bias``) and, with ``norm_first``, one more before the first block
    (``pre_norm``, RWKV's ``ln0``). ``use_l2warp`` defaults to true, as in fla 0.6.0 (RWKV's L2Wrap gradient
    penalty on the largest logits, :mod:`fla.modules.l2warp`).
    """

    model_type = "rwkv7"
    mlp_acts = RWKV6_FFN_ACTS

    def __init__(
        self,
        *,
        attn_mode: str = "chunk",
        head_dim: int | None = 64,
        num_heads: int | None = None,
        decay_low_rank_dim: int = 64,
        gate_low_rank_dim: int = 128,
        a_low_rank_dim: int = 64,
        v_low_rank_dim: int = 16,
        norm_first: bool = True,
        norm_bias: bool = True,
        value_dim: int | list[int] | None = None,
        hidden_ratio: float | None = 4,
        hidden_act: str = "sqrelu",
        norm_eps: float = 1e-5,
        use_l2warp: bool = True,
        **kwargs,
    ):
        self.set_fields(locals())
        super().__init__(
            hidden_ratio=hidden_ratio, hidden_act=hidden_act, norm_eps=norm_eps, use_l2warp=use_l2warp, **kwargs
        )

    def check_fields(self) -> None:
        """The shared checks, then RWKV7's: ``attn_mode``, heads, the LoRA ranks, ``value_dim``."""
        super().check_fields()
        name, hidden = type(self).__name__, self.hidden_size
        check_choice(self, "attn_mode", RWKV7_MODES)
        check_positive_int(self, "head_dim", allow_none=True)
        check_positive_int(self, "num_heads", allow_none=True)
        if self.head_dim is None and self.num_heads is None:
            raise ValueError(f"{name}: head_dim and num_heads are both null; give one of them")
        if self.head_dim is not None and hidden % self.head_dim != 0:
            raise ValueError(f"{name}: hidden_size={hidden} is not a multiple of head_dim={self.head_dim}")
        if self.head_dim is None and hidden % self.num_heads != 0:
            raise ValueError(f"{name}: hidden_size={hidden} is not a multiple of num_heads={self.num_heads}")
        if self.head_dim is not None and self.num_heads is not None and self.head_dim * self.num_heads != hidden:
            raise ValueError(f"{name}: head_dim={self.head_dim} * num_heads={self.num_heads} != hidden_size={hidden}")
        if self.head_dim is None:
            self.head_dim = hidden // self.num_heads
        if self.num_heads is None:
            self.num_heads = hidden // self.head_dim
        for field in ("decay_low_rank_dim", "gate_low_rank_dim", "a_low_rank_dim", "v_low_rank_dim"):
            check_positive_int(self, field)
        self.value_dim = self._value_dims(self.value_dim)

    def _value_dims(self, value_dim) -> list[int]:
        """``value_dim`` as one width per layer, each a positive multiple of ``hidden_size``."""
        layers, hidden = self.num_hidden_layers, self.hidden_size
        dims = [hidden] * layers if value_dim is None else value_dim
        if isinstance(dims, int) and not isinstance(dims, bool):
            dims = [dims] * layers
        if not isinstance(dims, (list, tuple)) or len(dims) != layers:
            raise ValueError(
                f"{type(self).__name__}: value_dim={value_dim!r} must be null, an int or a list of "
                f"num_hidden_layers={layers} ints"
            )
        for dim in dims:
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < hidden or dim % hidden != 0:
                raise ValueError(
                    f"{type(self).__name__}: value_dim={value_dim!r}: every width must be a multiple of "
                    f"hidden_size={hidden} (and >= it), got {dim!r}"
                )
        return list(dims)


__all__ = ["RWKV7Config"]
