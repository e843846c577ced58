"""Shared checks for the gated linear-attention op tests (GLA, simple GLA, retention, linear attention).

An op under test and its reference take the same positional tensors (``q, k, v`` and the gates)
and keyword arguments; :func:`check_against_reference` runs the op with a backend, the reference in
float64 on copies of the same values, and compares the output, the final state and every gradient
(the final state's gradient included).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from tests.harness import DEVICE, assert_close, assert_grads_close, to_reference, tol, using

GRAD_NAMES = ("q", "k", "v", "g", "h0", "z0")
TOKEN_NAMES = ("q", "k", "v", "g")


def make_inputs(
    B: int,
    T: int,
    H: int,
    K: int,
    V: int,
    dtype: torch.dtype,
    gate: str = "none",
    strength: float = 1.0,
    num_states: int | None = None,
    device: torch.device = DEVICE,
    feature_map: bool = False,
) -> dict[str, torch.Tensor]:
    """Random leaf tensors (requiring grad): q, k, v, g (``gate`` in none / scalar / vector) and h0.

    ``strength`` scales the log gates ``logsigmoid(x)``; ``num_states`` adds ``h0 [N, H, K, V]``
    (float32, float64 for float64 inputs); ``feature_map`` makes q, k positive (``elu + 1``, for
    normalized linear attention).
    """
    q = torch.randn(B, T, H, K, device=device)
    k = torch.randn(B, T, H, K, device=device)
    if feature_map:
        q, k = F.elu(q) + 1, F.elu(k) + 1
    out = {"q": q, "k": k, "v": torch.randn(B, T, H, V, device=device)}
    if gate == "scalar":
        out["g"] = F.logsigmoid(torch.randn(B, T, H, device=device)) * strength
    elif gate == "vector":
        out["g"] = F.logsigmoid(torch.randn(B, T, H, K, device=device)) * strength
    out = {name: t.to(dtype) for name, t in out.items()}
    if num_states is not None:
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        out["h0"] = torch.randn(num_states, H, K, V, device=device, dtype=state_dtype)
    return {name: t.requires_grad_() for name, t in out.items()}


def _call(op: Callable, inputs: Mapping[str, torch.Tensor], kwargs: Mapping) -> tuple[torch.Tensor, tuple]:
    """``op(q, k, v, [g], initial_state=h0 or (h0, z0), **kwargs)`` -> ``(o, final states as a tuple)``."""
    gates = [inputs["g"]] if "g" in inputs else []
    h0 = (inputs.get("h0"), inputs["z0"]) if "z0" in inputs else inputs.get("h0")
    o, ht = op(inputs["q"], inputs["k"], inputs["v"], *gates, initial_state=h0, **kwargs)
    return o, (() if ht is None else ht if isinstance(ht, tuple) else (ht,))


def check_against_reference(
    op: Callable,
    reference: Callable,
    inputs: Mapping[str, torch.Tensor],
    backend: str,
    ratio: float | Mapping[str, float],
    **kwargs,
) -> None:
    """Compare ``op`` (run with ``backend``) with ``reference`` (float64) on ``inputs``.

    ``kwargs`` go to both (``output_final_state`` defaults to ``True``). ``ratio`` bounds the
    relative errors, or maps names (``o``, ``ht``, ``q``, ``k``, ``v``, ``g``, ``h0``) to bounds.
    """
    kwargs = {"output_final_state": True, **kwargs}
    bound = (lambda name: ratio[name]) if isinstance(ratio, Mapping) else (lambda name: ratio)
    with using(backend):
        o, ht = _call(op, inputs, kwargs)
    ref_inputs = {name: to_reference(t) for name, t in inputs.items()}
    ref_o, ref_ht = _call(reference, ref_inputs, kwargs)
    assert o.dtype == inputs["v"].dtype, f"o has dtype {o.dtype}, expected v's {inputs['v'].dtype}"
    assert len(ht) == len(ref_ht), f"{len(ht)} final states, reference has {len(ref_ht)}"
    assert_close("o", ref_o, o, bound("o"))
    state_dtype = torch.float64 if inputs["q"].dtype == torch.float64 else torch.float32
    for i, (s, ref_s) in enumerate(zip(ht, ref_ht)):
        assert s.dtype == state_dtype, f"final state {i} has dtype {s.dtype}, expected {state_dtype}"
        assert_close(f"ht[{i}]", ref_s, s, bound("ht"))
    grad_outputs = tuple(torch.randn_like(t) for t in (ref_o, *ref_ht))
    ratios = {name: bound(name) for name in inputs}
    assert_grads_close(inputs, ref_inputs, (o, *ht), (ref_o, *ref_ht), grad_outputs, ratios)


def default_ratios(dtype: torch.dtype, grad_scale: float = 1.0, dg_scale: float = 1.0) -> dict[str, float]:
    """Per-tensor bounds: ``tol(dtype)`` for o / ht, times ``grad_scale`` for grads (``dg_scale`` for g)."""
    base = tol(dtype)
    grads = {name: base * grad_scale for name in GRAD_NAMES}
    return {"o": base, "ht": base, **grads, "g": base * grad_scale * dg_scale}


def check_varlen_matches_loop(
    op: Callable,
    inputs: Mapping[str, torch.Tensor],
    lengths: list[int],
    backend: str,
    ratio: float,
    loop_backend: str | None = None,
    **kwargs,
) -> None:
    """``op`` on a packed row with ``cu_seqlens`` (run with ``backend``) == ``op`` on each sequence
    alone (run with ``loop_backend``, default the same), for the outputs, the final states and
    every gradient."""
    bounds = [0, *torch.tensor(lengths).cumsum(0).tolist()]
    cu = torch.tensor(bounds, dtype=torch.int32, device=inputs["q"].device)
    loop_inputs = {name: t.detach().clone().requires_grad_() for name, t in inputs.items()}
    with using(backend):
        o, ht = _call(op, inputs, {"output_final_state": True, "cu_seqlens": cu, **kwargs})
    with using(loop_backend or backend):
        outs, states = [], []
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            # token tensors are cut along T, per-sequence states along N
            piece = {name: t[:, a:b] if name in TOKEN_NAMES else t[i : i + 1] for name, t in loop_inputs.items()}
            o_i, ht_i = _call(op, piece, {"output_final_state": True, **kwargs})
            outs.append(o_i)
            states.append(ht_i)
    ref_o, ref_ht = torch.cat(outs, 1), tuple(torch.cat(parts, 0) for parts in zip(*states))
    assert_close("o (varlen vs loop)", ref_o, o, ratio)
    for i, (s, ref_s) in enumerate(zip(ht, ref_ht)):
        assert_close(f"ht[{i}] (varlen vs loop)", ref_s, s, ratio)
    grad_outputs = tuple(torch.randn_like(t) for t in (o, *ht))
    assert_grads_close(inputs, loop_inputs, (o, *ht), (ref_o, *ref_ht), grad_outputs, ratio)
