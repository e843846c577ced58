"""What every fla model config shares: :class:`FLAConfig` (the common fields, fla 0.6.0 names and
defaults, and their validation) and the hybrid ``attn`` spec.

A family config subclasses :class:`FLAConfig`, sets its ``model_type``, and lists only its own
fields (fla 0.6.0 names and defaults) plus any shared field whose default differs in that family::

    class RetNetConfig(FLAConfig):
        model_type = "retnet"

        def __init__(self, attn_mode="chunk", expand_k=1.0, ..., hidden_ratio=2, **kwargs):
            self.set_fields(locals())                             # attn_mode, expand_k, ... as attributes
            super().__init__(hidden_ratio=hidden_ratio, **kwargs)  # a family-level default is passed on

A hybrid model puts softmax :class:`fla.layers.Attention` at some layers, described in its config
by ``attn`` (fla's format): a dict, or a list of dicts for several attention flavours::

    {"layers": [1, 5], "num_heads": 16, "num_kv_heads": 4, "window_size": null,
     "rope_theta": 10000.0, "qkv_bias": false, "qk_norm": false}

``layers`` and ``num_heads`` are required; the rest default as above (``num_kv_heads`` to
``num_heads``). Every error names the field, the value and what was expected.

Validation runs when a config is constructed (and again by :meth:`FLAConfig.check_fields` after a
field is changed): the base checks the shared fields, and each family extends the hook with the
constraints of its token mixer, so a config that constructs always builds a model::

    def check_fields(self) -> None:
        super().check_fields()
        check_choice(self, "attn_mode", MODES)
        check_linear_heads(self, self.expand_k, self.expand_v, self.num_kv_heads)  # widths divide into heads
"""

from __future__ import annotations

import math
from typing import Any

from transformers.configuration_utils import PreTrainedConfig

ATTN_FIELDS = ("layers", "num_heads", "num_kv_heads", "window_size", "rope_theta", "qkv_bias", "qk_norm")
_ATTN_DEFAULTS = {"num_kv_heads": None, "window_size": None, "rope_theta": 10000.0, "qkv_bias": False, "qk_norm": False}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_spec(spec: Any, where: str, num_hidden_layers: int, hidden_size: int | None) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be a dict with keys {list(ATTN_FIELDS)}, got {spec!r}")
    unknown = sorted(set(spec) - set(ATTN_FIELDS))
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; allowed keys are {list(ATTN_FIELDS)}")
    for name in ("layers", "num_heads"):
        if name not in spec:
            raise ValueError(f"{where} is missing the required key {name!r}")
    out = {**_ATTN_DEFAULTS, **spec}
    layers = out["layers"]
    if not isinstance(layers, (list, tuple)) or not all(_is_int(i) for i in layers):
        raise ValueError(f"{where}['layers'] must be a list of layer indices (ints), got {layers!r}")
    bad = [i for i in layers if not 0 <= i < num_hidden_layers]
    if bad:
        raise ValueError(f"{where}['layers'] has indices {bad} outside [0, {num_hidden_layers}) (num_hidden_layers)")
    if len(set(layers)) != len(layers):
        raise ValueError(f"{where}['layers'] lists a layer twice: {list(layers)}")
    out["layers"] = sorted(layers)
    if out["num_kv_heads"] is None:
        out["num_kv_heads"] = out["num_heads"]
    for name in ("num_heads", "num_kv_heads"):
        if not _is_int(out[name]) or out[name] <= 0:
            raise ValueError(f"{where}[{name!r}] must be a positive int, got {out[name]!r}")
    if out["num_heads"] % out["num_kv_heads"] != 0:
        raise ValueError(
            f"{where}: num_heads={out['num_heads']} is not a multiple of num_kv_heads={out['num_kv_heads']}"
        )
    if hidden_size is not None and hidden_size % out["num_heads"] != 0:
        raise ValueError(f"{where}: hidden_size={hidden_size} is not a multiple of num_heads={out['num_heads']}")
    window = out["window_size"]
    if window is not None and (not _is_int(window) or window <= 0):
        raise ValueError(f"{where}['window_size'] must be a positive int or null, got {window!r}")
    theta = out["rope_theta"]
    if theta is not None and (
        isinstance(theta, bool) or not isinstance(theta, (int, float)) or not math.isfinite(theta) or theta <= 0
    ):
        raise ValueError(f"{where}['rope_theta'] must be a positive finite number or null, got {theta!r}")
    for name in ("qkv_bias", "qk_norm"):
        if not isinstance(out[name], bool):
            raise ValueError(f"{where}[{name!r}] must be true or false, got {out[name]!r}")
    return out


def validate_attn_spec(
    attn: dict | list | None, num_hidden_layers: int, hidden_size: int | None = None
) -> dict | list | None:
    """Check a hybrid ``attn`` spec and fill its defaults (the input is not modified).

    Args:
        attn: ``None``, one spec dict or a list of spec dicts (see the module docstring).
        num_hidden_layers: layer indices must lie in ``[0, num_hidden_layers)``.
        hidden_size: when given, every ``num_heads`` must divide it.
    Returns:
        the normalized spec in the same form (dict or list); ``None`` stays ``None``.
    Raises:
        ValueError: naming the offending field, value and expectation (also when two specs
            claim the same layer).
    """
    if attn is None:
        return None
    if isinstance(attn, dict):
        return _check_spec(attn, "attn", num_hidden_layers, hidden_size)
    if not isinstance(attn, (list, tuple)):
        raise ValueError(f"attn must be null, a dict or a list of dicts, got {attn!r}")
    specs = [_check_spec(s, f"attn[{i}]", num_hidden_layers, hidden_size) for i, s in enumerate(attn)]
    owner: dict[int, int] = {}
    for i, spec in enumerate(specs):
        for layer in spec["layers"]:
            if layer in owner:
                raise ValueError(f"attn[{i}] and attn[{owner[layer]}] both claim layer {layer}")
            owner[layer] = i
    return specs


def get_attn_spec(attn: dict | list | None, layer_idx: int) -> dict[str, Any] | None:
    """The (validated) spec that puts attention at ``layer_idx``, or ``None`` for a native layer."""
    if attn is None:
        return None
    for spec in [attn] if isinstance(attn, dict) else attn:
        if layer_idx in spec["layers"]:
            return spec
    return None


def validate_loss_config(fuse_cross_entropy: bool, fuse_linear_cross_entropy: bool) -> None:
    """At most one fused loss: both flags on raises ``ValueError`` naming them."""
    if fuse_cross_entropy and fuse_linear_cross_entropy:
        raise ValueError(
            "fuse_cross_entropy and fuse_linear_cross_entropy are both true; enable at most one of them "
            "(fuse_linear_cross_entropy never materializes the logits, fuse_cross_entropy fuses the loss on them)"
        )


def check_positive_int(config: Any, name: str, allow_none: bool = False) -> None:
    """``config.<name>`` must be an int > 0 (or ``None`` with ``allow_none``); ``ValueError`` naming it otherwise."""
    value = getattr(config, name)
    if value is None and allow_none:
        return
    if not _is_int(value) or value <= 0:
        expected = "a positive integer" + (" or null" if allow_none else "")
        raise ValueError(f"{type(config).__name__}: {name}={value!r} must be {expected}")


def check_choice(config: Any, name: str, choices: tuple) -> None:
    """``config.<name>`` must be one of ``choices``; ``ValueError`` naming the field, value and choices."""
    value = getattr(config, name)
    if value not in choices:
        raise ValueError(f"{type(config).__name__}: {name}={value!r} is not one of {tuple(choices)}")


def check_linear_heads(config: Any, expand_k: float, expand_v: float, num_kv_heads: int | None = None) -> tuple:
    """The q / k / v widths of a :class:`fla.layers.linear_mixer.LinearMixer` built from ``config``.

    ``hidden_size * expand_k`` (key dim) and ``hidden_size * expand_v`` (value dim) must be integers
    divisible by ``num_heads``, and ``num_heads`` a multiple of ``num_kv_heads``. Returns
    ``(head_k_dim, head_v_dim)``; raises ``ValueError`` naming the fields and their values.
    """
    name = type(config).__name__
    check_positive_int(config, "num_heads")
    hidden, heads = config.hidden_size, config.num_heads
    dims = {}
    for field, expand, what in (("expand_k", expand_k, "key dim"), ("expand_v", expand_v, "value dim")):
        if isinstance(expand, bool) or not isinstance(expand, (int, float)) or not expand > 0:
            raise ValueError(f"{name}: {field}={expand!r} must be a positive number")
        dim = hidden * expand
        if abs(dim - round(dim)) > 1e-6:
            raise ValueError(f"{name}: hidden_size * {field} = {hidden} * {expand} = {dim} is not an integer")
        dims[what] = round(dim)
        if dims[what] % heads != 0:
            raise ValueError(
                f"{name}: {what} {dims[what]} is not a multiple of num_heads={heads} "
                f"(hidden_size * {field} = {hidden} * {expand})"
            )
    if num_kv_heads is not None and (not _is_int(num_kv_heads) or num_kv_heads <= 0 or heads % num_kv_heads != 0):
        raise ValueError(f"{name}: num_heads={heads} is not a multiple of num_kv_heads={num_kv_heads!r}")
    return dims["key dim"] // heads, dims["value dim"] // heads


def check_feature_map(config: Any) -> None:
    """``config.feature_map`` must be ``None`` or an activation name transformers knows (``ACT2FN``)."""
    from transformers.activations import ACT2FN

    value = config.feature_map
    if value is not None and (not isinstance(value, str) or value not in ACT2FN):
        raise ValueError(f"{type(config).__name__}: feature_map={value!r} is not null or an activation name")
    if getattr(config, "use_short_conv", False):
        check_positive_int(config, "conv_size")


def validate_unsupported(**fields: Any) -> None:
    """Reject fla 0.6.0 options this implementation does not provide (``attnres_block_size``)."""
    if fields.get("attnres_block_size") is not None:
        raise ValueError(f"attnres_block_size={fields['attnres_block_size']!r} is not supported here; set it to null")


_NOT_FIELDS = ("self", "kwargs", "__class__")
_TOKEN_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings")  # PreTrainedConfig's own


class FLAConfig(PreTrainedConfig):
    """Base of the fla model configs: the fields every family has, with fla 0.6.0's names and defaults.

    Sizes: ``hidden_size``, ``num_hidden_layers``, ``vocab_size``, ``max_position_embeddings``;
    MLP: ``hidden_ratio`` / ``intermediate_size`` (``None``: from ``hidden_ratio``), ``hidden_act``;
    ``norm_eps``; ``initializer_range``; ``use_cache``; tokens: ``pad_token_id``, ``bos_token_id``,
    ``eos_token_id``, ``tie_word_embeddings``. Kernels: ``fuse_norm``, ``fuse_swiglu``,
    ``fuse_cross_entropy``, ``fuse_linear_cross_entropy`` (at most one of the last two).
    ``use_l2warp``: RWKV's L2Wrap gradient penalty on the logits (:mod:`fla.modules.l2warp`);
    ``attnres_block_size`` exists for compatibility with fla and must stay null.
    ``attn`` (families with ``hybrid_attn``, the default): softmax-attention layers, validated and
    normalized by :func:`validate_attn_spec`; families without it (the Transformer) keep an ``attn``
    argument as an ordinary extra attribute, as transformers does.
    """

    keys_to_ignore_at_inference = ["past_key_values", "cache"]  # the output's cache (renamed in transformers 5.24)
    hybrid_attn = True  # the config has the ``attn`` field (hybrid softmax-attention layers)
    mlp_acts: tuple[str, ...] | None = None  # allowed ``hidden_act`` values (None: the SwiGLU MLP's)

    def __init__(
        self,
        *,
        hidden_size: int = 2048,
        num_hidden_layers: int = 24,
        hidden_ratio: int | None = 4,
        intermediate_size: int | None = None,
        hidden_act: str = "swish",
        max_position_embeddings: int = 2048,
        norm_eps: float = 1e-6,
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
        args = dict(locals())
        tokens = {name: args.pop(name) for name in _TOKEN_FIELDS}
        self.set_fields(args)
        if self.hybrid_attn:
            self.attn = kwargs.pop("attn", None)
        super().__init__(**tokens, **kwargs)
        self.check_fields()

    def check_fields(self) -> None:
        """Validation hook, run at construction (and by whoever changes a field afterwards).

        Raises ``ValueError`` naming the field and its value for a config whose model cannot be
        built. The base checks the shared fields (sizes, MLP activation, fused losses, the hybrid
        ``attn`` spec, which it also normalizes); a family overrides this, calls
        ``super().check_fields()`` and adds its token mixer's constraints.
        """
        from fla.modules.mlp import _SUPPORTED_ACTS

        for name in ("hidden_size", "num_hidden_layers", "vocab_size"):
            check_positive_int(self, name)
        check_positive_int(self, "intermediate_size", allow_none=True)
        ratio = self.hidden_ratio
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0):
            raise ValueError(f"{type(self).__name__}: hidden_ratio={ratio!r} must be a positive number or null")
        check_choice(self, "hidden_act", _SUPPORTED_ACTS if self.mlp_acts is None else self.mlp_acts)
        if self.hybrid_attn:
            self.attn = validate_attn_spec(self.attn, self.num_hidden_layers, self.hidden_size)
        validate_loss_config(self.fuse_cross_entropy, self.fuse_linear_cross_entropy)
        validate_unsupported(attnres_block_size=self.attnres_block_size)

    def set_fields(self, args: dict[str, Any]) -> None:
        """Store a constructor's arguments (its ``locals()``, taken first thing) as config fields."""
        for name, value in args.items():
            if name not in _NOT_FIELDS:
                setattr(self, name, value)


__all__ = [
    "ATTN_FIELDS",
    "FLAConfig",
    "check_choice",
    "check_feature_map",
    "check_linear_heads",
    "check_positive_int",
    "get_attn_spec",
    "validate_attn_spec",
    "validate_loss_config",
    "validate_unsupported",
]
