"""Based linear attention (Arora et al. 2024, https://arxiv.org/abs/2402.18668), parameter-compatible with
fla 0.6.0's ``BasedLinearAttention``.

Per head, with q / k projected to ``feature_dim`` (``d``) and Based's second-order Taylor feature map ``phi``
(:class:`~fla.modules.feature_map.TaylorFeatureMap`, ``phi(q) . phi(k) = 1 + s + s^2 / 2``, ``s = q . k / sqrt(d)``)::

    S_t = S_{t-1} + phi(k_t)^T v_t,     z_t = z_{t-1} + phi(k_t)
    o_t = phi(q_t) S_t / (phi(q_t) . z_t + eps)
    out_t = o_proj(o_t)                              (no output norm, no gate)

i.e. softmax-free attention with weights ``phi(q_t) . phi(k_s)`` (``s <= t``) normalized by their sum.
``causal=False`` sums over the whole sequence instead. The value heads are ``hidden_size // num_heads`` wide.

Training and prefill run :func:`fla.ops.linear_attn.chunk_linear_attn` (``scale=1``, unnormalized); decoding
(at most 64 tokens outside training) and ``mode="fused_recurrent"``
:func:`fla.ops.linear_attn.fused_recurrent_linear_attn`; the normalizer (with the layer's ``eps``) is applied
on top (:func:`normalize_by_key_sums`). fla's ``"parallel"`` and ``"fused_chunk"`` modes run the chunk op.
The cached state is the pair ``(S [N, H, K, V], z [N, 1, H, K])`` with ``K = 1 + d + d (d + 1) / 2``, so
padding, ``cu_seqlens`` and :class:`~fla.models.cache.FLACache` decoding work as for every
:class:`~fla.layers.linear_mixer.LinearMixer` (fla 0.6.0's layer has none of them).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fla.context_parallel import cp_chunk_op
from fla.context_parallel.normalizer import entering_key_sums
from fla.layers.linear_mixer import LinearMixer, MixerStep
from fla.modules.feature_map import TaylorFeatureMap
from fla.ops.linear_attn import chunk_linear_attn, fused_recurrent_linear_attn
from fla.ops.utils.index import prepare_sequence_ids
from fla.ops.utils.varlen import pad_sequences, unpad_sequences

BASED_MODES = ("parallel", "chunk", "fused_chunk", "fused_recurrent")  # fla's three (+ ours); all but the last chunk


def normalize_by_key_sums(
    o: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    z0: torch.Tensor | None,
    eps: float,
    cu_seqlens: torch.Tensor | None,
    causal: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``o_t / (q_t . z_t + eps)`` with ``z_t = z0 + sum_{s <= t} k_s`` per sequence (``causal=False``: the
    sum over the whole sequence), computed in float32 or wider.

    Args:
        o: ``[B, T, H, V]`` unnormalized output; q, k: ``[B, T, H, K]`` (feature-mapped).
        z0: ``[N, 1, H, K]`` key sum of the cached prefix, or ``None``.
        cu_seqlens: ``[N+1]`` packed bounds (``B == 1``) or ``None``.
    Returns:
        the normalized ``o`` (``o``'s dtype) and the final key sums ``z_T [N, 1, H, K]``.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    kf = k.to(dtype)
    if cu_seqlens is None:
        zt = kf.sum(1, keepdim=True)
        z = kf.cumsum(1) if causal else zt
    else:
        padded = pad_sequences(kf, cu_seqlens)
        zt = padded.sum(1, keepdim=True)
        z = (
            unpad_sequences(padded.cumsum(1), cu_seqlens)
            if causal
            else zt[:, 0][prepare_sequence_ids(cu_seqlens)][None]
        )
    if z0 is not None:
        z0 = z0.to(dtype)
        z = z + (z0 if cu_seqlens is None else z0[:, 0][prepare_sequence_ids(cu_seqlens)][None])
        zt = zt + z0
    denom = (q.to(dtype) * z).sum(-1, keepdim=True) + eps
    return (o.to(dtype) / denom).to(o.dtype), zt


class FeatureMapLinearMixer(LinearMixer):
    """Shared part of Based and ReBased: q / k heads of width ``feature_dim``, value heads of ``head_dim``, one
    feature map for q and k (``self.feature_map``), normalized linear attention with ``eps``, ``o_proj`` only."""

    chunk_op = staticmethod(chunk_linear_attn)
    recurrent_op = staticmethod(fused_recurrent_linear_attn)

    def setup_dims(
        self,
        mode: str,
        hidden_size: int,
        feature_dim: int,
        num_heads: int,
        num_key_value_heads: int,
        head_v_dim: int,
        causal: bool,
        eps: float,
        layer_idx: int | None,
    ) -> None:
        """Check the sizes (``ValueError`` naming the argument) and set the dimension attributes."""
        name = type(self).__name__
        self.check_mode(mode, BASED_MODES)
        for arg, value in (
            ("hidden_size", hidden_size),
            ("feature_dim", feature_dim),
            ("num_heads", num_heads),
            ("num_key_value_heads", num_key_value_heads),
        ):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: {arg}={value!r} must be a positive integer")
        if num_heads != num_key_value_heads:
            raise ValueError(
                f"{name}: num_heads={num_heads} must equal num_key_value_heads={num_key_value_heads} (as in fla)"
            )
        if head_v_dim <= 0:
            raise ValueError(f"{name}: hidden_size={hidden_size} is smaller than num_heads={num_heads}")
        self.hidden_size = hidden_size
        self.feature_dim = feature_dim
        self.num_heads = self.num_kv_heads = num_heads
        self.num_key_value_heads = num_key_value_heads
        self.num_kv_groups = 1
        self.head_k_dim, self.head_v_dim = feature_dim, head_v_dim
        self.head_dim = head_v_dim
        self.key_dim = self.key_dim_per_group = num_heads * feature_dim
        self.value_dim = self.value_dim_per_group = num_heads * head_v_dim
        self.causal, self.eps = causal, eps
        self.layer_idx = layer_idx

    def build_projections(self) -> None:
        """``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` (no bias), ``dropout`` (identity, as in fla)."""
        self.build_qkv(self.hidden_size, use_short_conv=False, conv_size=4, conv_bias=False)
        self.o_proj = nn.Linear(self.value_dim, self.hidden_size, bias=False)
        self.dropout = nn.Identity()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, feature_dim={self.feature_dim}, causal={self.causal}, eps={self.eps}"

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool | None = False,
        output_attentions: bool | None = False,
        cu_seqlens: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple:
        """As :meth:`LinearMixer.forward`; ``causal=False`` takes no cache."""
        if not self.causal and past_key_values is not None:
            raise ValueError(f"{type(self).__name__}: causal=False cannot use past_key_values (no decoding)")
        return super().forward(
            hidden_states, attention_mask, past_key_values, use_cache, output_attentions, cu_seqlens, **kwargs
        )

    def feature_maps(self, step, q, k, v):
        """``phi(q)``, ``phi(k)`` with the one shared map."""
        return self.feature_map(q), self.feature_map(k), v

    @property
    def supports_context_parallel(self) -> bool:
        """Causal layers run under ``cp_context`` (the state and the key sums pass between the ranks); a
        non-causal one attends to whole sequences."""
        return self.causal

    def mix(self, step: MixerStep, q, k, v):
        """Unnormalized linear attention (``scale=1``) from the cached ``S``, then :func:`normalize_by_key_sums`."""
        if step.cp is not None:  # the state and the key sums of the earlier ranks' tokens come in
            o, st = cp_chunk_op(self.chunk_op, step.cp, q, k, v, scale=1.0, normalize=False,
                                output_final_state=step.store, cu_seqlens=step.cu_seqlens)  # fmt: skip
            z0 = entering_key_sums(step.cp, k)
            o, zt = normalize_by_key_sums(o, q, k, z0, self.eps, step.cu_seqlens)
            return o, (st, zt) if step.store else None
        state = step.slot("recurrent_state")
        s0, z0 = (None, None) if state is None else state
        op = self.recurrent_op if self.use_recurrent(step) else self.chunk_op
        store = step.store or not self.causal
        o, st = op(
            q, k, v, scale=1.0, initial_state=s0, output_final_state=store, normalize=False,
            cu_seqlens=step.cu_seqlens,
        )  # fmt: skip
        if not self.causal:  # every token attends to its whole sequence: o_t = phi(q_t) S_T
            s_all = st.to(o.dtype)
            if step.cu_seqlens is None:
                o = torch.einsum("bthk,bhkv->bthv", q, s_all)
            else:  # per sequence on the padded batch (no [T, H, K, V] copy of the states)
                o = torch.einsum("nthk,nhkv->nthv", pad_sequences(q, step.cu_seqlens), s_all)
                o = unpad_sequences(o, step.cu_seqlens)
        o, zt = normalize_by_key_sums(o, q, k, z0, self.eps, step.cu_seqlens, self.causal)
        return o, (st, zt) if step.store else None

    def norm_and_gate(self, step, o):
        """No output norm or gate: ``o [.., H, V]`` -> ``[.., H * V]``."""
        return self.dropout(o.flatten(-2))


class BasedLinearAttention(FeatureMapLinearMixer):
    """Based token mixer (see the module docstring); fla 0.6.0's signature plus ``layer_idx``.

    Args:
        hidden_size: model width.
        feature_dim: q / k width per head before the Taylor map (default 16).
        num_key_value_heads: must equal ``num_heads`` (default 12).
        num_heads: heads (default 12); value heads are ``hidden_size // num_heads`` wide.
        feature_name: ``"taylor_exp"`` (the only one).
        eps: added to the normalizer ``phi(q_t) . z_t`` (default 1e-12).
        causal: causal (default) or whole-sequence attention (no cache then).
        mode: ``"parallel"`` (default), ``"chunk"``, ``"fused_chunk"`` (all run the chunk op) or
            ``"fused_recurrent"``.
        layer_idx: index in the cache (required when a cache is used).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    def __init__(
        self,
        hidden_size: int,
        feature_dim: int = 16,
        num_key_value_heads: int = 12,
        num_heads: int = 12,
        feature_name: str = "taylor_exp",
        eps: float = 1e-12,
        causal: bool = True,
        mode: str = "parallel",
        layer_idx: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        if feature_name != "taylor_exp":
            raise ValueError(f"BasedLinearAttention: feature_name={feature_name!r} is not supported ('taylor_exp')")
        head_v_dim = hidden_size // num_heads if isinstance(num_heads, int) and num_heads > 0 else 0
        self.setup_dims(
            mode, hidden_size, feature_dim, num_heads, num_key_value_heads, head_v_dim, causal, eps, layer_idx
        )
        self.feature_name = feature_name
        self.feature_map = TaylorFeatureMap(head_dim=feature_dim)
        self.build_projections()


__all__ = ["BASED_MODES", "BasedLinearAttention", "FeatureMapLinearMixer", "normalize_by_key_sums"]
