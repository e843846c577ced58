"""Argument checks of the softmax-attention ops (errors name the argument and its value or shape)."""

from __future__ import annotations

import torch

from fla.utils import check_cu_seqlens, check_dtype, check_same_device, check_shape


def check_window(window_size: int | None, allow_zero: bool = False) -> None:
    """``window_size`` must be ``None`` or a positive (``allow_zero``: non-negative) int."""
    if window_size is None:
        return
    low = 0 if allow_zero else 1
    if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < low:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"window_size must be None or a {kind} integer, got {window_size!r}")


def check_sink(sink_bias: torch.Tensor | None, HQ: int) -> None:
    """``sink_bias`` must be ``None`` or a float ``[HQ]`` tensor."""
    if sink_bias is not None:
        check_shape("sink_bias", sink_bias, (HQ,), "[HQ]")
        check_dtype("sink_bias", sink_bias)


def check_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """q ``[..., HQ, K]``, k ``[..., H, K]``, v ``[..., H, V]`` share one float dtype and ``H`` divides ``HQ``;
    return the group size ``HQ // H``."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_dtype(name, t)
        if t.dtype != q.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but q has dtype {q.dtype}; q, k and v must share one dtype")
    HQ, H = q.shape[-2], k.shape[-2]
    if H == 0 or HQ % H != 0:
        raise ValueError(f"q has {HQ} heads, not a multiple of the {H} key/value heads of k (GQA needs H | HQ)")
    return HQ // H


def check_attn_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    window_size: int | None,
    cu_seqlens: torch.Tensor | None,
    sink_bias: torch.Tensor | None = None,
) -> None:
    """Inputs of :func:`fla.ops.attn.parallel_attn`: q ``[B, T, HQ, K]``, k ``[B, T, H, K]``, v ``[B, T, H, V]``,
    g ``[B, T, HQ]``, cu_seqlens ``[N+1]`` (then ``B == 1``), window_size positive or ``None``, sink_bias ``[HQ]``."""
    if q.dim() != 4:
        raise ValueError(f"q has shape {list(q.shape)}, expected 4 dims [B, T, HQ, K]")
    B, T, HQ, K = q.shape
    check_shape("k", k, (B, T, None, K), "[B, T, H, K]")
    check_shape("v", v, (B, T, k.shape[2], None), "[B, T, H, V]")
    check_heads(q, k, v)
    if g is not None:
        check_shape("g", g, (B, T, HQ), "[B, T, HQ]")
        check_dtype("g", g)
    check_sink(sink_bias, HQ)
    check_window(window_size)
    check_same_device(q=q, k=k, v=v, g=g, cu_seqlens=cu_seqlens, sink_bias=sink_bias)
    check_cu_seqlens(cu_seqlens, total=T, batch=B)


def check_decoding_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
    window_size: int | None,
    sink_bias: torch.Tensor | None = None,
) -> None:
    """Inputs of :func:`fla.ops.attn.attn_decoding_one_step`: q ``[1, N, HQ, K]``, k ``[1, L, H, K]``,
    v ``[1, L, H, V]``, g ``[1, L, HQ]``, cu_seqlens ``[N+1]`` (required), window_size ``>= 0`` or ``None``."""
    if cu_seqlens is None:
        raise ValueError("cu_seqlens is required: attn_decoding_one_step packs the key sequences of the batch")
    if q.dim() != 4 or q.shape[0] != 1:
        raise ValueError(f"q has shape {list(q.shape)}, expected [1, N, HQ, K] (one query per sequence)")
    _, N, HQ, K = q.shape
    check_shape("k", k, (1, None, None, K), "[1, L, H, K]")
    check_shape("v", v, (1, k.shape[1], k.shape[2], None), "[1, L, H, V]")
    check_heads(q, k, v)
    if g is not None:
        check_shape("g", g, (1, k.shape[1], HQ), "[1, L, HQ]")
        check_dtype("g", g)
    check_sink(sink_bias, HQ)
    check_window(window_size, allow_zero=True)
    check_same_device(q=q, k=k, v=v, g=g, cu_seqlens=cu_seqlens, sink_bias=sink_bias)
    check_cu_seqlens(cu_seqlens, total=k.shape[1], batch=1)
    if cu_seqlens.numel() - 1 != N:
        raise ValueError(f"cu_seqlens describes {cu_seqlens.numel() - 1} sequences but q has {N} queries")
