"""Long convolutions by FFT (Hyena-style token mixing), fla 0.6.0's ``LongConvolution`` and ``ImplicitLongConvolution``
with the same parameters and outputs.

For ``x [B, T, D]`` and a per-channel filter ``k [D, L]`` (``L`` = ``max_len``), each channel gets

    y_t = x_t + sum_s x_s k_{(t - s) mod 2T}       (s < T; the filter cut or zero-padded to 2T taps)

computed as one real FFT of size ``2T`` per channel. For ``L <= T`` (the intended use: ``max_len`` at least the
sequence length only matters up to ``T``) the wrapped taps are zero and this is the causal convolution
``sum_{s <= t} x_s k_{t - s}`` plus the skip. With ``T < L < 2T`` taps ``k_j`` with ``j > T`` reach earlier tokens
through the wrap-around, as in fla 0.6.0 (kept for checkpoint compatibility; the tests pin it).

:class:`ImplicitLongConvolution` makes the filter with a small MLP over fixed positional features of each tap
(time in ``[0, 1]`` and ``(d_emb - 1) / 2`` complex-exponential bands).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from fla.utils import check_dtype


def fft_long_conv(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``x [B, D, T]`` convolved with ``k [D, L]`` over a period of ``2T`` (see the module doc), plus ``x``.

    Returns ``[B, D, T]`` in ``x.dtype`` (the FFTs run in ``k``'s dtype, at least float32).
    """
    T = x.shape[-1]
    n = 2 * T
    dtype = torch.promote_types(k.dtype, torch.float32)
    k_f = torch.fft.rfft(k.to(dtype), n=n)  # [D, T + 1]
    x_f = torch.fft.rfft(x.to(dtype), n=n)  # [B, D, T + 1]
    y = torch.fft.irfft(x_f * k_f, n=n)[..., :T]
    return (y + x.to(dtype)).to(x.dtype)


def _check_input(name: str, x: torch.Tensor, hidden_size: int) -> None:
    check_dtype("x", x)
    if x.dim() != 3 or x.shape[-1] != hidden_size:
        raise ValueError(f"{name}: x has shape {list(x.shape)}, expected [batch, seq_len, {hidden_size}]")


class LongConvolution(nn.Module):
    """FFT long convolution with a learned filter ``filter [hidden_size, max_len]`` (``randn`` init, as fla).

    ``forward(x [B, T, hidden_size]) -> y [B, T, hidden_size]`` (``x.dtype``); extra arguments are ignored.
    """

    def __init__(self, hidden_size: int, max_len: int, **kwargs) -> None:
        super().__init__()
        if hidden_size < 1 or max_len < 1:
            raise ValueError(f"LongConvolution: hidden_size={hidden_size} and max_len={max_len} must be positive")
        self.hidden_size, self.max_len = hidden_size, max_len
        self.filter = nn.Parameter(torch.randn(hidden_size, max_len))

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        _check_input("LongConvolution", x, self.hidden_size)
        return fft_long_conv(x.transpose(1, 2), self.filter).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, max_len={self.max_len}"


def positional_features(d_emb: int, seq_len: int) -> torch.Tensor:
    """``[1, seq_len, d_emb]``: tap ``j``'s time ``j / (seq_len - 1)`` and the real and imaginary parts of
    ``exp(-i f w_j)``, ``w_j = 2 pi j / seq_len``, for ``(d_emb - 1) / 2`` frequencies ``f`` evenly from 1e-4
    to ``bands - 1``."""
    bands = (d_emb - 1) // 2
    t = torch.linspace(0, 1, seq_len)[None, :, None]
    w = 2 * math.pi * torch.arange(seq_len, dtype=torch.float32)[None, :, None] / seq_len
    f = torch.linspace(1e-4, bands - 1, bands)[None, None]
    return torch.cat([t, torch.cos(f * w), -torch.sin(f * w)], dim=-1)


class PositionalEmbedding(nn.Module):
    """The fixed features of :func:`positional_features` as a frozen parameter ``z [1, seq_len, emb_dim]``
    (fla 0.6.0 keeps them in the state dict under this name)."""

    def __init__(self, emb_dim: int, seq_len: int, **kwargs) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.z = nn.Parameter(positional_features(emb_dim, seq_len), requires_grad=False)

    def forward(self, L: int) -> torch.Tensor:
        return self.z[:, :L]


class ImplicitLongConvolution(nn.Module):
    """FFT long convolution whose filter is ``mlp(positional features)``: ``Linear(d_emb, d_hidden)``, ReLU,
    ``Linear(d_hidden, hidden_size)`` over each tap's features (``pos_emb``, up to ``max_len`` taps).

    ``forward(x [B, T, hidden_size]) -> y [B, T, hidden_size]`` (``x.dtype``, ``T <= max_len``).
    """

    def __init__(self, hidden_size: int, max_len: int, d_emb: int = 3, d_hidden: int = 16, **kwargs) -> None:
        super().__init__()
        if d_emb < 3 or d_emb % 2 == 0:
            raise ValueError(f"ImplicitLongConvolution: d_emb={d_emb} must be odd and >= 3 (time, cosine, sine)")
        self.hidden_size, self.max_len, self.d_emb = hidden_size, max_len, d_emb
        self.pos_emb = PositionalEmbedding(emb_dim=d_emb, seq_len=max_len)
        self.mlp = nn.Sequential(nn.Linear(d_emb, d_hidden), nn.ReLU(), nn.Linear(d_hidden, hidden_size))

    def filter(self, seq_len: int, *args, **kwargs) -> torch.Tensor:
        """The first ``seq_len`` taps of the filter, ``[1, hidden_size, seq_len]``."""
        return self.mlp(self.pos_emb(seq_len)).transpose(1, 2)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        _check_input("ImplicitLongConvolution", x, self.hidden_size)
        if x.shape[1] > self.max_len:
            raise ValueError(f"ImplicitLongConvolution: seq_len={x.shape[1]} > max_len={self.max_len}")
        return fft_long_conv(x.transpose(1, 2), self.filter(x.shape[1])[0]).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, max_len={self.max_len}, d_emb={self.d_emb}"


__all__ = ["ImplicitLongConvolution", "LongConvolution", "fft_long_conv"]
