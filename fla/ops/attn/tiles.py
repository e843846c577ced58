"""Tile sizes of the softmax-attention kernels: autotune candidates, their pruning, the varlen tile.

Every kernel of :mod:`fla.ops.attn.parallel` takes two tile sizes from its autotune config: ``BT``, the rows a
program owns (queries for the forward and dq kernels, keys for the dkv kernel), and ``BS``, the rows of the other
side it loads per loop step. The candidates follow the Triton flash-attention tutorial's H100 choices for a head
dim of 128 (forward 128 x 64, 8 warps; dq 128 queries x 32 keys; dkv 128 keys x 32 queries) plus a neighbour or
two each, so the tuner has a choice without compiling dozens of variants.

Varlen grids come from ``chunk_indices`` of one tile (:func:`varlen_tile`), so a varlen launch keeps only the
candidates with that ``BT`` (``BS`` still tunes). Candidates whose shared memory would not fit are pruned by an
estimate; when none fits, the fallbacks that fit are tuned instead, and when none of those fits either, the
smallest runs.
"""

from __future__ import annotations

import torch
import triton

from fla.utils import IS_TRITON_INTERPRET

# (BT, BS, num_warps, num_stages) per kernel. Compiled for sm_90 at head dim 128 (bf16, GQA 4:1, window + gate;
# tests/fla/ops/attn_compile_check.py), 4-warp programs of 128 rows spill (fwd 128 x 64: ~1.3 KB, dq 128 x 32:
# ~0.5 KB, dkv 128 x 32: ~4 KB per thread: two 128 x 128 float32 accumulators), so the 128-row tiles run 8 warps.
FWD_TILES = ((128, 64, 8, 3), (128, 64, 8, 2), (128, 128, 8, 2), (64, 64, 4, 3))
DQ_TILES = ((128, 32, 8, 3), (128, 32, 8, 2), (128, 64, 8, 2), (64, 64, 8, 3))
DKV_TILES = ((128, 32, 8, 2), (128, 32, 8, 3), (64, 32, 8, 2), (64, 64, 8, 2))
# small tiles for head dims / dtypes where no candidate fits (float32, head dim 256): both varlen tiles, with and
# without a second pipeline stage
FALLBACK_TILES = ((64, 32, 8, 2), (128, 32, 8, 2), (64, 32, 8, 1), (128, 32, 8, 1))
# the interpreter runs one config: small tiles, BT = 2 BS, so short test sequences span several blocks
INTERPRET_TILES = (32, 16, 4, 1)
SMEM_BUDGET = 200 * 1024  # bytes of operand tiles a config may stage (H100: 227 KB per block, minus scratch)


def _config(tile: tuple[int, int, int, int]) -> triton.Config:
    BT, BS, warps, stages = tile
    return triton.Config({"BT": BT, "BS": BS}, num_warps=warps, num_stages=stages)


def tile_configs(tiles: tuple[tuple[int, int, int, int], ...]) -> list[triton.Config]:
    """Autotune configs of a kernel; the single interpreter config under ``TRITON_INTERPRET=1``."""
    if IS_TRITON_INTERPRET:
        return [_config(INTERPRET_TILES)]
    return [_config(t) for t in tiles]


def varlen_tile(dtype: torch.dtype, BK: int, BV: int) -> int:
    """``BT`` of every varlen launch (the ``chunk_indices`` are built for it): 128 for 16-bit inputs up to head
    dim 128, else 64 (32 under the interpreter)."""
    if IS_TRITON_INTERPRET:
        return INTERPRET_TILES[0]
    return 128 if max(BK, BV) <= 128 and dtype.itemsize <= 2 else 64


def smem_bytes(config: triton.Config, itemsize: int, BK: int, BV: int) -> int:
    """Operand tiles a config keeps in shared memory: the program's ``BT`` rows of two operands (q and do, or k
    and v) once, and the ``BS`` rows of the other two per pipeline stage. Triton's own figure at head dim 128,
    bf16, is this within 1% for the backward kernels and below it for the forward (q only, no do)."""
    BT, BS = config.kwargs["BT"], config.kwargs["BS"]
    return itemsize * (BK + BV) * (BT + max(1, config.num_stages) * BS)


def prune_tiles(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """``early_config_prune`` of the attention kernels: the varlen tile only, within :data:`SMEM_BUDGET`."""
    args = {**named_args, **kwargs}
    q, BK, BV = args["q"], args["BK"], args["BV"]
    itemsize = q.element_size()
    tile = varlen_tile(q.dtype, BK, BV) if args.get("IS_VARLEN") else None

    def usable(cs):
        return [c for c in cs if tile is None or c.kwargs["BT"] == tile]

    def fitting(cs):
        return [c for c in usable(cs) if smem_bytes(c, itemsize, BK, BV) <= SMEM_BUDGET]

    fallbacks = [_config(t) for t in FALLBACK_TILES]
    return (
        fitting(configs)
        or fitting(fallbacks)
        or [min(usable(fallbacks), key=lambda c: smem_bytes(c, itemsize, BK, BV))]
    )
