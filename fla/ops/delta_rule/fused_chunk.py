"""``fused_chunk_delta_rule``: fla's name for the chunked delta rule (fla 0.6.0 only keeps the name and raises)."""

import torch

from fla.ops.delta_rule.chunk import chunk_delta_rule


def fused_chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    use_qk_l2norm_in_kernel: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The delta rule, as :func:`fla.ops.delta_rule.chunk_delta_rule` (same arguments, shapes and returns).

    fla 0.6.0 keeps ``fused_chunk_delta_rule(**kwargs)`` only as a name that raises "use chunk_delta_rule";
    here it runs ``chunk_delta_rule``: q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, beta ``[B, T, H]`` ->
    (o ``[B, T, H, V]``, final state ``[N, H, K, V]`` or ``None``)."""
    return chunk_delta_rule(
        q, k, v, beta, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm_in_kernel
    )


__all__ = ["fused_chunk_delta_rule"]
