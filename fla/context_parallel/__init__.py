"""Context parallelism: sequences split along time over ranks, the layers' states and the short convolutions' inputs
passed between them. :mod:`.context` (the split), :mod:`.state` (chunk ops: the states' scan over the ranks),
:mod:`.diagonal` (diagonal transitions: Mamba's selective scan, HGRN), :mod:`.gsa` (GSA, ABC), :mod:`.lightnet`,
:mod:`.linear_attn`, :mod:`.mesa_net`, :mod:`.normalizer` (running key sums and log-sum-exps), :mod:`.halo` (short
convolutions, token shifts, earlier tokens for attention)."""

from fla.context_parallel.comm import gather_ranks
from fla.context_parallel.context import CPContext
from fla.context_parallel.diagonal import cp_hgrn, cp_selective_scan
from fla.context_parallel.gsa import cp_abc, cp_gsa
from fla.context_parallel.halo import conv_with_halo, earlier_tokens, previous_tail, token_shift_with_halo
from fla.context_parallel.lightnet import cp_lightnet
from fla.context_parallel.linear_attn import cp_linear_attn
from fla.context_parallel.mesa_net import cp_mesa_net
from fla.context_parallel.state import cp_chunk_op

__all__ = [
    "CPContext",
    "conv_with_halo",
    "cp_abc",
    "cp_chunk_op",
    "cp_gsa",
    "cp_hgrn",
    "cp_lightnet",
    "cp_linear_attn",
    "cp_mesa_net",
    "cp_selective_scan",
    "earlier_tokens",
    "gather_ranks",
    "previous_tail",
    "token_shift_with_halo",
]
