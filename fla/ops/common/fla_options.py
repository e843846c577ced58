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
import torch.nn.functional as F

_EXTRAS = {"state_v_first": False, "cu_seqlens_cpu": None}
_DELTA_EXTRAS = {"chunk_indices": None, "cp_context": None}


def state_to_kv(state: torch.Tensor | None, state_v_first: bool) -> torch.Tensor | None:
    """A state in the op's layout (``[N, H, V, K]`` when ``state_v_first``) as ``[N, H, K, V]``."""
    return state.transpose(-1, -2) if state is not None and state_v_first else state


def state_from_kv(state: torch.Tensor | None, state_v_first: bool) -> torch.Tensor | None:
    """A ``[N, H, K, V]`` state in the op's layout (contiguous ``[N, H, V, K]`` when ``state_v_first``)."""
    return state.transpose(-1, -2).contiguous() if state is not None and state_v_first else state


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
            bound.arguments["initial_state"] = state_to_kv(bound.arguments.get("initial_state"), True)
            o, final_state = fn(*bound.args, **bound.kwargs)
            return o, state_from_kv(final_state, True)

        params = list(signature.parameters.values())
        tail = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
        head = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d) for n, d in extras.items()]
        op.__signature__ = signature.replace(parameters=[*head, *added, *tail])
        return op

    return wrap


def sigmoid_beta(beta: torch.Tensor | None, apply: bool) -> torch.Tensor | None:
    """fla's ``use_beta_sigmoid_in_kernel``: ``sigmoid(beta)`` when ``apply`` (the ops' ``allow_neg_eigval`` then
    doubles it, as fla's ``2 sigmoid(beta)``)."""
    return torch.sigmoid(beta) if apply and beta is not None else beta


def decay_from_logits(
    g: torch.Tensor, A_log: torch.Tensor | None, dt_bias: torch.Tensor | None = None, lower_bound: float | None = None
) -> torch.Tensor:
    """fla's ``use_gate_in_kernel``: the log decay from the raw gate, in float32 (float64 stays float64)::

        -exp(A_log) * softplus(g + dt_bias)                       (default)
        lower_bound * sigmoid(exp(A_log) * (g + dt_bias))         (lower_bound set; without A_log: of g + dt_bias)

    Args:
        g: a scalar gate per value head ``[..., HV]``, or per head and key channel ``[B, T, HV, K]`` (4 dims: KDA).
        A_log: ``[HV]`` (may be ``None`` only with ``lower_bound``); dt_bias: ``[HV]`` / ``[HV * K]`` or ``None``.
    """
    per_channel = g.dim() == 4
    heads = tuple(g.shape[-2:]) if per_channel else tuple(g.shape[-1:])
    dtype = torch.promote_types(g.dtype, torch.float32)
    x = g.to(dtype)
    if dt_bias is not None:
        x = x + dt_bias.to(dtype).view(heads)
    a = None if A_log is None else A_log.to(dtype).exp().view(heads[0], *([1] if per_channel else []))
    if lower_bound is not None:
        return lower_bound * torch.sigmoid(x if a is None else a * x)
    return -a * F.softplus(x)


__all__ = [
    "accepts_fla_state_options",
    "decay_from_logits",
    "sigmoid_beta",
    "state_from_kv",
    "state_to_kv",
]
