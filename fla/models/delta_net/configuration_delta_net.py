"""DeltaNetConfig: DeltaNet models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from transformers.configuration_utils import PreTrainedConfig

from fla.models.config_utils import validate_attn_spec, validate_loss_config, validate_unsupported


class DeltaNetConfig(PreTrainedConfig):
    """Config of :class:`~fla.models.delta_net.DeltaNetForCausalLM` (``model_type = "delta_net"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged. Mixer (see
    :class:`fla.layers.DeltaNet`): ``attn_mode`` (``"chunk"`` or ``"fused_recurrent"``),
    ``expand_k`` / ``expand_v`` (key / value widths per ``hidden_size``), ``num_heads``,
    ``use_beta``, ``use_gate`` (gated output norm), ``use_short_conv`` / ``conv_size``,
    ``allow_neg_eigval``, ``qk_activation`` (``silu`` / ``relu`` / ``elu`` / ``identity``),
    ``qk_norm`` (``l2`` / ``sum``). ``use_output_norm`` is stored but unused (as in fla 0.6.0: the
    output norm is always there). ``attn``: hybrid softmax-attention layers (see
    :mod:`fla.models.config_utils`). ``use_l2warp`` and ``attnres_block_size`` exist for
    compatibility and must stay off.
    """

    model_type = "delta_net"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        attn_mode: str = "chunk",
        hidden_size: int = 2048,
        expand_k: float = 1.0,
        expand_v: float = 1.0,
        use_gate: bool = False,
        use_short_conv: bool = True,
        allow_neg_eigval: bool = False,
        conv_size: int = 4,
        use_beta: bool = True,
        use_output_norm: bool = True,
        num_heads: int = 16,
        qk_norm: str = "l2",
        qk_activation: str = "silu",
        max_position_embeddings: int = 2048,
        hidden_ratio: int | None = 4,
        intermediate_size: int | None = None,
        hidden_act: str = "swish",
        num_hidden_layers: int = 24,
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
        **kwargs,
    ):
        self.attn_mode = attn_mode
        self.hidden_size = hidden_size
        self.expand_k = expand_k
        self.expand_v = expand_v
        self.use_gate = use_gate
        self.use_short_conv = use_short_conv
        self.allow_neg_eigval = allow_neg_eigval
        self.conv_size = conv_size
        self.use_beta = use_beta
        self.use_output_norm = use_output_norm
        self.num_heads = num_heads
        self.qk_norm = qk_norm
        self.qk_activation = qk_activation
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


__all__ = ["DeltaNetConfig"]
