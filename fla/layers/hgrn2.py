"""HGRN2 (Qin et al. 2024, https://arxiv.org/abs/2404.07904), parameter-compatible with fla 0.6.0.

GLA whose key is tied to the forget gate: per head (``K = expand_ratio``, ``V = hidden_size / H``)::

    g_t   = logsigmoid(f_proj(x_t))                         forget gate in log space, [H, K]
    g_t   = log(lb + (1 - lb) * exp(g_t))                   with a per-layer lower bound lb in [0, 1)
    k_t   = 1 - exp(g_t)                                    the input gate is 1 - forget gate
    S_t   = diag(exp(g_t)) S_{t-1} + k_t^T i_t,             o_t = swish(q_t) S_t / sqrt(K)
    out_t = o_proj(RMSNorm(o_t))                            RMSNorm over all heads (hidden_size wide)

The lower bound comes from the model (``lower_bound [H * K]``, see :class:`fla.models.hgrn2.HGRN2Model`);
layer 0 and a layer called without one use the plain gate. Parameters (fla's names): ``q_proj``,
``f_proj`` (``[H * K, hidden]``), ``i_proj`` (``[hidden, hidden]``), ``{q,f,i}_conv1d`` (short
convolutions without activation), ``g_norm`` and ``o_proj``. Training and prefill run
:func:`fla.ops.gla.chunk_gla`; decoding (at most 64 tokens outside training) runs
:func:`fla.ops.gla.fused_recurrent_gla`. Batches, padding, the cache: :mod:`fla.layers.linear_mixer`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fla.layers.linear_mixer import LinearMixer
from fla.layers.utils import FLA060_FUSED_OUTPUT_NORM_EPS
from fla.modules.conv import ShortConvolution
from fla.modules.norm import RMSNorm
from fla.ops.gla import chunk_gla, fused_recurrent_gla

HGRN2_MODES = ("chunk", "fused_recurrent", "fused_chunk")  # fla's; "fused_chunk" runs the chunk op


def hgrn2_heads(hidden_size: int, num_heads: int | None, expand_ratio: int | None, where: str = "HGRN2") -> tuple:
    """``(num_heads, expand_ratio)`` as fla 0.6.0's layer resolves them: ``expand_ratio`` (the per-head
    key width) wins, ``num_heads = hidden_size // expand_ratio``; without it ``expand_ratio =
    hidden_size // num_heads``. ``ValueError`` when neither is given or no head is left."""
    if expand_ratio is not None:
        if isinstance(expand_ratio, bool) or not isinstance(expand_ratio, int) or expand_ratio <= 0:
            raise ValueError(f"{where}: expand_ratio must be a positive int or None, got {expand_ratio!r}")
        num_heads = hidden_size // expand_ratio
        if num_heads == 0:
            raise ValueError(f"{where}: expand_ratio={expand_ratio} is larger than hidden_size={hidden_size}")
    elif num_heads is not None:
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or not 0 < num_heads <= hidden_size:
            raise ValueError(f"{where}: num_heads must be an int in [1, hidden_size={hidden_size}], got {num_heads!r}")
        expand_ratio = hidden_size // num_heads
    else:
        raise ValueError(f"{where}: one of num_heads and expand_ratio must be given (both are None)")
    return num_heads, expand_ratio


class HGRN2Attention(LinearMixer):
    """HGRN2 token mixer (fla's ``HGRN2Attention`` signature and parameter names).

    Args:
        mode: ``"chunk"`` (default) or ``"fused_recurrent"`` for training / prefill (``"fused_chunk"``
            runs the chunk op).
        hidden_size: model width (= the value width ``H * V``).
        num_heads: heads; used only when ``expand_ratio`` is ``None`` (as in fla).
        expand_ratio: per-head key (forget-gate) width ``K``; ``num_heads = hidden_size // expand_ratio``.
        use_short_conv, conv_size, conv_bias: short convolutions (no activation) on q, f, i.
        elementwise_affine: of the output RMSNorm over ``hidden_size``; norm_eps: accepted and unused, as in fla
            0.6.0, whose forward normalizes with eps 1e-5 (``FLA060_FUSED_OUTPUT_NORM_EPS``).
        layer_idx: index in the cache (required with a cache); layer 0 ignores the lower bound.

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``; ``forward`` also takes
    ``lower_bound [H * K]`` (values in ``[0, 1)``).
    """

    supports_context_parallel = True

    chunk_op = staticmethod(chunk_gla)
    recurrent_op = staticmethod(fused_recurrent_gla)
    forward_extras = ("lower_bound",)

    def __init__(
        self,
        mode: str = "chunk",
        hidden_size: int = 1024,
        num_heads: int | None = None,
        expand_ratio: int | None = 128,
        use_short_conv: bool = False,
        conv_size: int = 4,
        conv_bias: bool = False,
        elementwise_affine: bool | None = True,
        norm_eps: float = 1e-5,
        layer_idx: int | None = None,
    ):
        super().__init__()
        num_heads, expand_ratio = hgrn2_heads(hidden_size, num_heads, expand_ratio, type(self).__name__)
        self.check_mode(mode, HGRN2_MODES)
        self.hidden_size = hidden_size
        self.expand_ratio = expand_ratio
        self.forget_dim = num_heads * expand_ratio
        self.input_dim = hidden_size
        # key width H * K (q, f), value width hidden_size (i): sets num_heads, key_dim, value_dim, head_{k,v}_dim
        self.check_dims(hidden_size, self.forget_dim / hidden_size, 1.0, num_heads, None)
        self.feature_map, self.feature_map_fn = None, None
        self.layer_idx = layer_idx
        # read in forward instead of layer_idx: torch.compile guards on the attributes a forward reads, and a
        # per-layer int would compile each layer anew (two values here: layer 0 or not)
        self.uses_lower_bound = layer_idx != 0
        self.use_short_conv, self.conv_size, self.conv_bias = use_short_conv, conv_size, conv_bias
        self.q_proj = nn.Linear(hidden_size, self.forget_dim, bias=False)
        self.f_proj = nn.Linear(hidden_size, self.forget_dim, bias=False)
        self.i_proj = nn.Linear(hidden_size, self.input_dim, bias=False)
        if use_short_conv:
            self.q_conv1d = ShortConvolution(self.forget_dim, conv_size, bias=conv_bias, activation=None)
            self.f_conv1d = ShortConvolution(self.forget_dim, conv_size, bias=conv_bias, activation=None)
            self.i_conv1d = ShortConvolution(self.input_dim, conv_size, bias=conv_bias, activation=None)
        self.use_output_gate, self.fuse_norm_and_gate = False, False
        affine, eps = bool(elementwise_affine), FLA060_FUSED_OUTPUT_NORM_EPS
        self.g_norm = RMSNorm(hidden_size, elementwise_affine=affine, eps=eps)
        self.o_proj = nn.Linear(self.input_dim, hidden_size, bias=False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, expand_ratio={self.expand_ratio}"

    def check_extras(self, extras: dict) -> None:
        """``lower_bound`` (fla's, read by :meth:`mix`): ``[H * K]`` or ``None`` (none)."""
        lower_bound = extras["lower_bound"]
        if lower_bound is not None and lower_bound.shape != (self.forget_dim,):
            raise ValueError(
                f"{type(self).__name__}: lower_bound has shape {list(lower_bound.shape)}, expected "
                f"[{self.forget_dim}] (num_heads * expand_ratio)"
            )

    def project_qkv(self, step):
        """``swish(q)``, the forget-gate logits ``f`` (both ``[.., H * K]``), the input ``i`` ``[.., hidden]``
        (short convolutions first, when used) and the conv state."""
        x = step.x
        q, f, i = self.q_proj(x), self.f_proj(x), self.i_proj(x)
        conv_state = None
        if self.use_short_conv:
            (q, f, i), conv_state = self.run_convs(step, (self.q_conv1d, self.f_conv1d, self.i_conv1d), (q, f, i))
        return F.silu(q), f, i, conv_state

    def mix(self, step, q, f, v):
        """Forget gate (lower-bounded) ``g``, key ``k = 1 - exp(g)`` -> chunk / recurrent GLA."""
        g = F.logsigmoid(f)
        lower_bound = step.extras["lower_bound"]
        if lower_bound is not None:
            lower_bound = lower_bound.view(self.num_heads, self.head_k_dim)
            if self.uses_lower_bound:
                g = torch.logaddexp(lower_bound.log(), torch.log1p(-lower_bound) + g)
            else:
                # fla skips layer 0, whose bound is 0 by construction (log 0); tied in with weight 0 (same
                # values) so the model's lower_bounds always gets a gradient, zero when no later layer uses it
                g = g + (0 * lower_bound).to(g.dtype)
        k = (1 - g.exp()).to(v.dtype)
        return self.run(step, q, k, v, g)

    def norm_and_gate(self, step, o):
        """RMSNorm over all heads together (no output gate): ``[.., H, V] -> [.., hidden_size]``."""
        return self.g_norm(o.flatten(-2))


__all__ = ["HGRN2_MODES", "HGRN2Attention", "hgrn2_heads"]
