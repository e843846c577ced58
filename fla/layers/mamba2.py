"""Mamba2 (Dao & Gu 2024, https://arxiv.org/abs/2405.21060), parameter-compatible with fla's ``Mamba2``.

One projection, one convolution, the SSD scan, a gated norm::

    z, xBC, dt = in_proj(u).split([d_inner, d_inner + 2 G N, H])
    x, B, C    = act(conv1d(xBC)).split([d_inner, G N, G N])          causal depthwise conv (ShortConvolution)
    y          = SSD(x, dt, A_log, B, C, D, dt_bias, dt_limit)        fla.ops.mamba2: per head h, group h // (H/G)
    out        = out_proj(norm(y, z))                                 RMSNormGated (groups of d_inner / G), or
                                                                      y * act(z) without ``rmsnorm``

with ``d_inner = expand * hidden_size = H * head_dim``. Training and prefill run
:func:`fla.ops.mamba2.chunk_mamba2_ssd`, decoding (at most 64 tokens outside training)
:func:`fla.ops.mamba2.fused_recurrent_mamba2_ssd`. The cache holds ``conv_state [N, conv_dim, conv_kernel]``
(the raw conv inputs) and ``recurrent_state [N, H, state_size, head_dim]`` float32 (fla 0.6.0 keeps it
transposed; checkpoints do not contain it). Batches, padding and ``cu_seqlens``: see
:mod:`fla.layers.linear_mixer` (a padded prefill is packed, so padding never enters the scan or the conv).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from transformers.activations import ACT2FN

from fla.context_parallel import cp_chunk_op
from fla.layers.linear_mixer import LinearMixer
from fla.layers.utils import repad
from fla.modules.conv import ShortConvolution
from fla.modules.gated_norm import RMSNormGated
from fla.ops.mamba2 import chunk_mamba2_ssd, fused_recurrent_mamba2_ssd
from fla.ops.mamba2.inputs import d_skip

if TYPE_CHECKING:
    from fla.models.cache import FLACache

FUSED_CONV_ACTIVATIONS = ("silu", "swish")  # applied inside ShortConvolution; others after it


def mamba2_dims(hidden_size: int, expand: int, head_dim: int, num_heads: int | None, n_groups: int) -> int:
    """The head count of a Mamba2 layer (``expand * hidden_size / head_dim``); ``ValueError`` on sizes that
    do not divide (``num_heads``, when given, must equal it; ``n_groups`` must divide it)."""
    inner = expand * hidden_size
    if abs(inner - round(inner)) > 1e-6 or round(inner) % head_dim != 0:
        raise ValueError(f"Mamba2: expand * hidden_size = {inner} is not a multiple of head_dim={head_dim}")
    heads = round(inner) // head_dim
    if num_heads and num_heads != heads:
        raise ValueError(
            f"Mamba2: num_heads={num_heads} but expand * hidden_size / head_dim = {round(inner)} / {head_dim} = {heads}"
        )
    if n_groups <= 0 or heads % n_groups != 0:
        raise ValueError(f"Mamba2: num_heads={heads} is not a multiple of n_groups={n_groups}")
    return heads


class Mamba2(LinearMixer):
    """Mamba2 token mixer (see the module docstring); fla 0.6.0's constructor and parameter names
    (``in_proj``, ``conv1d``, ``dt_bias``, ``A_log``, ``norm``, ``D``, ``out_proj``).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``. ``chunk_size`` and ``backend``
    are accepted for compatibility (the chunk pipeline has its own chunk size; the kernels are ours).
    """

    chunk_op = staticmethod(chunk_mamba2_ssd)
    supports_context_parallel = True
    recurrent_op = staticmethod(fused_recurrent_mamba2_ssd)

    def __init__(
        self,
        num_heads: int | None = None,
        head_dim: int = 64,
        hidden_size: int = 2048,
        state_size: int = 128,
        expand: int = 2,
        n_groups: int = 1,
        conv_kernel: int = 4,
        conv_init: float | None = None,
        use_conv_bias: bool = True,
        hidden_act: str = "silu",
        A_init_range: tuple[float, float] = (1, 16),
        D_has_hdim: bool = False,
        rmsnorm: bool = True,
        norm_before_gate: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit: tuple[float, float] = (0.0, float("inf")),
        use_bias: bool = False,
        norm_eps: float = 1e-5,
        chunk_size: int = 256,
        layer_idx: int | None = None,
        backend: str = "cuda",
        mode: str = "chunk",
    ):
        super().__init__()
        self.check_mode(mode)
        if hidden_act not in ACT2FN:
            raise ValueError(f"Mamba2: hidden_act={hidden_act!r} is not an activation name")
        self.num_heads = mamba2_dims(hidden_size, expand, head_dim, num_heads, n_groups)
        self.hidden_size, self.expand, self.head_dim = hidden_size, expand, head_dim
        self.intermediate_size = self.num_heads * head_dim
        self.ssm_state_size, self.n_groups = state_size, n_groups
        self.conv_kernel_size, self.conv_init, self.use_conv_bias = conv_kernel, conv_init, use_conv_bias
        self.activation, self.act = hidden_act, ACT2FN[hidden_act]
        self.A_init_range, self.D_has_hdim = tuple(A_init_range), D_has_hdim
        self.rmsnorm, self.norm_before_gate, self.norm_eps = rmsnorm, norm_before_gate, norm_eps
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.dt_limit = tuple(dt_limit)
        self.use_bias, self.chunk_size, self.layer_idx = use_bias, chunk_size, layer_idx

        self.conv_dim = self.intermediate_size + 2 * n_groups * state_size
        fused_act = hidden_act if hidden_act in FUSED_CONV_ACTIVATIONS else None
        self.conv1d = ShortConvolution(self.conv_dim, conv_kernel, bias=use_conv_bias, activation=fused_act)
        self.in_proj = nn.Linear(hidden_size, self.intermediate_size + self.conv_dim + self.num_heads, bias=use_bias)
        self.dt_bias = nn.Parameter(torch.empty(self.num_heads))
        self.A_log = nn.Parameter(torch.empty(self.num_heads))
        self.norm = None
        if rmsnorm:
            self.norm = RMSNormGated(
                self.intermediate_size, eps=norm_eps, norm_before_gate=norm_before_gate,
                group_size=self.intermediate_size // n_groups,
            )  # fmt: skip
        self.D = nn.Parameter(torch.empty(self.intermediate_size if D_has_hdim else self.num_heads))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.out_proj = nn.Linear(self.intermediate_size, hidden_size, bias=use_bias)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Mamba2's init: ``exp(A_log) ~ U(A_init_range)``, ``softplus(dt_bias)`` log-uniform in
        ``[dt_min, dt_max]`` (at least ``dt_init_floor``), ``D = 1``, the conv ``U(-conv_init, conv_init)``
        when ``conv_init`` is set. Parameters transformers loaded (``_is_hf_initialized``) are kept; meta
        tensors are skipped."""
        if self.A_log.device.type == "meta":
            return
        if not getattr(self.A_log, "_is_hf_initialized", False):
            self.A_log.copy_(torch.empty_like(self.A_log).uniform_(*self.A_init_range).log())
        if not getattr(self.dt_bias, "_is_hf_initialized", False):
            lo, hi = math.log(self.dt_min), math.log(self.dt_max)
            dt = (torch.rand_like(self.dt_bias) * (hi - lo) + lo).exp().clamp_min(self.dt_init_floor)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        if not getattr(self.D, "_is_hf_initialized", False):
            self.D.fill_(1.0)
        if self.conv_init is not None and not getattr(self.conv1d.weight, "_is_hf_initialized", False):
            self.conv1d.weight.uniform_(-self.conv_init, self.conv_init)

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, head_dim={self.head_dim}, state_size={self.ssm_state_size}, "
            f"n_groups={self.n_groups}"
        )

    def skip_weight(self) -> torch.Tensor:
        """``D`` as the op takes it: ``[H]`` or ``[H, head_dim]`` (``D_has_hdim``)."""
        return self.D.unflatten(0, (self.num_heads, self.head_dim)) if self.D_has_hdim else self.D

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: FLACache | None = None,
        use_cache: bool | None = False,
        output_attentions: bool | None = False,
        cu_seqlens: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None, FLACache | None]:
        """``hidden_states [B, T, hidden_size]`` -> ``(out [B, T, hidden_size], None, past_key_values)``;
        arguments as :meth:`fla.layers.linear_mixer.LinearMixer.forward`."""
        step = self.begin(hidden_states, attention_mask, past_key_values, cu_seqlens)
        step.cp = self.check_context_parallel(step, kwargs.get("cp_context"))
        G, N = self.n_groups, self.ssm_state_size
        z, xBC, dt = self.in_proj(step.x).split([self.intermediate_size, self.conv_dim, self.num_heads], dim=-1)
        (xBC,), conv_state = self.run_convs(step, (self.conv1d,), (xBC,))
        conv_state = conv_state and conv_state[0]
        if self.conv1d.activation is None:
            xBC = self.act(xBC)
        x, B, C = xBC.split([self.intermediate_size, G * N, G * N], dim=-1)
        x, B, C = x.unflatten(-1, (self.num_heads, self.head_dim)), B.unflatten(-1, (G, N)), C.unflatten(-1, (G, N))
        if step.cp is not None:  # the scan as an op of (q, k, v) = (C, B, x) over the split; the skip after it
            y, ssm_state = cp_chunk_op(_ssd_scan, step.cp, C, B, x, dt, A_log=self.A_log, dt_bias=self.dt_bias,
                                       dt_limit=self.dt_limit, cu_seqlens=step.cu_seqlens)  # fmt: skip
            y = d_skip(y, x, self.skip_weight())
        else:
            op = self.recurrent_op if self.use_recurrent(step) else self.chunk_op
            y, ssm_state = op(
                x, dt, self.A_log, B, C, self.skip_weight(), self.dt_bias, self.dt_limit,
                initial_state=step.slot("recurrent_state"), output_final_state=step.store,
                cu_seqlens=step.cu_seqlens,
            )  # fmt: skip
        y = y.flatten(-2)
        y = self.norm(y, z) if self.norm is not None else y * self.act(z)
        if step.cache is not None:
            step.cache.update(
                recurrent_state=ssm_state, conv_state=conv_state, layer_idx=self.layer_idx, offset=step.seq_len
            )
        out = self.out_proj(y)
        if step.info is not None:
            out = repad(out[0], step.info)
        return out, None, step.cache


def _ssd_scan(C, B, x, dt, *, A_log, dt_bias, dt_limit, initial_state=None, output_final_state=False,
              cu_seqlens=None):  # fmt: skip
    """:func:`chunk_mamba2_ssd` without the skip, with fla's op argument order ``(q, k, v, *gates)`` =
    ``(C, B, x, dt)``: the form :func:`fla.context_parallel.cp_chunk_op` runs (its state ``[.., N, P]`` is linear
    in the state and ``x``, the transition ``exp(A dt)`` a scalar)."""
    return chunk_mamba2_ssd(x, dt, A_log, B, C, None, dt_bias, dt_limit, initial_state=initial_state,
                            output_final_state=output_final_state, cu_seqlens=cu_seqlens)  # fmt: skip


__all__ = ["Mamba2", "mamba2_dims"]
