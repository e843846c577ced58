"""The online-softmax step of the flash-style attention kernels (fla/ops/attn, nsa, path_attn)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def online_softmax_step(b_s, b_v, b_m, b_l, b_o, DOT_PRECISION: tl.constexpr):
    """Fold one block of keys into the running softmax: scores ``b_s [BQ, BS]`` (float32, ``-inf`` where masked),
    values ``b_v [BS, BV]``; running row max ``b_m [BQ]``, sum of ``exp(s - m)`` ``b_l [BQ]`` and weighted values
    ``b_o [BQ, BV]`` (float32). Returns the updated ``(b_m, b_l, b_o)``: earlier sums rescale by ``exp(m - m')``.
    A row whose keys are all masked so far keeps ``m`` at its finite initial value and adds ``exp(-inf) = 0``."""
    b_mn = tl.maximum(b_m, tl.max(b_s, 1))
    b_r = tl.exp(b_m - b_mn)  # [BQ] rescale of what was summed so far
    b_p = tl.exp(b_s - b_mn[:, None])  # [BQ, BS]
    b_l = b_l * b_r + tl.sum(b_p, 1)
    b_o = b_o * b_r[:, None] + tl.dot(b_p.to(b_v.dtype), b_v, input_precision=DOT_PRECISION)
    return b_mn, b_l, b_o
