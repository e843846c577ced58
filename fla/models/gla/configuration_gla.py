"""GLAConfig: Gated Linear Attention models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from transformers.configuration_utils import PreTrainedConfig

from fla.models.config_utils import validate_attn_spec, validate_loss_config, validate_unsupported


class GLAConfig(PreTrainedConfig):
    """Config of :class:`~fla.models.gla.GLAForCausalLM` (``model_type = "gla"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged. Mixer:
    ``attn_mode`` (``"chunk"``; ``"fused_recurrent"``; ``"fused_chunk"`` runs the chunk op),
    ``expand_k`` / ``expand_v`` (key / value widths per ``hidden_size``), ``num_heads``,
    ``num_kv_heads``, ``feature_map``, ``use_short_conv`` / ``conv_size``, ``use_output_gate``,
    ``clamp_min`` (lower bound of the log decays). ``hidden_act`` is both the MLP activation and
    the output-gate activation (as in fla). ``attn``: hybrid softmax-attention layers (see
    :mod:`fla.models.config_utils`). ``use_gk`` / ``use_gv`` are stored but unused (as in fla).
    ``use_l2warp`` and ``attnres_block_size`` exist for compatibility and must stay off.
    """

    model_type = "gla"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        hidden_size: int = 2048,
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        hidden_ratio: int | None = 4,
        intermediate_size: int | None = None,
        num_hidden_layers: int = 24,
        num_heads: int = 4,
        num_kv_heads: int | None = None,
        feature_map: str | None = None,
        attn_mode: str = "chunk",
        use_short_conv: bool = False,
        conv_size: int = 4,
        use_output_gate: bool = True,
        clamp_min: float | None = None,
        hidden_act: str = "swish",
        max_position_embeddings: int = 2048,
        elementwise_affine: bool | None = True,
        norm_eps: float = 1e-6,
        use_gk: bool = True,
        use_gv: bool = False,
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
        self.hidden_size = hidden_size
        self.expand_k = expand_k
        self.expand_v = expand_v
        self.hidden_ratio = hidden_ratio
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.feature_map = feature_map
        self.attn_mode = attn_mode
        self.use_short_conv = use_short_conv
        self.conv_size = conv_size
        self.use_output_gate = use_output_gate
        self.clamp_min = clamp_min
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.elementwise_affine = elementwise_affine
        self.norm_eps = norm_eps
        self.use_gk = use_gk
        self.use_gv = use_gv
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


__all__ = ["GLAConfig"]
