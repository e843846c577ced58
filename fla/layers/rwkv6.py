"""RWKV6 time mixing ("Eagle and Finch", Peng et al. 2024, https://arxiv.org/abs/2404.05892), parameter-compatible
with fla 0.6.0's ``RWKV6Attention``.

Every projection reads a data-dependent interpolation between the token and its predecessor
(``delta = x_{t-1} - x``, :func:`fla.modules.token_shift.token_shift`)::

    m          = x_bias + tanh(x_proj.0(x + delta * x_proj.0.mu)) @ x_proj.2   (five mixes: r, w, k, v, g)
    y_proj(x)  = linear(x + delta * m_y)                                       y in r, w, k, v, g
    w          = -exp(w_proj(x))                                               (w_proj low rank: LoRA)
    o          = RWKV6(r, k, v, w, u = bonus), scale 1      (:func:`fla.ops.rwkv6.chunk_rwkv6`)
    out        = o_proj(GroupNorm_heads(o) * swish(g))

Batches, padding, the cache (``recurrent_state`` and, as ``conv_state``, the last token ``[N, hidden]``) and
``forward`` come from :class:`fla.layers.linear_mixer.LinearMixer`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from transformers.activations import ACT2FN

from fla.layers.linear_mixer import LinearMixer, MixerStep, split_heads
from fla.modules.norm import GroupNorm, group_norm
from fla.modules.token_shift import token_shift
from fla.ops.rwkv6 import chunk_rwkv6, fused_recurrent_rwkv6

RWKV6_MODES = ("chunk", "fused_recurrent")


class LoRA(nn.Module):
    """``Linear(input, low_rank, bias=False) -> activation -> Linear(low_rank, output, bias)`` as ``lora.{0,2}``
    (fla's names); ``activation``: ``tanh`` (default), ``sigmoid``, ``relu`` or ``None``."""

    def __init__(self, input_dim: int, output_dim: int, low_rank_dim: int, bias: bool = True, activation="tanh"):
        super().__init__()
        acts = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU, None: nn.Identity}
        if activation not in acts:
            raise ValueError(f"LoRA: activation={activation!r} is not one of {tuple(acts)}")
        self.input_dim, self.output_dim, self.low_rank_dim, self.bias = input_dim, output_dim, low_rank_dim, bias
        self.lora = nn.Sequential(
            nn.Linear(input_dim, low_rank_dim, bias=False),
            acts[activation](),
            nn.Linear(low_rank_dim, output_dim, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora(x)


def _projection(input_dim: int, output_dim: int, low_rank_dim: int | None) -> nn.Module:
    if low_rank_dim is None:
        return nn.Linear(input_dim, output_dim, bias=False)
    return LoRA(input_dim, output_dim, low_rank_dim)


class LerpLinear(nn.Module):
    """``linear(x + delta * mu)`` with a learned mix ``mu [input_dim]`` (zeros at init); ``delta`` defaults to
    the token shift of ``x``. ``linear``: a Linear, or a :class:`LoRA` with ``low_rank_dim``."""

    def __init__(self, input_dim: int, output_dim: int, low_rank_dim: int | None = None):
        super().__init__()
        self.input_dim, self.output_dim, self.low_rank_dim = input_dim, output_dim, low_rank_dim
        self.linear = _projection(input_dim, output_dim, low_rank_dim)
        self.mu = nn.Parameter(torch.zeros(input_dim))

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.mu)

    def forward(
        self, x: torch.Tensor, delta: torch.Tensor | None = None, cu_seqlens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x, delta [.., input_dim]`` -> ``[.., output_dim]``."""
        if delta is None:
            delta = token_shift(x, cu_seqlens)
        return self.linear(x + delta * self.mu)


class DDLerpLinear(nn.Module):
    """``linear(x + delta * mu)`` with a data-dependent mix ``mu [.., input_dim]`` given by the caller."""

    def __init__(self, input_dim: int, output_dim: int, low_rank_dim: int | None = None):
        super().__init__()
        self.input_dim, self.output_dim, self.low_rank_dim = input_dim, output_dim, low_rank_dim
        self.linear = _projection(input_dim, output_dim, low_rank_dim)

    def forward(
        self,
        x: torch.Tensor,
        mu: torch.Tensor,
        delta: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x, mu, delta [.., input_dim]`` -> ``[.., output_dim]``."""
        if delta is None:
            delta = token_shift(x, cu_seqlens)
        return self.linear(x + delta * mu)


class RWKV6Attention(LinearMixer):
    """RWKV6 time mixing (see the module docstring).

    Args:
        mode: ``"chunk"`` (default) or ``"fused_recurrent"`` for training / prefill.
        hidden_size: model width; expand_k, expand_v: key / value widths per ``hidden_size`` (0.5 / 1).
        num_heads: heads (the bonus is ``[num_heads, head_k_dim]``).
        gate_fn: output-gate activation (default ``swish``).
        proj_low_rank_dim: rank of the five data-dependent mixes (``x_proj``); gate_low_rank_dim: of ``w_proj``.
        fuse_norm: accepted (fla's signature); the output GroupNorm is fla's fused one either way.
        elementwise_affine, norm_eps: of the output GroupNorm (one group per head, with bias).
        layer_idx: index in the cache (required when a cache is used).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    chunk_op = staticmethod(chunk_rwkv6)
    supports_context_parallel = True
    recurrent_op = staticmethod(fused_recurrent_rwkv6)

    def __init__(
        self,
        mode: str = "chunk",
        hidden_size: int = 1024,
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        num_heads: int = 4,
        gate_fn: str = "swish",
        proj_low_rank_dim: int = 32,
        gate_low_rank_dim: int = 64,
        fuse_norm: bool = True,
        elementwise_affine: bool | None = True,
        norm_eps: float = 1e-5,
        layer_idx: int | None = None,
        **kwargs,
    ):
        super().__init__()
        self.setup(mode, hidden_size, expand_k, expand_v, num_heads, None, layer_idx, modes=RWKV6_MODES)
        self.proj_low_rank_dim, self.gate_low_rank_dim = proj_low_rank_dim, gate_low_rank_dim
        self.x_proj = nn.Sequential(
            LerpLinear(hidden_size, proj_low_rank_dim * 5),
            nn.Tanh(),
            nn.Linear(proj_low_rank_dim * 5, hidden_size, bias=False),
        )
        self.x_bias = nn.Parameter(torch.zeros(5, hidden_size))
        self.r_proj = DDLerpLinear(hidden_size, self.key_dim)
        self.w_proj = DDLerpLinear(hidden_size, self.key_dim, low_rank_dim=gate_low_rank_dim)
        self.k_proj = DDLerpLinear(hidden_size, self.key_dim)
        self.v_proj = DDLerpLinear(hidden_size, self.value_dim)
        self.g_proj = DDLerpLinear(hidden_size, self.value_dim)
        self.bonus = nn.Parameter(torch.zeros(num_heads, self.head_k_dim))
        self.g_norm = GroupNorm(
            num_heads, self.value_dim, elementwise_affine=bool(elementwise_affine), bias=True, eps=norm_eps
        )
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)
        self.gate_fn = ACT2FN[gate_fn]

    def reset_parameters(self) -> None:
        """The mixes' biases and the bonus start at zero (as in fla)."""
        nn.init.zeros_(self.x_bias)
        nn.init.zeros_(self.bonus)

    def mixes(self, x: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The five data-dependent mixes ``m_r, m_w, m_k, m_v, m_g`` ``[.., hidden_size]`` of ``x, delta``."""
        rank = self.proj_low_rank_dim
        low = torch.tanh(self.x_proj[0](x, delta)).unflatten(-1, (5, rank))  # [.., 5, R]
        up = self.x_proj[2].weight.view(self.hidden_size, 5, rank)  # [D, 5, R]
        mixes = torch.einsum("...nr,dnr->...nd", low, up)  # [.., 5, D]
        # in the matmul's dtype: under autocast the fp32 bias would promote the five mixes to fp32, and each
        # lerp then saves its fp32 mix for the backward (20 KiB per token and layer at 340M sizes)
        return (mixes + self.x_bias.to(mixes.dtype)).unbind(-2)

    def project_qkv(self, step: MixerStep):
        """``r [.., key_dim]``, ``k``, ``v [.., value_dim]`` and, as the conv state, each sequence's last token
        ``[N, hidden_size]``; ``w`` and the gate ``g`` go to ``step.extras``."""
        x = step.x
        delta, last = self.token_shift_delta(step)
        m_r, m_w, m_k, m_v, m_g = self.mixes(x, delta)
        step.extras["w"] = self.w_proj(x, m_w, delta)
        step.extras["g"] = self.g_proj(x, m_g, delta)
        r, k, v = self.r_proj(x, m_r, delta), self.k_proj(x, m_k, delta), self.v_proj(x, m_v, delta)
        return r, k, v, last if step.store else None

    def mix(self, step: MixerStep, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Log decays ``w = -exp(w_proj)`` and the bonus -> chunk / recurrent RWKV6 (scale 1, as in fla)."""
        w = -torch.exp(split_heads(step.extras["w"], self.head_k_dim))
        return self.run(step, q, k, v, w, u=self.bonus, scale=1.0)  # u: per head, no time axis

    def norm_and_gate(self, step: MixerStep, o: torch.Tensor) -> torch.Tensor:
        """GroupNorm over the heads (``[.., H, V]`` -> ``[.., H * V]``; one group per head of this layer, so a
        tensor-parallel rank with its share of the heads normalizes its own), times ``gate_fn(g)``."""
        norm = self.g_norm
        o = group_norm(o.flatten(-2), norm.weight, norm.bias, self.num_heads, eps=norm.eps)
        return o * self.gate_fn(step.extras["g"])


__all__ = ["DDLerpLinear", "LerpLinear", "LoRA", "RWKV6Attention"]
