"""LightNet (Qin et al. 2024, "You Only Scan Once", https://arxiv.org/abs/2405.21022), parameter-compatible
with fla 0.6.0.

Per head (``K = expand_ratio``, ``V = hidden_size / H``), with key logits ``k_t`` normalized by their
running log-sum-exp ``z`` over the sequence (see ``fla/ops/lightnet/README.md``)::

    z_t   = logaddexp(z_{t-1}, k_t)
    S_t   = diag(exp(z_{t-1} - z_t)) S_{t-1} + exp(k_t - z_t)^T v_t,      o_t = swish(q_t) S_t / sqrt(K)
    out_t = o_proj(RMSNorm(o_t) * swish(g_proj(x_t)))       RMSNorm over all heads (hidden_size wide)

``g_proj`` is low rank (``Linear(hidden, gate_low_rank_dim)`` then ``Linear(gate_low_rank_dim, hidden)``).
Parameters (fla's names): ``q_proj``, ``k_proj`` (``[H * K, hidden]``), ``v_proj`` (``[hidden, hidden]``),
``{q,k,v}_conv1d`` (short convolutions without activation), ``g_proj.{0,1}``, ``g_norm``, ``o_proj``.
Training and prefill run :func:`fla.ops.lightnet.chunk_lightnet`; decoding (at most 64 tokens outside
training) :func:`fla.ops.lightnet.fused_recurrent_lightnet`. The cached ``recurrent_state`` is the pair
``(S [N, H, K, V], z [N, 1, H, K])``. Batches, padding, the cache: :mod:`fla.layers.linear_mixer`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fla.context_parallel import cp_lightnet
from fla.layers.linear_mixer import LinearMixer, MixerStep
from fla.modules.conv import ShortConvolution
from fla.modules.gated_norm import FusedRMSNormGated
from fla.ops.lightnet import chunk_lightnet, fused_recurrent_lightnet

LIGHTNET_MODES = ("chunk", "fused_recurrent")


def lightnet_heads(hidden_size: int, num_heads: int | None, expand_ratio: int | None, where: str = "LightNet") -> tuple:
    """``(num_heads, expand_ratio)`` as fla 0.6.0's layer resolves them: the missing one is derived
    (``num_heads = hidden_size // expand_ratio`` or ``expand_ratio = hidden_size // num_heads``); both
    given are used as they are. ``ValueError`` when neither is given or a value is not a positive int."""
    for name, value in (("num_heads", num_heads), ("expand_ratio", expand_ratio)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ValueError(f"{where}: {name} must be a positive int or None, got {value!r}")
    if num_heads is None and expand_ratio is None:
        raise ValueError(f"{where}: one of num_heads and expand_ratio must be given (both are None)")
    if num_heads is None:
        num_heads = hidden_size // expand_ratio
        if num_heads == 0:
            raise ValueError(f"{where}: expand_ratio={expand_ratio} is larger than hidden_size={hidden_size}")
    elif expand_ratio is None:
        expand_ratio = hidden_size // num_heads
        if expand_ratio == 0:
            raise ValueError(f"{where}: num_heads={num_heads} is larger than hidden_size={hidden_size}")
    if hidden_size % num_heads != 0:
        raise ValueError(f"{where}: hidden_size={hidden_size} is not a multiple of num_heads={num_heads}")
    return num_heads, expand_ratio


class LightNetAttention(LinearMixer):
    """LightNet token mixer (fla's ``LightNetAttention`` signature and parameter names).

    Args:
        mode: ``"chunk"`` (default) or ``"fused_recurrent"`` for training / prefill.
        hidden_size: model width (= the value width ``H * V``).
        num_heads, expand_ratio: heads and per-head key width ``K`` (the missing one is derived, as in fla).
        use_short_conv, conv_size, conv_bias: short convolutions (no activation) on q, k, v.
        gate_low_rank_dim: rank of the output-gate projection ``g_proj``.
        elementwise_affine, norm_eps: of the gated output RMSNorm over ``hidden_size``.
        layer_idx: index in the cache (required with a cache).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    supports_context_parallel = True
    cp_op = staticmethod(cp_lightnet)
    chunk_op = staticmethod(chunk_lightnet)
    recurrent_op = staticmethod(fused_recurrent_lightnet)

    def __init__(
        self,
        mode: str = "chunk",
        hidden_size: int = 1024,
        num_heads: int | None = None,
        expand_ratio: int | None = 128,
        use_short_conv: bool = False,
        conv_size: int = 4,
        conv_bias: bool = False,
        gate_low_rank_dim: int = 128,
        elementwise_affine: bool | None = True,
        norm_eps: float = 1e-5,
        layer_idx: int | None = None,
    ):
        super().__init__()
        num_heads, expand_ratio = lightnet_heads(hidden_size, num_heads, expand_ratio, type(self).__name__)
        self.check_mode(mode, LIGHTNET_MODES)
        self.hidden_size = hidden_size
        self.expand_ratio = expand_ratio
        self.gate_low_rank_dim = gate_low_rank_dim
        key_dim = num_heads * expand_ratio
        # key width H * K (q, k), value width hidden_size: sets num_heads, key_dim, value_dim, head_{k,v}_dim
        self.check_dims(hidden_size, key_dim / hidden_size, 1.0, num_heads, None)
        self.feature_map, self.feature_map_fn, self.qkv_activations = None, None, None
        self.layer_idx = layer_idx
        self.use_short_conv, self.conv_size, self.conv_bias = use_short_conv, conv_size, conv_bias
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        if use_short_conv:
            self.q_conv1d = ShortConvolution(self.key_dim, conv_size, bias=conv_bias, activation=None)
            self.k_conv1d = ShortConvolution(self.key_dim, conv_size, bias=conv_bias, activation=None)
            self.v_conv1d = ShortConvolution(self.value_dim, conv_size, bias=conv_bias, activation=None)
        self.use_output_gate, self.fuse_norm_and_gate = True, True
        self.g_proj = nn.Sequential(
            nn.Linear(hidden_size, gate_low_rank_dim, bias=False),
            nn.Linear(gate_low_rank_dim, hidden_size, bias=False),
        )
        self.g_norm = FusedRMSNormGated(hidden_size, elementwise_affine=bool(elementwise_affine), eps=norm_eps)
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, expand_ratio={self.expand_ratio}, gate_low_rank_dim={self.gate_low_rank_dim}"

    def feature_maps(self, step: MixerStep, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple:
        """``swish(q)``; ``k`` stays the raw key logits (the op normalizes them)."""
        return F.silu(q), k, v

    def norm_and_gate(self, step: MixerStep, o: torch.Tensor) -> torch.Tensor:
        """RMSNorm over all heads together, gated by ``swish(g_proj(x))``: ``[.., H, V] -> [.., hidden_size]``."""
        return self.g_norm(o.flatten(-2), self.g_proj(step.x))


__all__ = ["LIGHTNET_MODES", "LightNetAttention", "lightnet_heads"]
