"""MesaNet (von Oswald et al. 2025, https://arxiv.org/abs/2506.05233): a linear solve per token over two decaying
states (README.md has the maths)."""

from fla.ops.mesa_net.chunk import chunk_mesa_net
from fla.ops.mesa_net.fused_recurrent import fused_recurrent_mesa_net, mesa_net_decoding_one_step
from fla.ops.mesa_net.naive import naive_mesa_net, naive_mesa_net_decoding_one_step, naive_mesa_net_exact

__all__ = [
    "chunk_mesa_net",
    "fused_recurrent_mesa_net",
    "mesa_net_decoding_one_step",
    "naive_mesa_net",
    "naive_mesa_net_decoding_one_step",
    "naive_mesa_net_exact",
]
