"""Rotary position embedding (RoPE) with a Triton forward/backward.

For a token at position ``p`` and frequency index ``i < R`` (``R = rotary_dim / 2``), the
channel pair ``(x1, x2)`` is rotated by the angle ``theta = p * inv_freq[i]``::

    y1 = x1 * cos(theta) - x2 * sin(theta)
    y2 = x2 * cos(theta) + x1 * sin(theta)

Pairs are ``(x[i], x[i + R])`` (GPT-NeoX halves, ``interleaved=False``) or ``(x[2i], x[2i+1])``
(GPT-J, ``interleaved=True``). Channels past ``2R`` pass through. The map is a rotation, so
its backward is the same rotation by ``-theta`` (``sin -> -sin``).

Positions: ``t + seqlen_offset`` (an int, or one offset per sequence), where ``t`` restarts at 0
for every sequence of a ``cu_seqlens`` varlen batch.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import triton
import triton.language as tl

from fla.ops.utils import prepare_position_ids, prepare_sequence_ids
from fla.utils import IS_TRITON_INTERPRET, check_cu_seqlens, check_same_shape, empty, select_backend
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2


def _configs() -> list[triton.Config]:
    if IS_TRITON_INTERPRET:
        return [triton.Config({"BM": 32}, num_warps=4)]
    return [triton.Config({"BM": bm}, num_warps=nw) for bm in (32, 64, 128) for nw in (4, 8)]


@lean_launch
@triton.heuristics({"HAS_POS": lambda args: args["pos"] is not None})
@triton.autotune(configs=_configs(), key=["H", "D", "R", "INTERLEAVED"])
@triton.jit
def rotary_embedding_kernel(
    x, y, cos, sin, pos, offset, T,
    H: tl.constexpr, D: tl.constexpr, R: tl.constexpr, BM: tl.constexpr, BR: tl.constexpr, BP: tl.constexpr,
    INTERLEAVED: tl.constexpr, CONJUGATE: tl.constexpr, HAS_POS: tl.constexpr,
):  # fmt: skip
    """Rotate BM rows of one batch row; a row is one (token, head) pair of ``x [B, T, H, D]``.

    ``CONJUGATE`` rotates by ``-theta`` (the backward).
    """
    i_m, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    o_m = i_m * BM + tl.arange(0, BM)  # [BM] rows (t * H + h) within batch row i_b
    m_m = o_m < T * H
    o_t = o_m // H  # [BM] token index
    if HAS_POS:
        b_pos = tl.load(pos + i_b * T + o_t, mask=m_m, other=0).to(tl.int64)  # [BM]
    else:
        b_pos = o_t + offset
    o_r = tl.arange(0, BR)  # [BR] frequency index
    m_r = m_m[:, None] & (o_r < R)[None, :]  # [BM, BR]
    o_cs = b_pos[:, None] * R + o_r[None, :]
    b_cos = tl.load(cos + o_cs, mask=m_r, other=0.0).to(tl.float32)  # [BM, BR]
    b_sin = tl.load(sin + o_cs, mask=m_r, other=0.0).to(tl.float32)  # [BM, BR]
    if CONJUGATE:
        b_sin = -b_sin
    if INTERLEAVED:
        o_1, o_2 = 2 * o_r, 2 * o_r + 1  # [BR]
    else:
        o_1, o_2 = o_r, o_r + R  # [BR]
    o_row = (i_b * T * H + o_m) * D  # [BM] row starts
    p_1 = o_row[:, None] + o_1[None, :]  # [BM, BR]
    p_2 = o_row[:, None] + o_2[None, :]  # [BM, BR]
    b_x1 = tl.load(x + p_1, mask=m_r, other=0.0).to(tl.float32)
    b_x2 = tl.load(x + p_2, mask=m_r, other=0.0).to(tl.float32)
    tl.store(y + p_1, (b_x1 * b_cos - b_x2 * b_sin).to(y.dtype.element_ty), mask=m_r)
    tl.store(y + p_2, (b_x2 * b_cos + b_x1 * b_sin).to(y.dtype.element_ty), mask=m_r)
    if 2 * R < D:  # channels past the rotary dim are copied
        o_p = 2 * R + tl.arange(0, BP)  # [BP]
        m_p = m_m[:, None] & (o_p < D)[None, :]
        p_p = o_row[:, None] + o_p[None, :]
        tl.store(y + p_p, tl.load(x + p_p, mask=m_p, other=0.0), mask=m_p)


def _triton_rotate(x, cos, sin, pos, offset, interleaved, conjugate):
    B, T, H, D = x.shape
    R = cos.shape[1]
    y = empty(B, T, H, D, dtype=x.dtype, device=x.device)
    if x.numel() == 0:
        return y
    rotary_embedding_kernel[lambda meta: (cdiv(T * H, meta["BM"]), B)](
        x, y, cos, sin, pos, offset, T,
        H=H, D=D, R=R, BR=next_power_of_2(R), BP=next_power_of_2(max(D - 2 * R, 1)),
        INTERLEAVED=interleaved, CONJUGATE=conjugate,
    )  # fmt: skip
    return y


class RotaryEmbeddingFunction(torch.autograd.Function):
    """Autograd wrapper of the Triton kernel: the backward rotates ``dy`` by ``-theta``."""

    @staticmethod
    def forward(ctx, x, cos, sin, pos, offset, interleaved):
        ctx.save_for_backward(cos, sin, pos)
        ctx.offset, ctx.interleaved = offset, interleaved
        return _triton_rotate(x, cos, sin, pos, offset, interleaved, conjugate=False)

    @staticmethod
    def backward(ctx, dy):
        cos, sin, pos = ctx.saved_tensors
        dx = _triton_rotate(dy.contiguous(), cos, sin, pos, ctx.offset, ctx.interleaved, conjugate=True)
        return dx, None, None, None, None, None


def _torch_rotate(x, cos, sin, pos, offset, interleaved):
    """Pure-PyTorch twin of the kernel; ``pos`` is ``[B, T]`` / ``[T]`` or None (``t + offset``)."""
    B, T, H, D = x.shape
    R = cos.shape[1]
    if pos is None:
        pos = torch.arange(T, device=x.device) + offset
    compute = torch.promote_types(x.dtype, torch.float32)
    c = cos[pos].to(compute).unsqueeze(-2)  # [B?, T, 1, R]
    s = sin[pos].to(compute).unsqueeze(-2)
    rot, tail = x[..., : 2 * R].to(compute), x[..., 2 * R :]
    if interleaved:
        x1, x2 = rot.unflatten(-1, (R, 2)).unbind(-1)
        out = torch.stack([x1 * c - x2 * s, x2 * c + x1 * s], -1).flatten(-2)
    else:
        x1, x2 = rot.split(R, -1)
        out = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1)
    return torch.cat([out.to(x.dtype), tail], -1)


def _positions(
    B: int, T: int, seqlen_offsets: int | torch.Tensor, cu_seqlens: torch.Tensor | None, device
) -> torch.Tensor | None:
    """Position of every token, ``[B, T]`` or ``[T]`` (varlen); None when it is simply ``t + int offset``."""
    if cu_seqlens is None:
        if isinstance(seqlen_offsets, int):
            return None
        return torch.arange(T, device=device)[None, :] + seqlen_offsets.long()[:, None]
    pos = prepare_position_ids(cu_seqlens)
    if isinstance(seqlen_offsets, int):
        return pos + seqlen_offsets
    return pos + seqlen_offsets.long()[prepare_sequence_ids(cu_seqlens)]


def rotary_embedding(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    interleaved: bool = False,
    seqlen_offsets: int | torch.Tensor = 0,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rotate the first ``2R`` channels of ``x`` by the angles tabulated in ``cos``/``sin``.

    Args:
        x: ``[B, T, H, D]`` (varlen: ``B == 1`` with ``cu_seqlens``).
        cos, sin: ``[S, R]`` tables (``cos[p, i] = cos(p * inv_freq[i])``), ``2R <= D``; every
            position used must be ``< S``.
        interleaved: GPT-J pairs ``(2i, 2i+1)`` instead of GPT-NeoX halves ``(i, i+R)``.
        seqlen_offsets: int, or LongTensor ``[B]`` (``[N]`` with ``cu_seqlens``): added to positions.
        cu_seqlens: optional ``[N+1]``; positions restart at 0 for every sequence.
    Returns:
        ``[B, T, H, D]`` in ``x.dtype``.
    """
    if x.dim() != 4:
        raise ValueError(f"x has shape {list(x.shape)}, expected 4-D [B, T, H, D]")
    B, T, H, D = x.shape
    if cos.dim() != 2:
        raise ValueError(f"cos has shape {list(cos.shape)}, expected 2-D [S, R]")
    check_same_shape("cos", cos, "sin", sin)
    S, R = cos.shape
    if 2 * R > D:
        raise ValueError(f"rotary dim 2 * {R} (cos has shape {list(cos.shape)}) exceeds x's head dim {D}")
    check_cu_seqlens(cu_seqlens, total=T, batch=B)
    n = B if cu_seqlens is None else cu_seqlens.numel() - 1
    if isinstance(seqlen_offsets, torch.Tensor):
        if seqlen_offsets.shape != (n,):
            shape = list(seqlen_offsets.shape)
            raise ValueError(f"seqlen_offsets has shape {shape}, expected [{n}] (one per sequence)")
    elif cu_seqlens is None and T + seqlen_offsets > S:
        raise ValueError(f"positions up to {T + seqlen_offsets - 1} need cos/sin with > {S} rows")
    pos = _positions(B, T, seqlen_offsets, cu_seqlens, x.device)
    offset = seqlen_offsets if isinstance(seqlen_offsets, int) else 0
    if select_backend(x, cos, sin) == "torch":
        return _torch_rotate(x, cos, sin, pos, offset, interleaved)
    return RotaryEmbeddingFunction.apply(x.contiguous(), cos.contiguous(), sin.contiguous(), pos, offset, interleaved)


class RotaryEmbedding(nn.Module):
    """RoPE over the first ``dim`` channels of each head (fla-compatible; no parameters).

    ``inv_freq [dim / 2]`` is a non-persistent buffer; call :meth:`reset_parameters` after
    materializing a meta-device model. cos/sin tables are float32, grown on demand.
    """

    def __init__(
        self,
        dim: int,
        base: float = 10000.0,
        scale_base: float | None = None,
        interleaved: bool = False,
        pos_idx_in_fp32: bool = True,
        device: torch.device | str | None = None,
    ):
        """fla 0.6.0's arguments, in its order: ``scale_base`` (XPos) is not provided here and must be ``None``;
        ``pos_idx_in_fp32`` is accepted (positions and angles are always float32 here)."""
        super().__init__()
        if scale_base is not None:
            raise ValueError(f"RotaryEmbedding: scale_base={scale_base!r} (XPos) is not supported here")
        if dim <= 0 or dim % 2:
            raise ValueError(f"rotary dim must be a positive even number, got dim={dim}")
        self.dim, self.base, self.interleaved = dim, float(base), interleaved
        self.register_buffer("inv_freq", self._inv_freq(device), persistent=False)
        self._cos_cached: torch.Tensor | None = None
        self._sin_cached: torch.Tensor | None = None

    def _inv_freq(self, device) -> torch.Tensor:
        return 1.0 / (self.base ** (torch.arange(0, self.dim, 2, device=device, dtype=torch.float32) / self.dim))

    def reset_parameters(self) -> None:
        """Recompute ``inv_freq`` in place (e.g. after ``to_empty``) and drop the cos/sin tables."""
        with torch.no_grad():
            self.inv_freq.copy_(self._inv_freq(self.inv_freq.device))
        self._cos_cached = self._sin_cached = None

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base}, interleaved={self.interleaved}"

    def _tables(self, seqlen: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin ``[S, dim/2]`` float32 with ``S >= seqlen`` (a power of two, so decoding rarely regrows)."""
        cached = self._cos_cached
        if cached is None or cached.shape[0] < seqlen or cached.device != device:
            size = next_power_of_2(max(seqlen, 16))
            inv_freq = self.inv_freq.to(device=device, dtype=torch.float32)
            freqs = torch.outer(torch.arange(size, device=device, dtype=torch.float32), inv_freq)
            self._cos_cached, self._sin_cached = torch.cos(freqs), torch.sin(freqs)
        return self._cos_cached, self._sin_cached

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        seqlen_offset: int | torch.Tensor = 0,
        max_seqlen: int | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate ``q [B, T, H, D]`` and ``k [B, T, Hk, D]``.

        Args:
            seqlen_offset: int, or LongTensor ``[B]`` (``[N]`` with ``cu_seqlens``): position of
                each sequence's first token (decoding).
            max_seqlen: largest position + 1 needed; by default ``T + max(seqlen_offset)``
                (a host sync when the offset is a tensor).
            cu_seqlens: optional ``[N+1]``; positions restart at 0 for every sequence.
        Returns:
            ``(q_rot, k_rot)`` in the input dtypes.
        """
        if q.dim() != 4:
            raise ValueError(f"q has shape {list(q.shape)}, expected 4-D [B, T, H, D]")
        if k.dim() != 4 or k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
            raise ValueError(f"k has shape {list(k.shape)}, expected [B, T, Hk, D] matching q's {list(q.shape)}")
        if self.dim > q.shape[3]:
            raise ValueError(f"rotary dim {self.dim} exceeds the head dim of q {list(q.shape)}")
        if max_seqlen is None:
            extra = seqlen_offset if isinstance(seqlen_offset, int) else int(seqlen_offset.max())
            max_seqlen = q.shape[1] + extra
        cos, sin = self._tables(max_seqlen, q.device)
        q = rotary_embedding(q, cos, sin, self.interleaved, seqlen_offset, cu_seqlens)
        k = rotary_embedding(k, cos, sin, self.interleaved, seqlen_offset, cu_seqlens)
        return q, k
