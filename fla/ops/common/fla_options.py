"""fla 0.6.0's layout and hint keywords on our public ops, so that calls written for fla run unchanged.

:func:`accepts_fla_state_options` adds keyword-only arguments to an op returning ``(o, final_state)``:

* ``state_v_first``: states are ``[N, H, V, K]`` instead of ``[N, H, K, V]`` (fla's transposed layout): the
  initial state is read transposed and the final state returned transposed (views; gradients flow through);
* ``cu_seqlens_cpu``: a host copy of ``cu_seqlens`` that fla uses to skip a device sync; ours derive their chunk
  tables from ``cu_seqlens`` itself, so it is accepted and not needed;
* ``chunk_indices`` (where fla has it): fla's precomputed chunk table; likewise accepted and not needed;
* ``cp_context`` (where fla has it): fla's context-parallel state; not supported here (flame's context
  parallelism is a trainer feature): anything but ``None`` raises.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch

_EXTRAS = {"state_v_first": False, "cu_seqlens_cpu": None}
_DELTA_EXTRAS = {"chunk_indices": None, "cp_context": None}


def _transposed(state: torch.Tensor | None) -> torch.Tensor | None:
    return None if state is None else state.transpose(-1, -2)


def accepts_fla_state_options(delta: bool = False) -> Callable:
    """Decorator: ``fn(..., initial_state=..., ...) -> (o, final_state)`` also takes fla's ``state_v_first`` and
    ``cu_seqlens_cpu`` (``delta``: also ``chunk_indices`` and ``cp_context``) as keyword-only arguments."""
    extras = {**_EXTRAS, **(_DELTA_EXTRAS if delta else {})}

    def wrap(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def op(*args: Any, **kwargs: Any):
            options = {name: kwargs.pop(name, default) for name, default in extras.items()}
            if options.get("cp_context") is not None:
                raise ValueError(f"{fn.__name__}: cp_context (fla's context parallelism) is not supported here")
            if not options["state_v_first"]:
                return fn(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            bound.arguments["initial_state"] = _transposed(bound.arguments.get("initial_state"))
            o, final_state = fn(*bound.args, **bound.kwargs)
            return o, _transposed(final_state)

        params = list(signature.parameters.values())
        tail = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
        head = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d) for n, d in extras.items()]
        op.__signature__ = signature.replace(parameters=[*head, *added, *tail])
        return op

    return wrap


def sigmoid_beta(beta: torch.Tensor | None, apply: bool) -> torch.Tensor | None:
    """fla's ``use_beta_sigmoid_in_kernel``: ``sigmoid(beta)`` (in float32 for half inputs, back to beta's dtype);
    the ops' ``allow_neg_eigval`` then doubles it, as fla's ``2 sigmoid(beta)``."""
    if not apply or beta is None:
        return beta
    return beta.float().sigmoid().to(beta.dtype)


def gate_from_logits(g: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor | None) -> torch.Tensor:
    """fla's ``use_gate_in_kernel``: the log decay ``-exp(A_log) * softplus(g + dt_bias)`` (float32) from the raw
    gate ``g [..., HV]`` (``[..., HV, K]`` for a per-channel gate) with ``A_log``, ``dt_bias`` ``[HV]``
    (or ``[HV * K]``)."""
    x = g.float()
    if dt_bias is not None:
        x = x + dt_bias.float().reshape(x.shape[-1:] if x.dim() == 3 else x.shape[-2:])
    A = A_log.float().reshape(x.shape[-1:] if x.dim() == 3 else (x.shape[-2], 1))
    return -A.exp() * torch.nn.functional.softplus(x)


__all__ = ["accepts_fla_state_options", "gate_from_logits", "sigmoid_beta"]
