"""MesaNet (von Oswald et al. 2025, https://arxiv.org/abs/2506.05233), parameter-compatible with fla 0.6.0.

Per head (``num_heads`` heads of size ``head_dim`` for keys and values)::

    g_t    = logsigmoid(a_proj(x_t)),   beta_t = sigmoid(b_proj(x_t))        (a_proj, b_proj with bias)
    lamb   = softplus(lambda_params) + lambda_lower_bound                    ([num_heads, head_dim])
    H^kk_t = exp(g_t) H^kk_{t-1} + beta_t k_t k_t^T,   H^kv_t = exp(g_t) H^kv_{t-1} + beta_t k_t v_t^T
    o_t    = (H^kv_t)^T (H^kk_t + diag(lamb))^{-1} q_t                        (CG steps, see fla.ops.mesa_net)
    out_t  = o_proj(o_norm(o_t [, g_proj(x_t)]))

q and k pass SiLU short convolutions (always: fla 0.6.0 builds them whatever ``use_short_conv`` says) and
are L2-normalized inside the op; v is the plain projection. ``o_norm`` is a per-head RMSNorm, gated by
``swish(g_proj(x))`` with ``use_output_gate``.

As in fla 0.6.0, training, prefill and any multi-token input run
:func:`fla.ops.mesa_net.chunk_mesa_net` (``max_cg_step_training`` CG steps, from 0); one-token decoding from
a cached state runs :func:`fla.ops.mesa_net.fused_recurrent_mesa_net` (``max_cg_step_decoding`` steps). Unlike
fla 0.6.0, whose decoding step starts CG from the Jacobi guess, decoding starts from 0 like the chunk op: with
the CG guard ``eps`` the two starts end ~1e-3 apart, and from 0 cached decoding reproduces the full forward.
The cache holds ``recurrent_state = (H^kk [N, H, K, K], H^kv [N, H, K, V])`` float32 and
``conv_state = (q, k)``. Batches, padding and ``forward``: see :mod:`fla.layers.linear_mixer`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from fla.context_parallel import cp_mesa_net
from fla.layers.delta_net import DeltaMixer
from fla.layers.linear_mixer import MixerStep
from fla.modules.conv import ShortConvolution
from fla.ops.mesa_net import chunk_mesa_net, fused_recurrent_mesa_net

MESA_MODES = ("chunk",)
LAMBDA_INIT = 1.0  # softplus(lambda_params) + lambda_lower_bound starts here


class MesaNet(DeltaMixer):
    """MesaNet token mixer (see the module docstring).

    Args:
        hidden_size: model width.
        num_heads: heads; head_dim: key and value head size (``key_dim = value_dim = num_heads * head_dim``).
        mode: ``"chunk"`` (the only one).
        use_output_gate: gated output norm with ``g_proj``.
        use_short_conv: accepted for fla compatibility; the q / k convolutions are always built.
        conv_size, conv_bias: of the short convolutions.
        norm_eps: of ``o_norm``.
        lambda_lower_bound: the floor of ``lamb`` (keeps the solve well conditioned).
        max_cg_step_training, max_cg_step_decoding: CG steps of the chunk op and of decoding.
        layer_idx: index in the cache (required when a cache is used).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    supports_context_parallel = True
    chunk_op = staticmethod(chunk_mesa_net)
    recurrent_op = staticmethod(fused_recurrent_mesa_net)

    def __init__(
        self,
        hidden_size: int = 2048,
        num_heads: int = 16,
        head_dim: int = 128,
        mode: str = "chunk",
        use_output_gate: bool = False,
        use_short_conv: bool = True,
        conv_size: int = 4,
        conv_bias: bool = False,
        layer_idx: int | None = None,
        norm_eps: float = 1e-5,
        lambda_lower_bound: float = 0.25,
        max_cg_step_training: int = 30,
        max_cg_step_decoding: int = 30,
        **kwargs,
    ):
        super().__init__()
        self.check_mode(mode, MESA_MODES)
        if num_heads <= 0 or head_dim <= 0:
            raise ValueError(f"MesaNet: num_heads={num_heads} and head_dim={head_dim} must be positive")
        if not lambda_lower_bound < LAMBDA_INIT:
            raise ValueError(f"MesaNet: lambda_lower_bound={lambda_lower_bound} must be below {LAMBDA_INIT}")
        self.hidden_size, self.layer_idx = hidden_size, layer_idx
        self.num_heads = self.num_kv_heads = num_heads
        self.head_dim = self.head_k_dim = self.head_v_dim = head_dim
        self.key_dim = self.value_dim = self.key_dim_per_group = self.value_dim_per_group = num_heads * head_dim
        self.use_short_conv, self.conv_size, self.conv_bias = use_short_conv, conv_size, conv_bias
        self.lambda_lower_bound = lambda_lower_bound
        self.max_cg_step_training, self.max_cg_step_decoding = max_cg_step_training, max_cg_step_decoding

        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.a_proj = nn.Linear(hidden_size, num_heads, bias=True)
        self.b_proj = nn.Linear(hidden_size, num_heads, bias=True)
        self.lambda_params = nn.Parameter(torch.empty(self.key_dim, dtype=torch.float32))
        self.lambda_params._no_weight_decay = True
        self.q_conv1d = ShortConvolution(self.key_dim, conv_size, bias=conv_bias, activation="silu")
        self.k_conv1d = ShortConvolution(self.key_dim, conv_size, bias=conv_bias, activation="silu")
        self.build_o_norm(hidden_size, use_output_gate, norm_eps)
        self.reset_parameters()

    @property
    def use_output_gate(self) -> bool:
        return self.use_gate

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """``lambda_params = softplus^-1(1 - lambda_lower_bound)`` (so ``lamb`` starts at 1), as fla 0.6.0.

        Kept when loaded by transformers (``_is_hf_initialized``); meta tensors are skipped.
        """
        p = self.lambda_params
        if p.device.type == "meta" or getattr(p, "_is_hf_initialized", False):
            return
        p.fill_(math.log(math.expm1(LAMBDA_INIT - self.lambda_lower_bound)))

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, num_heads={self.num_heads}, head_dim={self.head_dim}, "
            f"use_output_gate={self.use_gate}, max_cg_step_training={self.max_cg_step_training}, "
            f"max_cg_step_decoding={self.max_cg_step_decoding}"
        )

    def use_recurrent(self, step: MixerStep) -> bool:
        """The decoding op for one new token after a cached prefix (fla 0.6.0's rule); the chunk op otherwise."""
        return step.state is not None and step.x.shape[1] == 1

    def project_qkv(self, step: MixerStep):
        """``q, k`` through the SiLU short convolutions (their states cached), ``v`` the plain projection."""
        x = step.x
        (q, k), conv_state = self.run_convs(step, (self.q_conv1d, self.k_conv1d), (self.q_proj(x), self.k_proj(x)))
        return q, k, self.v_proj(x), conv_state

    def lamb(self) -> torch.Tensor:
        """``softplus(lambda_params) + lambda_lower_bound`` as ``[num_heads, head_dim]`` float32."""
        lamb = F.softplus(self.lambda_params.float()) + self.lambda_lower_bound
        return lamb.view(-1, self.head_dim)

    def mix(self, step: MixerStep, q, k, v):
        """Gates from ``step.x``, then the chunk op or (one token after a cache) the decoding op."""
        g = F.logsigmoid(self.a_proj(step.x).float())
        beta = self.b_proj(step.x).float().sigmoid()
        if step.cp is not None:  # the states of the earlier ranks' tokens come in first (fla.context_parallel)
            o, h_kk, h_kv = cp_mesa_net(step.cp, q, k, v, g, beta, self.lamb(), output_final_state=step.store,
                                        max_CG_iteration=self.max_cg_step_training, use_qk_l2norm_in_kernel=True,
                                        cu_seqlens=step.cu_seqlens)  # fmt: skip
            return o, (h_kk, h_kv) if step.store else None
        h_kk, h_kv = step.slot("recurrent_state") or (None, None)
        recurrent = self.use_recurrent(step)
        op = self.recurrent_op if recurrent else self.chunk_op
        o, h_kk, h_kv = op(
            q, k, v, g, beta, self.lamb(), h_kk, h_kv,
            output_final_state=step.store,
            max_CG_iteration=self.max_cg_step_decoding if recurrent else self.max_cg_step_training,
            use_qk_l2norm_in_kernel=True,
            cu_seqlens=step.cu_seqlens,
        )  # fmt: skip
        return o, (h_kk, h_kv) if step.store else None


__all__ = ["MESA_MODES", "MesaNet"]
