"""Causal softmax attention for :class:`fla.layers.Attention`: flash-attn, torch ``varlen_attn`` or SDPA.

Two entry points, both causal, both with an optional sliding window ``W`` (a query sees the
``W`` most recent keys, itself included):

* :func:`attention_varlen` - packed sequences ``q [N, H, D]``, ``k, v [N, Hkv, D]`` described by
  ``cu_seqlens [S+1]``; every token attends within its own sequence.
* :func:`attention_dense` - ``q [B, Tq, H, D]``, ``k, v [B, Tk, Hkv, D]`` with ``Tk >= Tq``: the
  queries are the last ``Tq`` of the ``Tk`` key positions (bottom-right alignment, as when
  decoding with a cache); ``key_mask [B, Tk]`` (True = token) drops padded keys.

Which library runs (``FLA_ATTN_BACKEND`` = ``auto`` | ``flash`` | ``varlen`` | ``sdpa`` | ``triton``, read
at call time; ``auto`` by default):

1. flash-attn, when installed and the tensors take the GPU path (``select_backend`` -> triton on CUDA);
2. ``torch.nn.attention.varlen.varlen_attn`` for :func:`attention_varlen` on CUDA, when this
   torch's signature supports the call (window, GQA; checked by inspecting it) and the inputs
   suit its kernel (fp16/bf16, head dim multiple of 8 up to 256, sm80+);
3. fla's own Triton kernel (:func:`fla.ops.attn.parallel_attn`) on the GPU path for the calls SDPA could only
   run with an explicit mask: a sliding window, or packed sequences (full-length queries, no key mask). SDPA has
   no flash kernel for a mask; measured on an H100 (``benchmarks/results/ops_attn.md``), ``parallel_attn`` with a
   window of 512 is 1.8x / 3.2x / 6.3x faster fwd+bwd than masked SDPA at T = 2k / 4k / 8k. Plain causal calls
   stay on SDPA: ``parallel_attn`` matches SDPA's FA2 backend there (0.96-0.99x its time at B*T = 32k), but SDPA's
   default on Hopper is cuDNN's kernel, 1.6x faster than both;
4. ``torch.nn.functional.scaled_dot_product_attention`` otherwise (math kernel on CPU). Varlen
   batches become a block-diagonal causal mask built from sequence ids.

:func:`attention_varlen_fla` / :func:`attention_dense_fla` run ``parallel_attn`` directly (full-length queries,
no key mask).
"""

from __future__ import annotations

import importlib.util
import inspect
import os

import torch
import torch.nn.functional as F

from fla.layers.utils import get_padding_info, unpad
from fla.ops.utils import prepare_sequence_ids
from fla.utils import check_shape, device_capability, select_backend
from fla.utils.caching import host_cache

_BACKENDS = ("auto", "flash", "varlen", "sdpa", "triton")
HAS_FLASH_ATTN = importlib.util.find_spec("flash_attn") is not None


def _requested() -> str:
    name = os.environ.get("FLA_ATTN_BACKEND", "auto") or "auto"
    if name not in _BACKENDS:
        raise ValueError(f"FLA_ATTN_BACKEND={name!r} is not one of {_BACKENDS}")
    return name


@host_cache
def _flash_attn():
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    return flash_attn_func, flash_attn_varlen_func


def _flash_window(window_size: int | None) -> tuple[int, int]:
    # flash-attn counts the keys left of the query, the query itself excluded
    return (-1, -1) if window_size is None else (window_size - 1, 0)


@host_cache
def _torch_varlen_attn():
    """``(varlen_attn, parameter names)`` of this torch, or ``None`` when it has none."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn, frozenset(inspect.signature(varlen_attn).parameters)


def varlen_attn_unsupported(q: torch.Tensor, window_size: int | None, scale: float | None) -> str | None:
    """Why torch's ``varlen_attn`` cannot run this call (``None`` when it can)."""
    found = _torch_varlen_attn()
    if found is None:
        return "this torch has no torch.nn.attention.varlen.varlen_attn"
    params = found[1]
    if not q.is_cuda:
        return "varlen_attn needs CUDA tensors"
    if q.dtype not in (torch.float16, torch.bfloat16):
        return f"varlen_attn needs float16/bfloat16, got {q.dtype}"
    if q.shape[-1] % 8 != 0 or q.shape[-1] > 256:
        return f"varlen_attn needs a head dim that is a multiple of 8 up to 256, got {q.shape[-1]}"
    if device_capability() < (8, 0):
        return f"varlen_attn needs sm80+, got sm{device_capability()[0]}{device_capability()[1]}"
    if "window_size" not in params and ("is_causal" not in params or window_size is not None):
        return "this torch's varlen_attn has no window_size (sliding window / causal) argument"
    if scale is not None and "scale" not in params:
        return "this torch's varlen_attn has no scale argument"
    return None


def _on_gpu_path(q: torch.Tensor) -> bool:
    return select_backend(q) == "triton" and q.is_cuda


def _pick(q: torch.Tensor, varlen: bool, window_size: int | None, scale: float | None, fla_fits: bool) -> str:
    """The backend of one call; ``fla_fits``: ``parallel_attn`` can serve it (packed, or full-length queries
    without a key mask)."""
    requested = _requested()
    if requested == "flash":
        if not HAS_FLASH_ATTN:
            raise RuntimeError("FLA_ATTN_BACKEND=flash but flash-attn is not installed")
        return "flash"
    if requested == "varlen":
        if not varlen:
            return "sdpa"  # varlen_attn only serves packed batches; dense calls use SDPA
        reason = varlen_attn_unsupported(q, window_size, scale)
        if reason is not None:
            raise RuntimeError(f"FLA_ATTN_BACKEND=varlen but {reason}")
        return "varlen"
    if requested in ("sdpa", "triton"):
        # parallel_attn cannot serve queries shorter than the keys or a key mask (cached decoding, padding)
        return "triton" if requested == "triton" and fla_fits else "sdpa"
    if HAS_FLASH_ATTN and _on_gpu_path(q):
        return "flash"
    if varlen and _on_gpu_path(q) and varlen_attn_unsupported(q, window_size, scale) is None:
        return "varlen"
    if fla_fits and _on_gpu_path(q) and (varlen or window_size is not None):
        return "triton"  # SDPA would need an explicit mask here: no flash kernel (see the module docstring)
    return "sdpa"


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: str) -> None:
    check_shape("k", k, (*q.shape[:-3], None, None, q.shape[-1]), layout)
    check_shape("v", v, tuple(k.shape), layout)
    if q.shape[-2] % k.shape[-2] != 0:
        raise ValueError(f"q has {q.shape[-2]} heads, not a multiple of the {k.shape[-2]} key/value heads of k")


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask, is_causal: bool, scale: float | None):
    """SDPA on ``[B, T, H, D]`` tensors (GQA through ``enable_gqa``)."""
    o = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        attn_mask=mask,
        is_causal=is_causal,
        scale=scale,
        enable_gqa=q.shape[2] != k.shape[2],
    )
    return o.transpose(1, 2)


def _causal_mask(
    q_pos: torch.Tensor, k_pos: torch.Tensor, window_size: int | None, same_seq: torch.Tensor | None = None
) -> torch.Tensor:
    """``[Tq, Tk]`` bool: key position <= query position (and within the window / the same sequence)."""
    delta = q_pos[:, None] - k_pos[None, :]
    mask = delta >= 0
    if window_size is not None:
        mask = mask & (delta < window_size)
    if same_seq is not None:
        mask = mask & same_seq
    return mask


def attention_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    window_size: int | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Causal attention within each packed sequence.

    Args:
        q: ``[N, H, D]``; k, v: ``[N, Hkv, D]`` with ``H % Hkv == 0`` (GQA).
        cu_seqlens: ``[S+1]`` int32/int64 sequence boundaries (``cu_seqlens[-1] == N``).
        max_seqlen: longest sequence (flash-attn / varlen_attn need it).
        window_size: sliding window in tokens (``None``: full causal).
        scale: softmax scale (default ``D ** -0.5``).
    Returns:
        ``o [N, H, D]``.
    """
    _check_qkv(q, k, v, "[N, Hkv, D]")
    if k.shape[0] != q.shape[0]:
        raise ValueError(f"k has {k.shape[0]} tokens but q has {q.shape[0]}; packed q and k must cover the same tokens")
    backend = _pick(q, True, window_size, scale, fla_fits=True)
    if backend == "triton":
        return attention_varlen_fla(q, k, v, cu_seqlens, max_seqlen, window_size, scale)
    if backend == "flash":
        cu = cu_seqlens.to(torch.int32)
        flash_attn_varlen_func = _flash_attn()[1]
        window = _flash_window(window_size)
        return flash_attn_varlen_func(
            q, k, v, cu, cu, max_seqlen, max_seqlen, softmax_scale=scale, causal=True, window_size=window
        )
    if backend == "varlen":
        varlen_attn, params = _torch_varlen_attn()
        kwargs = {} if scale is None else {"scale": scale}
        if "window_size" in params:
            kwargs["window_size"] = (-1, 0) if window_size is None else (window_size - 1, 0)
        else:
            kwargs["is_causal"] = True
        if q.shape[1] != k.shape[1]:
            if "enable_gqa" in params:
                kwargs["enable_gqa"] = True
            else:
                groups = q.shape[1] // k.shape[1]
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        cu = cu_seqlens.to(torch.int32)
        return varlen_attn(q, k, v, cu, cu, max_seqlen, max_seqlen, **kwargs)
    pos = torch.arange(q.shape[0], device=q.device)
    seq = prepare_sequence_ids(cu_seqlens)
    mask = _causal_mask(pos, pos, window_size, seq[:, None] == seq[None, :])
    return _sdpa(q[None], k[None], v[None], mask, False, scale)[0]


def attention_dense(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    window_size: int | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Causal attention of the last ``Tq`` positions over ``Tk`` keys (bottom-right aligned).

    Args:
        q: ``[B, Tq, H, D]``; k, v: ``[B, Tk, Hkv, D]`` with ``Tk >= Tq`` and ``H % Hkv == 0``.
        key_mask: ``[B, Tk]`` bool, True for real keys (left padding); ``None``: all real.
            Every query must be a real token (it always sees itself).
        window_size: sliding window in tokens (``None``: full causal).
        scale: softmax scale (default ``D ** -0.5``).
    Returns:
        ``o [B, Tq, H, D]``.
    """
    _check_qkv(q, k, v, "[B, Tk, Hkv, D]")
    B, Tq, H, D = q.shape
    Tk = k.shape[1]
    if Tk < Tq:
        raise ValueError(f"k has {Tk} positions, fewer than the {Tq} queries of q")
    if key_mask is not None:
        check_shape("key_mask", key_mask, (B, Tk), "[B, Tk]")
    backend = _pick(q, False, window_size, scale, fla_fits=key_mask is None and Tq == Tk)
    if backend == "triton":
        return attention_dense_fla(q, k, v, window_size, scale)
    if backend == "flash":
        flash_attn_func, flash_attn_varlen_func = _flash_attn()
        if key_mask is None:
            return flash_attn_func(q, k, v, softmax_scale=scale, causal=True, window_size=_flash_window(window_size))
        info = get_padding_info(key_mask)
        cu_q = torch.arange(0, (B + 1) * Tq, Tq, dtype=torch.int32, device=q.device)
        k, v, window = unpad(k, info), unpad(v, info), _flash_window(window_size)
        o = flash_attn_varlen_func(
            q.flatten(0, 1),
            k,
            v,
            cu_q,
            info.cu_seqlens,
            Tq,
            info.max_seqlen,
            softmax_scale=scale,
            causal=True,
            window_size=window,
        )
        return o.view(B, Tq, H, D)
    if key_mask is None and window_size is None:
        # Tq == Tk: plain causal; Tq == 1: the last position sees every key
        if Tq == Tk or Tq == 1:
            return _sdpa(q, k, v, None, Tq == Tk and Tq > 1, scale)
    q_pos = torch.arange(Tk - Tq, Tk, device=q.device)
    mask = _causal_mask(q_pos, torch.arange(Tk, device=q.device), window_size)
    if key_mask is not None:
        mask = mask[None, None] & key_mask.bool()[:, None, None, :]
    return _sdpa(q, k, v, mask, False, scale)


def attention_varlen_fla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    window_size: int | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """:func:`attention_varlen` through :func:`fla.ops.attn.parallel_attn` (``max_seqlen`` is not needed)."""
    from fla.ops.attn import parallel_attn

    _check_qkv(q, k, v, "[N, Hkv, D]")
    return parallel_attn(q[None], k[None], v[None], scale=scale, window_size=window_size, cu_seqlens=cu_seqlens)[0]


def attention_dense_fla(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window_size: int | None = None, scale: float | None = None
) -> torch.Tensor:
    """:func:`attention_dense` through :func:`fla.ops.attn.parallel_attn`, for ``Tq == Tk`` and no key mask."""
    from fla.ops.attn import parallel_attn

    _check_qkv(q, k, v, "[B, Tk, Hkv, D]")
    if k.shape[1] != q.shape[1]:
        raise ValueError(f"attention_dense_fla needs as many keys as queries, got {k.shape[1]} and {q.shape[1]}")
    return parallel_attn(q, k, v, scale=scale, window_size=window_size)


__all__ = [
    "HAS_FLASH_ATTN",
    "attention_dense",
    "attention_dense_fla",
    "attention_varlen",
    "attention_varlen_fla",
    "varlen_attn_unsupported",
]
