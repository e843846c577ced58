"""TransformerConfig: Transformer++ (RMSNorm, RoPE, SwiGLU, GQA), field-compatible with fla 0.6.0."""

from __future__ import annotations

from transformers.configuration_utils import PreTrainedConfig

from fla.models.config_utils import validate_loss_config, validate_unsupported


class TransformerConfig(PreTrainedConfig):
    """Config of :class:`~fla.models.transformer.TransformerForCausalLM` (``model_type = "transformer"``).

    Field names and defaults are fla 0.6.0's, so its config files load unchanged. Model shape:
    ``hidden_size``, ``num_hidden_layers``, ``num_heads``, ``num_kv_heads`` (GQA; default
    ``num_heads``), ``qkv_bias``, ``qk_norm``, ``window_size`` (sliding window, ``None`` = full),
    ``rope_theta`` (``None`` = no RoPE), ``max_position_embeddings``, MLP ``hidden_ratio`` /
    ``intermediate_size`` / ``hidden_act``, ``norm_eps``, ``vocab_size``. Kernels: ``fuse_norm``,
    ``fuse_swiglu``, ``fuse_cross_entropy``, ``fuse_linear_cross_entropy`` (at most one of the
    last two). ``use_l2warp`` and ``attnres_block_size`` exist for compatibility and must stay
    off. ``elementwise_affine`` is stored but unused (as in fla's Transformer).
    """

    model_type = "transformer"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        hidden_size: int = 2048,
        num_hidden_layers: int = 24,
        num_heads: int = 32,
        num_kv_heads: int | None = None,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        window_size: int | None = None,
        rope_theta: float | None = 10000.0,
        max_position_embeddings: int = 2048,
        hidden_ratio: int | None = 4,
        intermediate_size: int | None = None,
        hidden_act: str = "swish",
        initializer_range: float = 0.02,
        elementwise_affine: bool | None = True,
        norm_eps: float = 1e-6,
        use_cache: bool = True,
        pad_token_id: int | None = None,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        tie_word_embeddings: bool = False,
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
        self.num_hidden_layers = num_hidden_layers
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.qkv_bias = qkv_bias
        self.qk_norm = qk_norm
        self.window_size = window_size
        self.rope_theta = rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.hidden_ratio = hidden_ratio
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.initializer_range = initializer_range
        self.elementwise_affine = elementwise_affine
        self.norm_eps = norm_eps
        self.use_cache = use_cache
        self.fuse_norm = fuse_norm
        self.fuse_swiglu = fuse_swiglu
        self.fuse_cross_entropy = fuse_cross_entropy
        self.fuse_linear_cross_entropy = fuse_linear_cross_entropy
        self.use_l2warp = use_l2warp
        self.vocab_size = vocab_size
        self.attnres_block_size = attnres_block_size

        validate_loss_config(fuse_cross_entropy, fuse_linear_cross_entropy)
        validate_unsupported(use_l2warp=use_l2warp, attnres_block_size=attnres_block_size)
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size={hidden_size} is not a multiple of num_heads={num_heads}")
        if num_kv_heads is not None and (num_kv_heads <= 0 or num_heads % num_kv_heads != 0):
            raise ValueError(f"num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}")
        if window_size is not None and (isinstance(window_size, bool) or window_size <= 0):
            raise ValueError(f"window_size must be a positive integer or null, got {window_size!r}")

        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )


__all__ = ["TransformerConfig"]
