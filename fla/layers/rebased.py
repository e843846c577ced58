"""ReBased linear attention (Aksenov et al. 2024, https://arxiv.org/abs/2402.10644), parameter-compatible with
fla 0.6.0's ``ReBasedLinearAttention``.

As :mod:`fla.layers.based`, with ReBased's feature map (:class:`~fla.modules.feature_map.RebasedFeatureMap`:
a learnable affine layer norm ``gamma``, ``beta`` of the ``feature_dim``-wide q / k heads, then the squared
map, ``phi(q) . phi(k) = (q' . k')^2 / d``)::

    w_ts = phi(q_t) . phi(k_s) = (q'_t . k'_s)^2 / d        (q', k': q, k after the affine norm)
    o_t = sum_{s <= t} w_ts v_s / (sum_{s <= t} w_ts + eps),     out_t = o_proj(o_t)

computed as ``phi(q_t) S_t / (phi(q_t) . z_t + eps)`` with Based's states ``S``, ``z``.
Value heads are ``hidden_size // num_key_value_heads`` wide. Padding, ``cu_seqlens`` and the cache as for
every :class:`~fla.layers.linear_mixer.LinearMixer` (fla 0.6.0's layer has none of them).
"""

from __future__ import annotations

from fla.layers.based import FeatureMapLinearMixer
from fla.modules.feature_map import RebasedFeatureMap


class ReBasedLinearAttention(FeatureMapLinearMixer):
    """ReBased token mixer; fla 0.6.0's signature.

    Args:
        hidden_size: model width.
        l_max: kept for fla compatibility (unused).
        feature_dim: q / k width per head before the feature map (default 16).
        num_key_value_heads: must equal ``num_heads`` (default 16); value heads are
            ``hidden_size // num_key_value_heads`` wide.
        num_heads: heads (default 16).
        use_gamma, use_beta, normalize: the feature map's learnable scale ``feature_map.gamma``, shift
            ``feature_map.beta`` and layer norm (without ``normalize``, ``use_gamma`` is required).
        causal: causal (default) or whole-sequence attention (no cache then).
        eps: added to the normalizer ``phi(q_t) . z_t`` (default 1e-5).
        mode: ``"parallel"`` (default), ``"chunk"``, ``"fused_chunk"`` (all run the chunk op) or
            ``"fused_recurrent"``.
        layer_idx: index in the cache (required when a cache is used).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    def __init__(
        self,
        hidden_size: int,
        l_max: int = 2048,
        feature_dim: int = 16,
        num_key_value_heads: int = 16,
        num_heads: int = 16,
        use_gamma: bool | None = True,
        use_beta: bool | None = True,
        normalize: bool | None = True,
        causal: bool = True,
        eps: float = 1e-5,
        mode: str = "parallel",
        layer_idx: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        ok = isinstance(num_key_value_heads, int) and num_key_value_heads > 0
        head_v_dim = hidden_size // num_key_value_heads if ok else 0
        self.setup_dims(
            mode, hidden_size, feature_dim, num_heads, num_key_value_heads, head_v_dim, causal, eps, layer_idx
        )
        self.l_max = l_max
        self.use_gamma, self.use_beta, self.normalize = use_gamma, use_beta, normalize
        self.feature_map = RebasedFeatureMap(feature_dim, use_gamma, use_beta, normalize)
        self.build_projections()


__all__ = ["ReBasedLinearAttention"]
