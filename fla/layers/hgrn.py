"""HGRN (Qin et al. 2023, https://arxiv.org/abs/2311.04823), parameter-compatible with fla 0.6.0.

An element-wise gated linear recurrence over ``D = hidden_size * expand_ratio`` features::

    f_t   = logsigmoid(f_proj(x_t))                         forget gate in log space, [D]
    f_t   = log(lb + (1 - lb) * exp(f_t))                   with a per-layer lower bound lb in [0, 1) (layers > 0)
    i_t   = swish(i_proj(x_t)) * (1 - exp(f_t))             the input gate is 1 - forget gate
    h_t   = exp(f_t) * h_{t-1} + i_t                        :func:`fla.ops.hgrn.chunk_hgrn`, state [N, D]
    out_t = o_proj(RMSNorm(h_t) * swish(g_proj(x_t)))       gated RMSNorm over all D features

Parameters (fla's names): ``i_proj``, ``f_proj``, ``g_proj`` (``[D, hidden]``), ``i_conv1d`` / ``f_conv1d``
(short convolutions without activation, with ``use_short_conv``), ``g_norm`` and ``o_proj``. Training and
prefill run :func:`~fla.ops.hgrn.chunk_hgrn` (varlen too, which fla's chunk op lacks); decoding (at most 64
tokens outside training) and ``mode="fused_recurrent"`` without gradients run
:func:`~fla.ops.hgrn.fused_recurrent_hgrn`. Batches, padding and the cache (``recurrent_state [N, D]``
float32, ``conv_state = (i, f)``) come from :class:`fla.layers.linear_mixer.LinearMixer`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fla.context_parallel import cp_hgrn
from fla.layers.linear_mixer import LinearMixer, MixerStep
from fla.modules.activations import swiglu
from fla.modules.conv import ShortConvolution
from fla.modules.gated_norm import FusedRMSNormGated
from fla.ops.hgrn import chunk_hgrn, fused_recurrent_hgrn

HGRN_MODES = ("chunk", "fused_recurrent")


def hgrn_input_dim(hidden_size: int, expand_ratio, where: str = "HGRN") -> int:
    """``int(hidden_size * expand_ratio)`` (fla's), ``ValueError`` unless it is a positive width."""
    if isinstance(expand_ratio, bool) or not isinstance(expand_ratio, (int, float)) or expand_ratio <= 0:
        raise ValueError(f"{where}: expand_ratio must be a positive number, got {expand_ratio!r}")
    dim = int(hidden_size * expand_ratio)
    if dim <= 0:
        raise ValueError(f"{where}: hidden_size * expand_ratio = {hidden_size} * {expand_ratio} leaves no features")
    return dim


class HGRNAttention(LinearMixer):
    """HGRN token mixer (fla's ``HGRNAttention`` signature and parameter names).

    Args:
        mode: ``"chunk"`` (default) or ``"fused_recurrent"`` (used when no gradient is needed; training
            always runs the chunk op, as in fla).
        hidden_size: model width; expand_ratio: recurrence width ``D = hidden_size * expand_ratio``.
        use_short_conv, conv_size, conv_bias: short convolutions (no activation) on i and f.
        elementwise_affine, norm_eps: of the gated output RMSNorm over ``D``.
        layer_idx: index in the cache (required with a cache); layer 0 ignores the lower bound.

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``; ``forward`` also takes
    ``lower_bound [D]`` (values in ``[0, 1)``).
    """

    supports_context_parallel = True
    chunk_op = staticmethod(chunk_hgrn)
    recurrent_op = staticmethod(fused_recurrent_hgrn)
    forward_extras = ("lower_bound",)

    def __init__(
        self,
        mode: str = "chunk",
        hidden_size: int = 1024,
        expand_ratio: int | None = 1,
        use_short_conv: bool = False,
        conv_size: int = 4,
        conv_bias: bool = False,
        elementwise_affine: bool | None = True,
        norm_eps: float = 1e-5,
        layer_idx: int | None = None,
    ):
        super().__init__()
        self.check_mode(mode, HGRN_MODES)
        self.hidden_size = hidden_size
        self.expand_ratio = expand_ratio
        self.input_dim = hgrn_input_dim(hidden_size, expand_ratio, type(self).__name__)
        # one "head" whose state is the D-vector (sets num_heads, key_dim, value_dim, head_{k,v}_dim for the base)
        self.check_dims(hidden_size, 1 / hidden_size, self.input_dim / hidden_size, 1, None)
        self.feature_map, self.feature_map_fn = None, None
        self.layer_idx = layer_idx
        # read in forward instead of layer_idx: torch.compile guards on the attributes a forward reads, and a
        # per-layer int would compile each layer anew (two values here: layer 0 or not)
        self.uses_lower_bound = layer_idx != 0
        self.use_short_conv, self.conv_size, self.conv_bias = use_short_conv, conv_size, conv_bias
        self.i_proj = nn.Linear(hidden_size, self.input_dim, bias=False)
        self.f_proj = nn.Linear(hidden_size, self.input_dim, bias=False)
        self.g_proj = nn.Linear(hidden_size, self.input_dim, bias=False)
        if use_short_conv:
            self.f_conv1d = ShortConvolution(self.input_dim, conv_size, bias=conv_bias, activation=None)
            self.i_conv1d = ShortConvolution(self.input_dim, conv_size, bias=conv_bias, activation=None)
        self.use_output_gate, self.fuse_norm_and_gate = True, True
        self.g_norm = FusedRMSNormGated(self.input_dim, elementwise_affine=bool(elementwise_affine), eps=norm_eps)
        self.o_proj = nn.Linear(self.input_dim, hidden_size, bias=False)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, input_dim={self.input_dim}, expand_ratio={self.expand_ratio}"

    def use_recurrent(self, step: MixerStep) -> bool:
        """fused_recurrent for decoding (short inputs outside training) or, with ``mode="fused_recurrent"``,
        whenever no gradient is needed (fla trains with the chunk op whatever the mode)."""
        if not self.training and step.x.shape[1] <= 64:
            return True
        return self.mode == "fused_recurrent" and not torch.is_grad_enabled()

    def check_extras(self, extras: dict) -> None:
        """``lower_bound`` (fla's, read by :meth:`mix`): ``[D]`` or ``None`` (none)."""
        lower_bound = extras["lower_bound"]
        if lower_bound is not None and lower_bound.shape != (self.input_dim,):
            raise ValueError(
                f"{type(self).__name__}: lower_bound has shape {list(lower_bound.shape)}, expected "
                f"[{self.input_dim}] (hidden_size * expand_ratio)"
            )

    def project_qkv(self, step: MixerStep) -> tuple[torch.Tensor, torch.Tensor, None, tuple | None]:
        """``i``, the forget-gate logits ``f`` (``[.., D]``, short convolutions first when used), no third
        projection, the conv state."""
        x = step.x
        i, f = self.i_proj(x), self.f_proj(x)
        if not self.use_short_conv:
            return i, f, None, None
        (i, f), conv_state = self.run_convs(step, (self.i_conv1d, self.f_conv1d), (i, f))
        return i, f, None, conv_state

    def to_heads(self, step: MixerStep, i: torch.Tensor, f: torch.Tensor, _: None) -> tuple:
        """The element-wise op takes ``[.., D]`` as projected (no heads)."""
        return i, f, None

    def mix(self, step: MixerStep, i: torch.Tensor, f: torch.Tensor, _: None) -> tuple:
        """Forget gate (lower-bounded) in log space, input ``swish(i) * (1 - exp(f))`` -> chunk / recurrent HGRN."""
        f = F.logsigmoid(f)
        lower_bound = step.extras["lower_bound"]
        if lower_bound is not None:
            if self.uses_lower_bound:
                f = torch.logaddexp(lower_bound.log(), torch.log1p(-lower_bound) + f).to(f.dtype)
            else:
                # fla skips layer 0 (its bound is 0 by construction); tied in with weight 0 so the model's
                # lower_bounds always gets a gradient
                f = f + (0 * lower_bound).to(f.dtype)
        i = swiglu(i, (1 - f.exp()).to(i.dtype))  # under autocast exp() gives float32
        if step.cp is not None:  # the states of the earlier ranks' tokens come in (fla.context_parallel)
            return cp_hgrn(step.cp, i, f, output_final_state=step.store, cu_seqlens=step.cu_seqlens)
        op = self.recurrent_op if self.use_recurrent(step) else self.chunk_op
        return op(
            i, f, initial_state=step.slot("recurrent_state"), output_final_state=step.store,
            cu_seqlens=step.cu_seqlens,
        )  # fmt: skip

    def norm_and_gate(self, step: MixerStep, o: torch.Tensor) -> torch.Tensor:
        """``RMSNorm(o) * swish(g_proj(x))`` over all ``D`` features."""
        return self.g_norm(o, self.g_proj(step.x))


__all__ = ["HGRN_MODES", "HGRNAttention", "hgrn_input_dim"]
