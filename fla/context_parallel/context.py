"""Which tokens a context-parallel rank holds, and how its sequences continue across the rank boundaries.

Context parallelism splits every sequence along time into ``R`` contiguous slices of equal length, slice ``r`` on
rank ``r`` of the group. A dense batch ``[B, T]`` splits each row (every row continues across every boundary); a
packed batch (``B == 1``, ``cu_seqlens`` over the whole row) splits the row, so a document may start, end or pass
through a rank, and each rank holds local ``cu_seqlens`` of the pieces it has. What a rank needs of the others:

* the state entering its first local piece, when that piece continues a document from the previous rank
  (:mod:`.state`);
* the last few inputs of the previous rank for its short convolutions / token shift (:mod:`.halo`).

Every rank builds the same :class:`CPContext` from the global layout (the data loader knows it): each rank's flags
are known everywhere, so the ranks agree on the chain without exchanging metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class CPContext:
    """This rank's slice of the sequences and everyone's boundary flags.

    Attributes:
        group: the context-parallel process group (``R`` ranks, slice ``r`` on group rank ``r``).
        rank, world: this rank in the group and ``R``.
        local_len: tokens of this rank's slice (the same on every rank).
        cu_seqlens: ``[N_local + 1]`` int32 boundaries of the local pieces (packed batch), or ``None`` (dense).
        continues_in: per rank, whether its first piece continues a document of the previous rank.
        single: per rank, whether its slice holds one piece (then a document passes through it).
        carried: per rank, tokens of its first piece's document that lie on earlier ranks (what a short
            convolution may read across the boundary; 0 when the document starts on the rank).
        first_len: tokens of this rank's first local piece.
    """

    group: dist.ProcessGroup
    rank: int
    world: int
    local_len: int
    cu_seqlens: torch.Tensor | None
    continues_in: tuple[bool, ...]
    single: tuple[bool, ...]
    carried: tuple[int, ...]
    first_len: int

    @classmethod
    def dense(cls, group: dist.ProcessGroup, seq_len: int) -> CPContext:
        """Rows of ``seq_len`` tokens (the whole sequence, before the split), each split over the group."""
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        local_len = _local_len(seq_len, world)
        return cls(group, rank, world, local_len, None, tuple(r > 0 for r in range(world)), (True,) * world,
                     tuple(r * local_len for r in range(world)), local_len)  # fmt: skip

    @classmethod
    def packed(cls, group: dist.ProcessGroup, cu_seqlens: torch.Tensor, device=None) -> CPContext:
        """One packed row of documents, ``cu_seqlens [N + 1]`` over the whole row (before the split; read on the
        host: pass it before it goes to the device), the local boundaries on ``device`` (default: its own)."""
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        bounds = [int(b) for b in cu_seqlens.tolist()]
        if cu_seqlens.dim() != 1 or len(bounds) < 2 or bounds[0] != 0 or any(b > e for b, e in zip(bounds, bounds[1:])):
            raise ValueError(f"cu_seqlens must be a non-decreasing [N+1] row from 0, got {bounds[:8]}")
        local_len = _local_len(bounds[-1], world)
        starts = set(bounds)
        continues_in, single, carried, local, first_len = [], [], [], None, 0
        for r in range(world):
            lo, hi = r * local_len, (r + 1) * local_len
            inner = sorted(b for b in starts if lo < b < hi)
            continues_in.append(lo not in starts)
            single.append(not inner)
            carried.append(lo - max(b for b in starts if b <= lo))
            if r == rank:
                cuts = [0, *(b - lo for b in inner), local_len]
                local = torch.tensor(cuts, dtype=torch.int32, device=device or cu_seqlens.device)
                first_len = cuts[1]
        return cls(group, rank, world, local_len, local, tuple(continues_in), tuple(single), tuple(carried), first_len)

    def check_call(self, where: str, cached: bool, padded: bool, cu_seqlens: torch.Tensor | None) -> None:
        """``ValueError`` naming ``where`` (a layer) unless it runs a training slice: no cache (``cached``), no
        padding mask (``padded``), and ``cu_seqlens`` exactly when this context is packed."""
        if cached:
            raise ValueError(f"{where}: context parallel runs without a cache (past_key_values)")
        if padded:
            raise ValueError(f"{where}: context parallel takes documents packed with cu_seqlens, not a padding mask")
        if (cu_seqlens is None) != (self.cu_seqlens is None):
            raise ValueError(f"{where}: cu_seqlens must be given exactly when cp_context is packed")

    def position_offsets(self) -> int | torch.Tensor:
        """Position of each local piece's first token in its document: ``carried`` of this rank for the first
        piece, 0 for the others (they start on this rank). An int for a dense batch, else ``[N_local]`` int64."""
        first = self.carried[self.rank]
        if self.cu_seqlens is None:
            return first
        offsets = torch.zeros(self.cu_seqlens.numel() - 1, dtype=torch.int64, device=self.cu_seqlens.device)
        offsets[0] = first
        return offsets

    def check_slice(self, name: str, x: torch.Tensor, cu_seqlens: torch.Tensor | None) -> None:
        """``ValueError`` naming ``name`` (an op's argument) unless ``x [B, T_local, ..]`` is this rank's slice and
        ``cu_seqlens`` is given exactly when this context is packed."""
        if (cu_seqlens is None) != (self.cu_seqlens is None):
            raise ValueError("context parallel: cu_seqlens must be given exactly when the context is packed")
        if x.shape[1] != self.local_len:
            raise ValueError(f"context parallel: {name} has {x.shape[1]} tokens, the context's slice {self.local_len}")

    def first_piece(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, T_local, ..]`` -> the first local piece's tokens (the one a previous rank's document may go on
        into): ``[1, first_len, ..]`` packed, the whole slice of a dense batch."""
        return x[:, : self.first_len] if self.cu_seqlens is not None else x

    def last_piece_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """``[T_local]`` bool on ``x``'s device: the tokens of the last local piece (the one that may go on to the
        next rank), found on the device (no host sync); ``None`` for a dense batch (every token)."""
        if self.cu_seqlens is None:
            return None
        return torch.arange(x.shape[1], device=x.device) >= self.cu_seqlens[-2]

    def with_other_pieces(self, o_first: torch.Tensor, other_pieces: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The first local piece's outputs ``o_first [B or 1, first_len, ..]`` (run over its document's tokens on
        the earlier ranks too) followed by the other pieces', which start on this rank: ``other_pieces()`` runs the
        local pieces alone, ``[1, T_local, ..]``, called only for a packed batch (a dense one is all first piece)."""
        if self.cu_seqlens is None:
            return o_first
        return torch.cat([o_first, other_pieces()[:, self.first_len :]], 1)

    def last_piece_states(self, states: torch.Tensor) -> torch.Tensor:
        """``states [N_local, ..]`` (an op's final states per local piece) -> those of the last piece, the one that
        may go on to the next rank: ``[1, ..]`` packed, every row ``[B, ..]`` of a dense batch."""
        return states[-1:] if self.cu_seqlens is not None else states

    def per_piece(self, first: torch.Tensor, fill: float) -> torch.Tensor:
        """Rows for every local piece from the first piece's ``first [B or 1, ..]``: the pieces that start on this
        rank get ``fill`` (``[N_local, ..]``; a dense batch's rows are all first pieces)."""
        pieces = first.shape[0] if self.cu_seqlens is None else self.cu_seqlens.numel() - 1
        return torch.cat([first, first.new_full((pieces - first.shape[0], *first.shape[1:]), fill)])

    def shard(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """This rank's slice of a whole-sequence tensor along ``dim`` (``[B, T, ...]``: time is ``dim=1``)."""
        if x.shape[dim] != self.local_len * self.world:
            raise ValueError(f"shard: dim {dim} has {x.shape[dim]} tokens, expected {self.local_len * self.world}")
        return x.narrow(dim, self.rank * self.local_len, self.local_len)


def _local_len(total: int, world: int) -> int:
    if total % world != 0:
        raise ValueError(f"context parallel: {total} tokens do not split into {world} equal slices")
    return total // world


__all__ = ["CPContext"]
