"""GatedDeltaNetConfig: Gated DeltaNet models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from transformers.configuration_utils import PreTrainedConfig

from fla.layers.gated_deltanet import GATE_ACTIVATIONS
from fla.models.config_utils import validate_attn_spec, validate_loss_config, validate_unsupported


class GatedDeltaNetConfig(PreTrainedConfig):
    """Config of :class:`~fla.models.gated_deltanet.GatedDeltaNetForCausalLM` (``model_type = "gated_deltanet"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged. Mixer (see
    :class:`fla.layers.GatedDeltaNet`): ``attn_mode`` (``"chunk"`` or ``"fused_recurrent"``),
    ``head_dim`` (q / k head size), ``num_heads``, ``num_v_heads`` (value heads, a multiple of
    ``num_heads``; default ``num_heads``), ``expand_v`` (value head size per ``head_dim``),
    ``use_gate`` / ``output_gate_activation`` (gated output norm), ``use_short_conv`` /
    ``conv_size``, ``allow_neg_eigval``. ``attn``: hybrid softmax-attention layers (see
    :mod:`fla.models.config_utils`). ``use_l2warp`` and ``attnres_block_size`` exist for
    compatibility and must stay off.
    """

    model_type = "gated_deltanet"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        attn_mode: str = "chunk",
        hidden_size: int = 2048,
        expand_v: float = 2.0,
        use_gate: bool = True,
        use_short_conv: bool = True,
        allow_neg_eigval: bool = False,
        conv_size: int = 4,
        head_dim: int = 256,
        num_heads: int = 6,
        num_v_heads: int | None = None,
        max_position_embeddings: int = 2048,
        hidden_ratio: int | None = 4,
        intermediate_size: int | None = None,
        hidden_act: str = "swish",
        num_hidden_layers: int = 21,
        norm_eps: float = 1e-6,
        attn: dict | list | None = None,
        use_cache: bool = True,
        pad_token_id: int | None = None,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        tie_word_embeddings: bool = False,
        initializer_range: float = 0.02,
        fuse_norm: bool = True,
        fuse_swiglu: bool = True,
        fuse_cross_entropy: bool = True,
        fuse_linear_cross_entropy: bool = False,
        use_l2warp: bool = False,
        vocab_size: int = 32000,
        attnres_block_size: int | None = None,
        output_gate_activation: str = "swish",
        **kwargs,
    ):
        if output_gate_activation not in GATE_ACTIVATIONS:
            raise ValueError(f"output_gate_activation={output_gate_activation!r} is not one of {GATE_ACTIVATIONS}")
        self.attn_mode = attn_mode
        self.hidden_size = hidden_size
        self.expand_v = expand_v
        self.use_gate = use_gate
        self.output_gate_activation = output_gate_activation
        self.use_short_conv = use_short_conv
        self.allow_neg_eigval = allow_neg_eigval
        self.conv_size = conv_size
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.num_v_heads = num_v_heads
        self.max_position_embeddings = max_position_embeddings
        self.hidden_ratio = hidden_ratio
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.num_hidden_layers = num_hidden_layers
        self.norm_eps = norm_eps
        self.attn = validate_attn_spec(attn, num_hidden_layers, hidden_size)
        self.use_cache = use_cache
        self.initializer_range = initializer_range
        self.fuse_norm = fuse_norm
        self.fuse_swiglu = fuse_swiglu
        self.fuse_cross_entropy = fuse_cross_entropy
        self.fuse_linear_cross_entropy = fuse_linear_cross_entropy
        self.use_l2warp = use_l2warp
        self.vocab_size = vocab_size
        self.attnres_block_size = attnres_block_size

        validate_loss_config(fuse_cross_entropy, fuse_linear_cross_entropy)
        validate_unsupported(use_l2warp=use_l2warp, attnres_block_size=attnres_block_size)

        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )


__all__ = ["GatedDeltaNetConfig"]
