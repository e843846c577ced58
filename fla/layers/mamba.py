"""Mamba (Gu & Dao 2023, https://arxiv.org/abs/2312.00752), parameter-compatible with fla 0.6.0's ``Mamba``.

With ``Di = intermediate_size`` channels and ``Ds = state_size`` states per channel::

    x, z   = in_proj(h_t).chunk(2)                           [Di] each
    x      = silu(conv1d(x))                                 causal depthwise conv (ShortConvolution)
    dt, B, C = x_proj(x).split(dt_rank, Ds, Ds)
    dt     = softplus(dt_proj(dt))                           [Di]  (dt_proj's bias is the op's dt_bias)
    y      = selective_scan(x, dt, A = -exp(A_log), B, C, D, z)   :func:`fla.ops.mamba.chunk_selective_scan`
    out_t  = out_proj(y_t)

Parameters (fla's names): ``in_proj [2 Di, hidden]``, ``conv1d`` (weight ``[Di, 1, conv_kernel]``, bias),
``x_proj [dt_rank + 2 Ds, Di]``, ``dt_proj [Di, dt_rank]`` (+ bias), ``A_log [Di, Ds]``, ``D [Di]``,
``out_proj [hidden, Di]``. Batches, padding and the cache (``recurrent_state [N, Di, Ds]`` float32,
``conv_state [N, Di, conv_kernel]``) come from :class:`fla.layers.linear_mixer.LinearMixer`; decoding (at most
64 tokens outside training) runs the token-by-token op.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from fla.context_parallel import cp_selective_scan
from fla.layers.linear_mixer import RECURRENT_MAX_LEN, LinearMixer, MixerStep
from fla.layers.utils import repad as repad_tokens
from fla.modules.conv import ShortConvolution
from fla.ops.mamba import chunk_selective_scan, fused_recurrent_selective_scan
from fla.ops.mamba.inputs import MAX_STATE_SIZE

if TYPE_CHECKING:
    from fla.models.cache import FLACache

MAMBA_ACTS = ("silu", "swish")  # the conv activation; the output gate is silu(z) (fla's fast path)
DT_INITS = ("random", "constant")


def mamba_dt_rank(hidden_size: int, dt_rank) -> int:
    """``ceil(hidden_size / 16)`` for ``"auto"`` (fla's), else the given positive int."""
    if dt_rank == "auto":
        return math.ceil(hidden_size / 16)
    if isinstance(dt_rank, bool) or not isinstance(dt_rank, int) or dt_rank <= 0:
        raise ValueError(f"dt_rank must be 'auto' or a positive int, got {dt_rank!r}")
    return dt_rank


def check_mamba_sizes(where: str, state_size, conv_kernel, intermediate_size, hidden_act) -> None:
    """``ValueError`` naming the field for sizes the layer cannot build or run."""
    if isinstance(state_size, bool) or not isinstance(state_size, int) or not 1 <= state_size <= MAX_STATE_SIZE:
        raise ValueError(f"{where}: state_size={state_size!r} must be an int in 1 .. {MAX_STATE_SIZE}")
    for name, value in (("conv_kernel", conv_kernel), ("intermediate_size", intermediate_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{where}: {name}={value!r} must be a positive int")
    if hidden_act not in MAMBA_ACTS:
        raise ValueError(f"{where}: hidden_act={hidden_act!r} is not one of {MAMBA_ACTS} (the conv activation)")


class Mamba(LinearMixer):
    """Mamba's selective-SSM token mixer (fla's ``Mamba`` signature and parameter names).

    Args:
        hidden_size: model width; intermediate_size: ``Di``; state_size: ``Ds`` (at most 64).
        conv_kernel, use_conv_bias: the causal depthwise convolution; hidden_act: its activation.
        dt_rank: rank of the step-size projection (``"auto"``: ``ceil(hidden_size / 16)``).
        dt_min, dt_max, dt_init, dt_scale, dt_init_floor: initialization of ``dt_proj`` (see
            :meth:`reset_parameters`); use_bias: biases of ``in_proj`` / ``out_proj``.
        layer_idx: index in the cache (required with a cache).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    mode = "chunk"
    supports_context_parallel = True
    chunk_op = staticmethod(chunk_selective_scan)
    recurrent_op = staticmethod(fused_recurrent_selective_scan)

    def __init__(
        self,
        hidden_size: int = 2048,
        state_size: int = 16,
        conv_kernel: int = 4,
        use_conv_bias: bool = True,
        intermediate_size: int = 2048,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        use_bias: bool = False,
        hidden_act: str = "silu",
        layer_idx: int | None = None,
        backend: str = "cuda",
    ):
        super().__init__()
        name = type(self).__name__
        check_mamba_sizes(name, state_size, conv_kernel, intermediate_size, hidden_act)
        if dt_init not in DT_INITS:
            raise ValueError(f"{name}: dt_init={dt_init!r} is not one of {DT_INITS}")
        self.hidden_size = hidden_size
        self.ssm_state_size = state_size
        self.conv_kernel_size = conv_kernel
        self.use_conv_bias = use_conv_bias
        self.intermediate_size = intermediate_size
        self.dt_rank = mamba_dt_rank(hidden_size, dt_rank)
        self.dt_min, self.dt_max, self.dt_init, self.dt_scale = dt_min, dt_max, dt_init, dt_scale
        self.dt_init_floor = dt_init_floor
        self.use_bias = use_bias
        self.activation = hidden_act
        self.layer_idx = layer_idx
        self.backend = backend  # fla's argument (its conv backend); every path here is ours

        self.in_proj = nn.Linear(hidden_size, intermediate_size * 2, bias=use_bias)
        self.conv1d = ShortConvolution(intermediate_size, conv_kernel, bias=use_conv_bias, activation="silu")
        self.x_proj = nn.Linear(intermediate_size, self.dt_rank + state_size * 2, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, intermediate_size, bias=True)
        self.A_log = nn.Parameter(torch.empty(intermediate_size, state_size))
        self.D = nn.Parameter(torch.empty(intermediate_size))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(intermediate_size, hidden_size, bias=use_bias)
        self.reset_parameters()

    def extra_repr(self) -> str:
        return f"intermediate_size={self.intermediate_size}, state_size={self.ssm_state_size}, dt_rank={self.dt_rank}"

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """fla's SSM init: ``A_log = log(1 .. Ds)`` per channel (S4D-real), ``D = 1``, ``dt_proj.weight`` uniform
        in ``+-dt_rank^-0.5 * dt_scale`` (or that constant), and ``dt_proj.bias = softplus^-1(dt)`` with ``dt``
        log-uniform in ``[dt_min, dt_max]`` (at least ``dt_init_floor``). Linear layers other than ``dt_proj``
        keep their own init (the model's); parameters transformers loaded (``_is_hf_initialized``) are kept."""
        if self.A_log.device.type == "meta":
            return

        def fresh(p: torch.Tensor) -> bool:  # not loaded by transformers
            return not getattr(p, "_is_hf_initialized", False)

        if fresh(self.A_log):
            A = torch.arange(1, self.ssm_state_size + 1, dtype=torch.float32, device=self.A_log.device)
            self.A_log.copy_(A.log().expand_as(self.A_log))
        if fresh(self.D):
            self.D.fill_(1.0)
        std = self.dt_rank**-0.5 * self.dt_scale
        if fresh(self.dt_proj.weight):
            if self.dt_init == "constant":
                self.dt_proj.weight.fill_(std)
            else:
                self.dt_proj.weight.uniform_(-std, std)
        if fresh(self.dt_proj.bias):
            log_min, log_max = math.log(self.dt_min), math.log(self.dt_max)
            u = torch.rand(self.intermediate_size, device=self.dt_proj.bias.device)
            dt = torch.exp(u * (log_max - log_min) + log_min).clamp(min=self.dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # the inverse of softplus

    def use_recurrent(self, step: MixerStep) -> bool:
        """The token-by-token op for short inputs outside training (decoding)."""
        return not self.training and step.x.shape[1] <= RECURRENT_MAX_LEN

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
        """``hidden_states [B, T, hidden_size]`` -> ``(o [B, T, hidden_size], None, past_key_values)``;
        arguments as :meth:`LinearMixer.forward`."""
        step = self.begin(hidden_states, attention_mask, past_key_values, cu_seqlens)
        step.cp = self.check_context_parallel(step, kwargs.get("cp_context"))
        x, z = self.in_proj(step.x).chunk(2, dim=-1)  # [B', T', Di] each
        (x,), conv_state = self.run_convs(step, (self.conv1d,), (x,))
        conv_state = conv_state and conv_state[0]
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.ssm_state_size, self.ssm_state_size], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # [B', T', Di]; the bias is added (in float32) by the op
        scan = dict(D=self.D.float(), z=z, dt_bias=self.dt_proj.bias.float(), dt_softplus=True)
        A = -torch.exp(self.A_log.float())
        if step.cp is not None:  # the states of the earlier ranks' tokens come in (fla.context_parallel)
            y, ssm_state = cp_selective_scan(step.cp, x, dt, A, B, C, **scan, cu_seqlens=step.cu_seqlens)
        else:
            op = self.recurrent_op if self.use_recurrent(step) else self.chunk_op
            y, ssm_state = op(x, dt, A, B, C, **scan, initial_state=step.slot("recurrent_state"),
                              output_final_state=step.store, cu_seqlens=step.cu_seqlens)  # fmt: skip
        return self.finish(step, y, ssm_state, conv_state)

    def finish(self, step: MixerStep, o: torch.Tensor, final_state, conv_state) -> tuple:
        """Cache the new states, ``out_proj``, repad: ``(out [B, T, hidden_size], None, cache)``."""
        if step.cache is not None:
            step.cache.update(
                recurrent_state=final_state, conv_state=conv_state, layer_idx=self.layer_idx, offset=step.seq_len
            )
        o = self.out_proj(o)
        if step.info is not None:
            o = repad_tokens(o[0], step.info)
        return o, None, step.cache


__all__ = ["DT_INITS", "MAMBA_ACTS", "Mamba", "check_mamba_sizes", "mamba_dt_rank"]
