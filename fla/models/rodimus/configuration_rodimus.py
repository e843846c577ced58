"""RodimusConfig: Rodimus / Rodimus+ models, field-compatible with fla 0.6.0."""

from __future__ import annotations

from typing import Any

from fla.layers.rodimus import RODIMUS_BLOCK_TYPES, RODIMUS_MODES, input_gate_rank
from fla.models.config_utils import FLAConfig, check_choice, check_positive_int

SKA_DEFAULTS = {"qkv_bias": False, "qk_norm": False, "window_size": 1024, "rope_theta": 10000.0}  # fla's
# fla 0.6.0's RodimusConfig defaults for fields the shared base defaults differently
_SHARED_DEFAULTS = dict(
    hidden_ratio=4 / 3,
    norm_eps=1e-5,
    bos_token_id=126080,
    eos_token_id=126081,
    tie_word_embeddings=True,
    vocab_size=126464,
)


class RodimusConfig(FLAConfig):
    """Config of :class:`~fla.models.rodimus.RodimusForCausalLM` (``model_type = "rodimus"``).

    Field names and defaults are fla 0.6.0's (including its shared-field defaults: ``hidden_ratio = 4/3``,
    ``norm_eps = 1e-5``, ``vocab_size = 126464``, ``bos/eos_token_id = 126080/126081``, tied embeddings).

    * ``block_type``: ``"rodimus"`` (a block is ``x + Rodimus(norm(x))``, no MLP) or ``"rodimus_plus"``
      (Rodimus, then SW-SKA and the MLP with fla's two-hop residual; needs ``ska_attn``).
    * Rodimus mixer: ``attn_mode`` (``"chunk"`` / ``"fused_recurrent"``), ``expand_ratio`` (the state's key
      width), ``input_gate_low_rank`` (``"auto"`` or an int), ``use_short_conv`` / ``conv_size``,
      ``k_norm_eps``, ``residual_in_fp32`` (the mixer's skip term and the blocks' residual stream in float32).
    * ``ska_attn``: ``{"num_heads", "qkv_bias": False, "qk_norm": False, "window_size": 1024,
      "rope_theta": 10000.0}`` (defaults filled as fla does).
    * ``block_residual_in_fp32``: accepted for fla compatibility; the residual stream's precision follows
      ``residual_in_fp32`` (the maths of both fla paths is the same pre-norm residual).
    * MLP width: ``intermediate_size``, else ``align_multiple(int(hidden_ratio * hidden_size), 8)`` (fla's).

    Raises ``ValueError`` naming the field for an unknown ``block_type`` / ``attn_mode``, a bad
    ``expand_ratio`` / ``input_gate_low_rank`` / ``conv_size``, or an ``ska_attn`` that is not a dict with
    ``num_heads`` dividing ``hidden_size``. ``rodimus_plus`` without ``ska_attn`` (fla's default config) is
    accepted here, as in fla (transformers builds the default config to diff against), and refused with a
    ``ValueError`` when a model is built from it.
    """

    model_type = "rodimus"

    def __init__(
        self,
        *,
        block_type: str = "rodimus_plus",
        attn_mode: str = "chunk",
        residual_in_fp32: bool = True,
        block_residual_in_fp32: bool = False,
        expand_ratio: int | None = 64,
        input_gate_low_rank: float | str | None = "auto",
        use_short_conv: bool = True,
        conv_size: int = 4,
        k_norm_eps: float | None = None,
        ska_attn: dict | None = None,
        **kwargs,
    ):
        self.set_fields(locals())
        for name, value in _SHARED_DEFAULTS.items():
            kwargs.setdefault(name, value)
        super().__init__(**kwargs)  # runs check_fields (fills ska_attn's defaults)

    def check_fields(self) -> None:
        """The shared checks, then Rodimus's: block type, mode, mixer sizes, the SW-SKA spec."""
        super().check_fields()
        name = type(self).__name__
        check_choice(self, "block_type", RODIMUS_BLOCK_TYPES)
        check_choice(self, "attn_mode", RODIMUS_MODES)
        check_positive_int(self, "expand_ratio")
        input_gate_rank(self.hidden_size, self.input_gate_low_rank, name)
        if self.use_short_conv:
            check_positive_int(self, "conv_size")
        if self.k_norm_eps is not None and not (isinstance(self.k_norm_eps, (int, float)) and self.k_norm_eps > 0):
            raise ValueError(f"{name}: k_norm_eps={self.k_norm_eps!r} must be a positive number or null")
        self.ska_attn = check_ska_attn(self.ska_attn, self.hidden_size, name)

    def check_model(self) -> None:
        """What only a model build needs (see the class docstring): ``rodimus_plus`` has an ``ska_attn``."""
        self.check_fields()
        if self.block_type == "rodimus_plus" and self.ska_attn is None:
            raise ValueError(
                f"{type(self).__name__}: block_type='rodimus_plus' needs ska_attn (a dict with num_heads) for its "
                "sliding-window shared-key attention, got ska_attn=None"
            )


def check_ska_attn(ska_attn: Any, hidden_size: int, where: str = "RodimusConfig") -> dict | None:
    """``ska_attn`` with fla's defaults filled (a new dict), or ``None``; ``ValueError`` naming the bad value."""
    if ska_attn is None:
        return None
    if not isinstance(ska_attn, dict):
        raise ValueError(f"{where}: ska_attn must be null or a dict, got {ska_attn!r}")
    unknown = set(ska_attn) - {"num_heads", *SKA_DEFAULTS}
    if unknown:
        raise ValueError(f"{where}: ska_attn has unknown fields {sorted(unknown)}")
    heads = ska_attn.get("num_heads")
    if isinstance(heads, bool) or not isinstance(heads, int) or heads <= 0:
        raise ValueError(f"{where}: ska_attn.num_heads={heads!r} must be a positive integer")
    if hidden_size % heads != 0:
        raise ValueError(f"{where}: hidden_size={hidden_size} is not a multiple of ska_attn.num_heads={heads}")
    spec = {"num_heads": heads, **{k: ska_attn.get(k, v) for k, v in SKA_DEFAULTS.items()}}
    window = spec["window_size"]
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window <= 0):
        raise ValueError(f"{where}: ska_attn.window_size={window!r} must be a positive integer or null")
    if spec["rope_theta"] is not None and (hidden_size // heads) % 2:
        raise ValueError(
            f"{where}: ska_attn.rope_theta={spec['rope_theta']} needs an even head dim, got "
            f"{hidden_size} // {heads} = {hidden_size // heads} (RoPE rotates pairs)"
        )
    return spec


__all__ = ["SKA_DEFAULTS", "RodimusConfig", "check_ska_attn"]
