"""Rodimus (He et al. 2025, https://arxiv.org/abs/2410.06577), parameter-compatible with fla 0.6.0.

:class:`RodimusAttention` is a one-head GLA whose state ``[K = expand_ratio, V = d_inner]`` is read and
written through a gated, normalized key (``d_inner = align_multiple(2 * hidden_size, 8)``)::

    x_t     = up_proj(h_t),  z_t = gate_proj(h_t)                    [d_inner] each
    s_t     = silu(short_conv(x))_t   (x_t without short convolutions)
    q_t     = q_proj(s_t),   k_t = k_proj(s_t)                       [K]
    v_t     = sigmoid(i_gate_proj(x_t)) * x_t                        [d_inner] (low-rank input gate)
    g_t     = softplus(g_gate_proj(s_t)),  tau_t = sigmoid(tau_gate_proj(s_t))   [K]
    k_t     = k_t / max(|k_t|_2, k_norm_eps) * g_t ** tau_t          input gate on the normalized key
    S_t     = diag(exp(-g_t * tau_t)) S_{t-1} + k_t^T v_t,          o_t = q_t S_t / sqrt(K)
    y_t     = o_t + s_t * residual_weight                            (float32 residual when residual_in_fp32)
    out_t   = down_proj(RMSNorm(y_t * silu(z_t)))                    gate before the norm (``activation_norm``)

Training and prefill run :func:`fla.ops.gla.chunk_gla`, decoding :func:`fla.ops.gla.fused_recurrent_gla`;
padding, varlen and the cache (``recurrent_state [N, 1, K, d_inner]``, ``conv_state [N, d_inner, W]``)
come from :class:`fla.layers.linear_mixer.LinearMixer`.

:class:`SlidingWindowSharedKeyAttention` (SW-SKA, the second mixer of a ``rodimus_plus`` block) is softmax
attention with ``num_heads`` query and value heads that all share one key head (``k_proj [head_dim,
hidden]``) and a sliding window; it is :class:`fla.layers.attn.Attention` (RoPE, qk-norm, padding, varlen,
cache, backends) whose key projection is repeated to every head.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fla.layers.attn import Attention
from fla.layers.linear_mixer import LinearMixer
from fla.modules.conv import ShortConvolution
from fla.modules.gated_norm import rms_norm_gated
from fla.modules.norm import RMSNorm
from fla.ops.gla import chunk_gla, fused_recurrent_gla

RODIMUS_MODES = ("chunk", "fused_recurrent")  # fla's
RODIMUS_BLOCK_TYPES = ("rodimus", "rodimus_plus")


def align_multiple(value: int, multiple_size: int = 8) -> int:
    """``value`` rounded up to a multiple of ``multiple_size`` (fla's helper: ``d_inner``, the MLP width)."""
    return value if value % multiple_size == 0 else value + multiple_size - value % multiple_size


def input_gate_rank(hidden_size: int, input_gate_low_rank, where: str = "RodimusAttention") -> int:
    """The low rank of the input gate: ``"auto"`` is ``max(hidden_size // 64, 16)`` (fla's)."""
    if input_gate_low_rank == "auto":
        return max(hidden_size // 64, 16)
    if isinstance(input_gate_low_rank, bool) or not isinstance(input_gate_low_rank, int) or input_gate_low_rank <= 0:
        raise ValueError(f"{where}: input_gate_low_rank must be 'auto' or a positive int, got {input_gate_low_rank!r}")
    return input_gate_low_rank


class RodimusAttention(LinearMixer):
    """Rodimus token mixer (fla's ``RodimusAttention`` signature and parameter names; see the module docstring).

    Args:
        block_type: ``"rodimus"`` or ``"rodimus_plus"`` (recorded; the cache layout is the same for both).
        mode: ``"chunk"`` (default) or ``"fused_recurrent"``.
        hidden_size: model width; the mixer works at ``d_inner = align_multiple(2 * hidden_size, 8)``.
        input_gate_low_rank: rank of the input gate (``"auto"``: ``max(hidden_size // 64, 16)``).
        expand_ratio: the state's key width ``K`` (``mem_size``).
        use_short_conv, conv_size, conv_bias: a SiLU short convolution over ``d_inner``.
        norm_eps: of ``activation_norm``; k_norm_eps: of the key L2 normalization (``None``: 1e-12).
        residual_in_fp32: ``residual_weight`` (and the skip term) in float32.
        layer_idx: index in the cache (required with a cache).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    supports_context_parallel = True
    chunk_op = staticmethod(chunk_gla)
    recurrent_op = staticmethod(fused_recurrent_gla)

    def __init__(
        self,
        block_type: str = "rodimus",
        mode: str = "chunk",
        hidden_size: int = 1024,
        input_gate_low_rank: float | str | None = "auto",
        expand_ratio: int = 64,
        use_short_conv: bool = True,
        conv_size: int = 4,
        conv_bias: bool = True,
        norm_eps: float = 1e-5,
        k_norm_eps: float | None = None,
        residual_in_fp32: bool = True,
        layer_idx: int | None = None,
    ):
        super().__init__()
        name = type(self).__name__
        if block_type not in RODIMUS_BLOCK_TYPES:
            raise ValueError(f"{name}: block_type={block_type!r} is not one of {RODIMUS_BLOCK_TYPES}")
        self.check_mode(mode, RODIMUS_MODES)
        if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size <= 0:
            raise ValueError(f"{name}: hidden_size must be a positive int, got {hidden_size!r}")
        if isinstance(expand_ratio, bool) or not isinstance(expand_ratio, int) or expand_ratio <= 0:
            raise ValueError(f"{name}: expand_ratio must be a positive int, got {expand_ratio!r}")
        self.block_type = block_type
        self.hidden_size = hidden_size
        self.d_inner = align_multiple(2 * hidden_size, 8)
        self.expand_ratio = self.mem_size = expand_ratio
        self.input_gate_low_rank = input_gate_rank(hidden_size, input_gate_low_rank, name)
        self.norm_eps = norm_eps
        self.k_norm_eps = 1e-12 if k_norm_eps is None else k_norm_eps
        self.residual_in_fp32 = residual_in_fp32
        self.layer_idx = layer_idx
        self.feature_map, self.feature_map_fn = None, None
        # one head: key width K = mem_size, value width d_inner (sets num_heads, head_{k,v}_dim, ...)
        self.num_heads = self.num_kv_heads = 1
        self.key_dim = self.head_k_dim = self.mem_size
        self.value_dim = self.head_v_dim = self.d_inner
        self.use_short_conv, self.conv_size, self.conv_bias = use_short_conv, conv_size, conv_bias
        self.use_output_gate, self.fuse_norm_and_gate = True, False

        d, m = self.d_inner, self.mem_size
        self.gate_proj = nn.Linear(hidden_size, d, bias=False)
        self.up_proj = nn.Linear(hidden_size, d, bias=False)
        self.activation_norm = RMSNorm(d, eps=norm_eps)
        self.down_proj = nn.Linear(d, hidden_size, bias=False)
        if use_short_conv:
            self.short_conv = ShortConvolution(d, conv_size, bias=conv_bias, activation="silu")
        self.residual_weight = nn.Parameter(torch.ones(d, dtype=torch.float32 if residual_in_fp32 else None))
        self.k_proj = nn.Linear(d, m, bias=False)
        self.q_proj = nn.Linear(d, m, bias=False)
        self.g_gate_proj = nn.Linear(d, m, bias=True)
        self.tau_gate_proj = nn.Linear(d, m, bias=True)
        self.i_gate_proj = nn.Sequential(
            nn.Linear(d, self.input_gate_low_rank, bias=False),
            nn.Linear(self.input_gate_low_rank, d, bias=True),
            nn.Sigmoid(),
        )

    @property
    def o_proj(self) -> nn.Linear:
        """The base's output projection is fla's ``down_proj`` here (one module, one parameter name)."""
        return self.down_proj

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, d_inner={self.d_inner}, mem_size={self.mem_size}, block_type={self.block_type!r}"

    def project_qkv(self, step) -> tuple:
        """``q, k [.., K]`` from the (convolved) ``s``, ``v = sigmoid(i_gate_proj(x)) * x [.., d_inner]`` and the
        conv state; ``s`` and the gate ``z`` go to ``step.extras`` (``"shift"``, ``"gate"``)."""
        x = self.up_proj(step.x)
        step.extras["gate"] = self.gate_proj(step.x)
        conv_state = None
        if self.use_short_conv:  # from the cached state or, under context parallel, the previous rank's inputs
            (s,), conv_state = self.run_convs(step, (self.short_conv,), (x,))
            conv_state = conv_state and conv_state[0]
        else:
            s = x
        step.extras["shift"] = s
        return self.q_proj(s), self.k_proj(s), self.i_gate_proj(x) * x, conv_state

    def mix(self, step, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple:
        """Gates ``g, tau`` from ``s``, the normalized gated key, then chunk / recurrent GLA (one head)."""
        s = step.extras["shift"]
        g = F.softplus(F.linear(s, self.g_gate_proj.weight) + self.g_gate_proj.bias.float())
        tau = torch.sigmoid(F.linear(s, self.tau_gate_proj.weight) + self.tau_gate_proj.bias.float())
        k = F.normalize(k.float(), dim=-1, eps=self.k_norm_eps) * (g**tau).unsqueeze(-2)
        log_decay = (-g * tau).unsqueeze(-2)
        q, k, log_decay = (t.to(v.dtype) for t in (q, k, log_decay))
        return self.run(step, q, k, v, log_decay)

    def norm_and_gate(self, step, o: torch.Tensor) -> torch.Tensor:
        """``RMSNorm((o + s * residual_weight) * silu(z))`` over ``d_inner``: ``o [.., 1, d_inner] -> [.., d_inner]``.

        (fla's ``RMSNormGated(norm_before_gate=False)``: the gate acts before the norm.)
        """
        s = step.extras["shift"]
        skip = (s.float() if self.residual_in_fp32 else s) * self.residual_weight
        y = (o.squeeze(-2) + skip).to(o.dtype)
        norm = self.activation_norm  # the gated norm's kernels form y * silu(z) in fp32 and save only y and z
        return rms_norm_gated(
            y, step.extras["gate"].to(y.dtype), norm.weight, norm.bias, "swish", norm.eps, norm_before_gate=False
        )


class SharedKeyLinear(nn.Linear):
    """``nn.Linear(in, head_dim)`` whose output is repeated ``repeats`` times along the last dim, so the one
    shared key head reaches every attention head (parameters: ``weight [head_dim, in]``, ``bias``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, repeats: int):
        super().__init__(in_features, out_features, bias=bias)
        self.repeats = repeats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y.repeat(*([1] * (y.dim() - 1)), self.repeats)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, repeats={self.repeats}"


class SlidingWindowSharedKeyAttention(Attention):
    """SW-SKA (fla's ``SlidingWindowSharedKeyAttention`` signature and parameter names): ``num_heads`` query
    and value heads over one shared key head, causal within a sliding window of ``window_size`` tokens.

    Everything but the key projection is :class:`fla.layers.attn.Attention`'s (``q_proj``, ``v_proj``,
    ``o_proj``, ``q_norm``/``k_norm`` with ``qk_norm``, RoPE, padding, varlen, cache, backends). The cache
    holds the key repeated per head (``[B, W, num_heads, head_dim]``).
    """

    def __init__(
        self,
        hidden_size: int = 2048,
        num_heads: int = 32,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        window_size: int | None = 2048,
        rope_theta: float | None = 10000.0,
        max_position_embeddings: int | None = None,
        layer_idx: int | None = None,
    ):
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads <= 0:
            raise ValueError(f"SlidingWindowSharedKeyAttention: num_heads must be a positive int, got {num_heads!r}")
        super().__init__(
            hidden_size=hidden_size,
            num_heads=num_heads,
            num_kv_heads=num_heads,
            qkv_bias=qkv_bias,
            qk_norm=qk_norm,
            window_size=window_size,
            rope_theta=rope_theta,
            max_position_embeddings=max_position_embeddings,
            layer_idx=layer_idx,
        )
        self.k_proj = SharedKeyLinear(hidden_size, self.head_dim, bias=qkv_bias, repeats=num_heads)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", shared_key=True"


__all__ = [
    "RODIMUS_BLOCK_TYPES",
    "RODIMUS_MODES",
    "RodimusAttention",
    "SharedKeyLinear",
    "SlidingWindowSharedKeyAttention",
    "align_multiple",
]
