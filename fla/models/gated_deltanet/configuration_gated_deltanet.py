"""GatedDeltaNetConfig: Gated DeltaNet models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.gated_deltanet import GATE_ACTIVATIONS
from fla.models.config_utils import FLAConfig


class GatedDeltaNetConfig(FLAConfig):
    """Config of :class:`~fla.models.gated_deltanet.GatedDeltaNetForCausalLM` (``model_type = "gated_deltanet"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged; the shared ones
    (sizes, MLP, norms, fuse flags, tokens, ``attn``) are :class:`~fla.models.config_utils.FLAConfig`'s,
    with Gated DeltaNet's own default ``num_hidden_layers=21``. Mixer (see
    :class:`fla.layers.GatedDeltaNet`): ``attn_mode`` (``"chunk"`` or ``"fused_recurrent"``),
    ``head_dim`` (q / k head size), ``num_heads``, ``num_v_heads`` (value heads, a multiple of
    ``num_heads``; default ``num_heads``), ``expand_v`` (value head size per ``head_dim``),
    ``use_gate`` / ``output_gate_activation`` (gated output norm), ``use_short_conv`` /
    ``conv_size``, ``allow_neg_eigval``.
    """

    model_type = "gated_deltanet"

    def __init__(
        self,
        *,
        attn_mode: str = "chunk",
        expand_v: float = 2.0,
        use_gate: bool = True,
        use_short_conv: bool = True,
        allow_neg_eigval: bool = False,
        conv_size: int = 4,
        head_dim: int = 256,
        num_heads: int = 6,
        num_v_heads: int | None = None,
        num_hidden_layers: int = 21,
        output_gate_activation: str = "swish",
        **kwargs,
    ):
        if output_gate_activation not in GATE_ACTIVATIONS:
            raise ValueError(f"output_gate_activation={output_gate_activation!r} is not one of {GATE_ACTIVATIONS}")
        self.set_fields(locals())
        super().__init__(num_hidden_layers=num_hidden_layers, **kwargs)


__all__ = ["GatedDeltaNetConfig"]
