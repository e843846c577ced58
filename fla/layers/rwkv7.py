"""RWKV7 time mixing ("Goose", Peng et al. 2025, https://arxiv.org/abs/2503.14456), parameter-compatible with
fla 0.6.0's ``RWKV7Attention``.

Every projection reads its own static interpolation between the token and its predecessor
(``delta = x_{t-1} - x``, :func:`fla.modules.token_shift.token_shift`), ``x_y = x + delta * x_y`` for
``y in r, w, k, v, a, g``; per head (``K = head_dim``)::

    r = r_proj(x_r)     k = k_proj(x_k)     v = v_proj(x_v)
    w = -exp(-0.5) * sigmoid(w_lora(x_w))                     log decay in [-0.607, 0]
    v = lerp(v, v_first, sigmoid(v_lora(x_v)))                layers > 0 (layer 0's v is v_first)
    a = sigmoid(a_lora(x_a))                                  in-context learning rate
    kk = l2norm(k * k_k)                                      per head
    k = k * (1 + (a - 1) * k_a)
    o = RWKV7(r, w, k, v, a = -kk, b = kk * a), scale 1       (:func:`fla.ops.rwkv7.chunk_rwkv7`)
    o = (GroupNorm_heads(o) + ((r * k * r_k).sum(-1) v)) * g_lora(x_g)
    out = o_proj(o)

``v_first`` (layer 0's values) is handed from layer to layer: :meth:`RWKV7Attention.forward` takes it and
returns it as a fourth output. Batches, padding, the cache (``recurrent_state`` and, as ``conv_state``, the last
token ``[N, hidden]``) come from :class:`fla.layers.linear_mixer.LinearMixer`; ``v_first`` lives in the layout
the op sees (packed when the batch was unpadded), which every layer of one forward shares.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from fla.layers.linear_mixer import LinearMixer, MixerStep, split_heads
from fla.layers.rwkv6 import LoRA
from fla.modules.norm import GroupNorm, group_norm
from fla.ops.common.inputs import l2norm
from fla.ops.rwkv7 import chunk_rwkv7, fused_recurrent_rwkv7

if TYPE_CHECKING:
    from fla.models.cache import FLACache

RWKV7_MODES = ("chunk", "fused_recurrent")
DECAY_SCALE = math.exp(-0.5)  # w = -exp(-0.5) * sigmoid(.): fla's (and RWKV-LM's) decay range
MIXES = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")


def _chunk(r, k, v, w, a, b, **options):
    return chunk_rwkv7(r, w, k, v, a, b, **options)


def _recurrent(r, k, v, w, a, b, **options):
    return fused_recurrent_rwkv7(r, w, k, v, a, b, **options)


def default_low_rank(hidden_size: int, coefficient: float, factor: float = 1.0) -> int:
    """fla's default LoRA rank: ``max(32, round(coefficient * sqrt(hidden_size) * factor / 32) * 32)``."""
    return max(32, int(round((coefficient * (hidden_size**0.5)) * factor / 32) * 32))


def orthogonal_init(weight: torch.Tensor, gain: float) -> None:
    """In-place orthogonal init computed in float32 (QR), cast back to the weight's dtype."""
    full = torch.empty(weight.shape, dtype=torch.float32, device=weight.device)
    nn.init.orthogonal_(full, gain=gain)
    weight.copy_(full)


def _init_lora(lora: LoRA) -> None:
    """fla's LoRA init: first matrix zero, second orthogonal with gain ``0.1 * max(1, sqrt(rank / width))``, bias
    zero (the layer sets its own biases afterwards)."""
    first, second = lora.lora[0], lora.lora[2]
    first.weight.zero_()
    width, rank = second.weight.shape
    orthogonal_init(second.weight, 0.1 * (math.sqrt(rank / width) if rank > width else 1.0))
    if second.bias is not None:
        second.bias.zero_()


class RWKV7Attention(LinearMixer):
    """RWKV7 time mixing (see the module docstring).

    Args:
        mode: ``"chunk"`` (default) or ``"fused_recurrent"`` for training / prefill.
        hidden_size: model width (also the key width); head_dim / num_heads: one of them (``head_dim`` wins).
        decay_low_rank_dim, gate_low_rank_dim, a_low_rank_dim, v_low_rank_dim: LoRA ranks of ``w_lora``,
            ``g_lora``, ``a_lora``, ``v_lora`` (``None``: fla's defaults from ``hidden_size``).
        elementwise_affine, norm_eps: of the output GroupNorm (eps ``head_dim * norm_eps``, as fla).
        layer_idx: index in the model (layer 0 has no ``v_lora`` and sets ``v_first``); num_hidden_layers: for
            the depth-dependent initial values.
        fuse_norm: as in fla, the key normalization of ``kk``: an L2 norm with ``1e-6`` under the root (fla's fused
            ``l2_norm``) or, without it, ``F.normalize``; the output GroupNorm is the same either way.
        value_dim: value width (default ``hidden_size``).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    chunk_op = staticmethod(_chunk)
    supports_context_parallel = True
    recurrent_op = staticmethod(_recurrent)

    def __init__(
        self,
        mode: str = "chunk",
        hidden_size: int = 1024,
        head_dim: int | None = 64,
        num_heads: int | None = None,
        decay_low_rank_dim: int | None = None,
        gate_low_rank_dim: int | None = None,
        a_low_rank_dim: int | None = None,
        v_low_rank_dim: int | None = None,
        elementwise_affine: bool | None = True,
        norm_eps: float = 1e-5,
        layer_idx: int | None = None,
        fuse_norm: bool = False,
        value_dim: int | None = None,
        num_hidden_layers: int | None = None,
        **kwargs,
    ):
        super().__init__()
        if head_dim is None and num_heads is None:
            raise ValueError("RWKV7Attention: either head_dim or num_heads must be given")
        if head_dim is not None and (head_dim <= 0 or hidden_size % head_dim != 0):
            raise ValueError(f"RWKV7Attention: hidden_size={hidden_size} is not a multiple of head_dim={head_dim}")
        if head_dim is None and (num_heads <= 0 or hidden_size % num_heads != 0):
            raise ValueError(f"RWKV7Attention: hidden_size={hidden_size} is not a multiple of num_heads={num_heads}")
        num_heads = hidden_size // head_dim if head_dim is not None else num_heads
        value_dim = hidden_size if value_dim is None else value_dim
        self.setup(mode, hidden_size, 1.0, value_dim / hidden_size, num_heads, None, layer_idx, modes=RWKV7_MODES)
        self.head_dim, self.num_hidden_layers, self.fuse_norm = self.head_k_dim, num_hidden_layers, fuse_norm
        factor = self.head_dim / 64
        self.decay_low_rank_dim = decay_low_rank_dim or default_low_rank(hidden_size, 2.5, factor)
        self.gate_low_rank_dim = gate_low_rank_dim or default_low_rank(hidden_size, 5)
        self.a_low_rank_dim = a_low_rank_dim or default_low_rank(hidden_size, 2.5, factor)
        self.v_low_rank_dim = v_low_rank_dim or default_low_rank(hidden_size, 1.7, factor)

        for name in MIXES:
            setattr(self, name, nn.Parameter(torch.zeros(1, 1, hidden_size)))
        self.k_k = nn.Parameter(torch.zeros(self.key_dim))
        self.k_a = nn.Parameter(torch.zeros(self.key_dim))
        self.r_k = nn.Parameter(torch.zeros(self.num_heads, self.head_dim))
        self.r_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)
        self.w_lora = LoRA(hidden_size, self.key_dim, self.decay_low_rank_dim, activation="tanh")
        # read in forward instead of layer_idx: torch.compile guards on what a forward reads (two values, not L)
        self.makes_v_first = self.layer_idx == 0
        if not self.makes_v_first:
            self.v_lora = LoRA(hidden_size, self.value_dim, self.v_low_rank_dim, activation=None)
        self.a_lora = LoRA(hidden_size, self.key_dim, self.a_low_rank_dim, activation=None)
        self.g_lora = LoRA(hidden_size, self.value_dim, self.gate_low_rank_dim, activation="sigmoid", bias=False)
        affine = bool(elementwise_affine)
        self.g_norm = GroupNorm(self.num_heads, self.value_dim, elementwise_affine=affine, bias=affine,
                                eps=self.head_dim * norm_eps)  # fmt: skip
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """fla's (RWKV-LM's) init: depth-dependent token-shift mixes, ``k_k``, ``k_a``, ``r_k``, LoRA biases (decay,
        rate, value mix) and GroupNorm weight; orthogonal ``r_proj`` / ``k_proj`` (gain 0.1) / ``v_proj``, zero
        ``o_proj``; each LoRA's first matrix zero and its second orthogonal (gain ``0.1 * max(1, sqrt(rank /
        width))``). The layer's output is therefore zero at init, as in fla (the residual stream starts as the
        embeddings). Runs after the model's per-module init (HF order: children first), so it has the last word."""
        layer = self.layer_idx or 0
        depth = max(self.num_hidden_layers or 1, layer + 1)
        ratio_0_to_1 = layer / max(depth - 1, 1)
        ratio_1_to_almost0 = 1.0 - layer / depth
        device = self.x_r.device
        if device.type == "meta":
            return

        def ramp(width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            n = torch.arange(width, dtype=torch.float32, device=device)
            linear = n / max(width - 1, 1) - 0.5
            half = max((self.head_dim - 1) / 2, 0.5)
            zigzag = ((n % self.head_dim) - (self.head_dim - 1) / 2) / half
            return n, linear, zigzag * zigzag.abs()

        n, linear, zigzag = ramp(self.hidden_size)
        ddd = n / self.hidden_size
        for name, power in zip(MIXES, (0.2, 0.9, 0.7, 0.7, 0.9, 0.2)):
            getattr(self, name).copy_(1.0 - ddd.pow(power * ratio_1_to_almost0).view(1, 1, -1))
        www = -6 + 6 * (n / max(self.hidden_size - 1, 1)) ** (1 + ratio_0_to_1**0.3)
        for lora in (self.w_lora, self.a_lora, self.g_lora, getattr(self, "v_lora", None)):
            if lora is not None:
                _init_lora(lora)
        orthogonal_init(self.r_proj.weight, 1.0)
        orthogonal_init(self.k_proj.weight, 0.1)
        orthogonal_init(self.v_proj.weight, 1.0)
        self.o_proj.weight.zero_()
        self.k_a.fill_(1.02)
        self.r_k.fill_(-0.04)
        self.k_k.copy_(0.71 - linear * 0.1)
        self.w_lora.lora[2].bias.copy_(www + 0.5 + zigzag * 2.5)
        self.a_lora.lora[2].bias.copy_(-0.19 + zigzag * 0.3 + linear * 0.4)
        if hasattr(self, "v_lora"):
            # sizes from the parameters: under tensor parallelism the layer's widths are per rank, the init's full
            self.v_lora.lora[2].bias.copy_(0.73 - ramp(self.v_lora.lora[2].bias.shape[0])[1] * 0.4)
        if self.g_norm.weight is not None:
            self.g_norm.weight.fill_(((layer + 1) / depth) ** 0.7)
            self.g_norm.bias.zero_()

    def project_qkv(self, step: MixerStep):
        """``r, k [.., key_dim]``, ``v [.., value_dim]`` (mixed with ``v_first`` after layer 0) and, as the conv
        state, each sequence's last token ``[N, hidden_size]``; ``w``, ``a``, ``g`` go to ``step.extras``."""
        x = step.x
        delta, last = self.token_shift_delta(step)
        xr, xw, xk, xv, xa, xg = (torch.addcmul(x, delta, getattr(self, name)) for name in MIXES)
        r, k, v = self.r_proj(xr), self.k_proj(xk), self.v_proj(xv)
        if self.makes_v_first:
            step.extras["v_first"] = v
        else:
            v_first = step.extras.get("v_first")
            if v_first is None or v_first.shape != v.shape:
                got = None if v_first is None else list(v_first.shape)
                raise ValueError(
                    f"RWKV7Attention (layer {self.layer_idx}): v_first must be layer 0's values of shape "
                    f"{list(v.shape)}, got {got}"
                )
            v = torch.lerp(v, v_first.to(v.dtype), torch.sigmoid(self.v_lora(xv)))
        step.extras["w"] = -DECAY_SCALE * torch.sigmoid(self.w_lora(xw))
        step.extras["a"] = torch.sigmoid(self.a_lora(xa))
        step.extras["g"] = self.g_lora(xg)
        return r, k, v, last if step.store else None

    def mix(self, step: MixerStep, r: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """``kk = l2norm(k * k_k)``, ``k * (1 + (a - 1) k_a)`` -> chunk / recurrent RWKV7 (``a = -kk``,
        ``b = kk * a``, scale 1, as in fla). ``r, k [.., H, K]``, ``v [.., H, V]``."""
        K = self.head_dim
        w, a = split_heads(step.extras["w"], K), split_heads(step.extras["a"], K)
        # in k's dtype: under autocast k is bf16 and these float32 parameters would promote k (the op takes r, k, v
        # in one dtype)
        k_k, k_a = self.k_k.view(-1, K).to(k.dtype), self.k_a.view(-1, K).to(k.dtype)
        # fla: its fused l2 norm (eps 1e-6 under the root) with fuse_norm, else F.normalize
        kk = l2norm(k * k_k, eps=1e-6) if self.fuse_norm else F.normalize(k * k_k, dim=-1)
        k = torch.addcmul(k, k * (a - 1), k_a)
        step.extras["heads"] = (r, k, v)  # for the bonus in norm_and_gate
        return self.run(step, r, k, v, w, -kk, kk * a, scale=1.0)

    def norm_and_gate(self, step: MixerStep, o: torch.Tensor) -> torch.Tensor:
        """GroupNorm over the heads, plus the bonus ``((r * k * r_k).sum(-1)) v`` per head, times ``g``."""
        norm = self.g_norm
        out = group_norm(o.flatten(-2), norm.weight, norm.bias, self.num_heads, eps=norm.eps)
        r, k, v = step.extras["heads"]
        bonus = (r * k * self.r_k).sum(-1, keepdim=True) * v  # [.., H, V]
        return (out + bonus.flatten(-2)) * step.extras["g"]

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: FLACache | None = None,
        use_cache: bool | None = False,
        output_attentions: bool | None = False,
        v_first: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None, FLACache | None, torch.Tensor]:
        """``hidden_states [B, T, hidden_size]`` -> ``(o [B, T, hidden_size], None, past_key_values, v_first)``.

        Args:
            v_first: layer 0's values (its fourth output), required by the layers after it; layer 0 ignores it.
            attention_mask, past_key_values, use_cache, output_attentions, cu_seqlens: as
                :meth:`fla.layers.linear_mixer.LinearMixer.forward`.
        """
        step = self.begin(hidden_states, attention_mask, past_key_values, cu_seqlens)
        step.cp = self.check_context_parallel(step, kwargs.get("cp_context"))
        step.extras["v_first"] = v_first
        r, k, v, conv_state = self.project_qkv(step)
        r, k, v = self.to_heads(step, r, k, v)
        o, final_state = self.mix(step, r, k, v)
        out, _, cache = self.finish(step, o, final_state, conv_state)
        return out, None, cache, step.extras["v_first"]


__all__ = ["RWKV7Attention"]
