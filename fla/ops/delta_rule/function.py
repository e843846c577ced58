"""The autograd Function of the Triton delta-rule paths (chunked and recurrent).

The forward runs the given Triton forward; the backward recomputes the chunked PyTorch form
(:mod:`.chunk_torch`) under autograd from the saved inputs: exact and device-agnostic, a stand-in
until the Triton backward stages exist.
"""

from __future__ import annotations

import torch

from fla.ops.delta_rule.naive import chunk_delta_rule_torch
from fla.utils import contiguous

# forward argument positions of the tensor inputs q, k, v, beta, g, initial_state
_TENSOR_ARGS = (1, 2, 3, 4, 5, 7)


class DeltaRuleFunction(torch.autograd.Function):
    """``apply(fwd, q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens, l2norm, neg_eigval)``
    with ``fwd`` taking the same arguments after itself and returning ``(o, final state or None)``."""

    @staticmethod
    @contiguous
    def forward(ctx, fwd, q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens, l2norm, neg_eigval):
        o, ht = fwd(q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens, l2norm, neg_eigval)
        ctx.save_for_backward(q, k, v, beta, g, initial_state, cu_seqlens)
        ctx.options = (scale, output_final_state, l2norm, neg_eigval)
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, beta, g, initial_state, cu_seqlens = ctx.saved_tensors
        scale, output_final_state, l2norm, neg_eigval = ctx.options
        inputs = [q, k, v, beta, g, initial_state]
        wanted = [t is not None and ctx.needs_input_grad[i] for i, t in zip(_TENSOR_ARGS, inputs)]
        with torch.enable_grad():
            leaves = [None if t is None else t.detach().requires_grad_(w) for t, w in zip(inputs, wanted)]
            o, ht = chunk_delta_rule_torch(
                *leaves[:5], scale, leaves[5], output_final_state, cu_seqlens, l2norm, neg_eigval
            )  # fmt: skip
            outs, grads = [o], [do]
            if ht is not None and dht is not None:
                outs.append(ht)
                grads.append(dht)
            targets = [t for t, w in zip(leaves, wanted) if w]
            got = iter(torch.autograd.grad(outs, targets, grads, allow_unused=True) if targets else ())
        dq, dk, dv, dbeta, dg, dh0 = (next(got) if w else None for w in wanted)
        return None, dq, dk, dv, dbeta, dg, None, dh0, None, None, None, None
