"""MoM: mixture of memories (Du et al. 2025, https://arxiv.org/abs/2502.13685), parameter-compatible with fla 0.6.0.

A router ``gate`` sends every token to its ``topk`` of ``num_memories`` memories; each memory is a
Gated DeltaNet recurrence with its own key / value / beta / decay projections (``k_proj[e]``,
``v_proj[e]``, ``b_proj[e]``, ``a_proj[e]``) that only sees the tokens routed to it, in order, per
document. With ``shared_mem`` one more memory (``shared_{k,v,b,a}``) sees every token. The query
projection ``q_proj``, the short convolutions, the decay parameters ``A_log`` / ``dt_bias``, the
output norm and projections are shared by all memories. Per token ``t`` and head::

    w, E  = topk(softmax(gate(x_t)))  (renormalized to sum to 1)
    o_t   = sum_{e in E} w_e GDN_e(t)  [+ GDN_shared(t)]       (GDN_e: memory e's recurrence at t)
    out_t = o_proj(o_norm(o_t, g_proj(x_t)))

where, inside memory ``e`` over its own tokens ``s`` (the Gated DeltaNet rule, q and k L2-normalized)::

    g_s = -exp(A_log) * softplus(a_proj[e](x_s) + dt_bias),   beta_s = sigmoid(b_proj[e](x_s))
    S_s = exp(g_s) S_prev - beta_s k_s (k_s^T exp(g_s) S_prev) + beta_s k_s v_s^T,   o_s = q_s^T S_s / sqrt(K)

q, k and v pass SiLU short convolutions (SiLU alone without ``use_short_conv``); the routed copies
are convolved along their memory's sequence. ``single_kv_proj`` replaces the per-memory projections
by the shared ones. Routing and packing: :mod:`fla.layers.mom_routing` (all routed sequences run as
one varlen call of :func:`fla.ops.gated_delta_rule.chunk_gated_delta_rule` /
:func:`~fla.ops.gated_delta_rule.fused_recurrent_gated_delta_rule`).

``forward`` returns fla's 4-tuple ``(out, None, past_key_values, router_logits)`` with
``router_logits [B * T, num_memories]`` (zeros at padding positions; ``[N_tokens, M]`` for a packed
batch), which the model turns into the load-balancing loss.

Cache (per layer): ``recurrent_state = (memories [B, M, H, K, V], shared [B, H, K, V] or None)``
float32 and ``conv_state = ((q, k, v) [B, M, D, W] each, shared (q, k, v) [B, D, W] or None)``: a
memory that a row's new tokens were not routed to keeps its states.

Against fla 0.6.0 (same parameters, same maths otherwise; tests/fla/models/fla060_mom_compat.py
compares the logits): fla groups the routed tokens with an unstable ``argsort``, so a memory may
see its tokens out of order (on CPU it does); here they are always in order. fla convolves the
routed sequences of a training batch without their boundaries (it runs the convolution on the
packed batch as one sequence); here they are always kept apart, so training and evaluation agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import initialization as init

from fla.layers.delta_net import DELTA_MODES, DeltaMixer
from fla.layers.gated_deltanet import DT_FLOOR, DT_RANGE, gdn_gate
from fla.layers.linear_mixer import MixerStep, split_heads
from fla.layers.mom_routing import MemoryPacking, gather_states, pack_by_memory, route, scatter_states, unpack
from fla.layers.utils import repad as repad_tokens
from fla.modules.conv import ShortConvolution
from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule

A_INIT_RANGE = (0.0, 16.0)  # fla 0.6.0's MoM: exp(A_log) ~ U(0, 16)
A_INIT_MIN = 1e-4  # ... kept above 0 so that A_log is finite
XAVIER_GAIN = 2**-2.5  # fla 0.6.0's MoM: xavier-uniform projections with this gain


def per_memory(projs: nn.ModuleList, x: torch.Tensor, offsets: list[int]) -> torch.Tensor:
    """Memory ``e``'s projection on its packed range ``x[offsets[e]:offsets[e + 1]]``, concatenated."""
    return torch.cat([proj(x[a:b]) for proj, a, b in zip(projs, offsets[:-1], offsets[1:])])


class MomAttention(DeltaMixer):
    """Mixture-of-memories token mixer (see the module docstring).

    Args:
        hidden_size: model width.
        head_dim: q / k head size ``K``; ``num_heads``: heads of every memory.
        expand_v: value head size ``V = head_dim * expand_v``.
        mode: ``"chunk"`` (default) or ``"fused_recurrent"`` for training / prefill.
        use_output_gate: gated output norm with ``g_proj``.
        use_short_conv, conv_size, conv_bias: SiLU short convolutions on q, k, v.
        layer_idx: index in the cache (required when a cache is used).
        norm_eps: of ``o_norm``.
        num_memories: routed memories ``M``; ``topk``: memories per token.
        capacity: accepted for fla compatibility; no token is ever dropped (as in fla 0.6.0).
        shared_mem: add a memory that every token updates.
        single_kv_proj: all memories share ``shared_{k,v,b,a}`` instead of their own projections.

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    chunk_op = staticmethod(chunk_gated_delta_rule)
    recurrent_op = staticmethod(fused_recurrent_gated_delta_rule)

    def __init__(
        self,
        hidden_size: int = 2048,
        head_dim: int = 256,
        num_heads: int = 4,
        expand_v: float = 2,
        mode: str = "chunk",
        use_output_gate: bool = True,
        use_short_conv: bool = True,
        conv_size: int = 4,
        conv_bias: bool = False,
        layer_idx: int | None = None,
        norm_eps: float = 1e-5,
        num_memories: int = 8,
        topk: int = 2,
        capacity: float = 1.0,
        shared_mem: bool = False,
        single_kv_proj: bool = False,
        **kwargs,
    ):
        super().__init__()
        self.check_mode(mode, DELTA_MODES)
        self.set_dims(hidden_size, head_dim, num_heads, expand_v)
        if not isinstance(num_memories, int) or num_memories < 1:
            raise ValueError(f"MomAttention: num_memories={num_memories!r} must be a positive int")
        if not isinstance(topk, int) or not 1 <= topk <= num_memories:
            raise ValueError(f"MomAttention: topk={topk!r} must be an int in 1 .. num_memories={num_memories}")
        self.num_memories, self.topk, self.capacity = num_memories, topk, capacity
        self.shared_mem, self.single_kv_proj = shared_mem, single_kv_proj
        self.layer_idx = layer_idx
        self.use_short_conv, self.conv_size, self.conv_bias = use_short_conv, conv_size, conv_bias
        self.use_output_gate = use_output_gate

        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.gate = nn.Linear(hidden_size, num_memories, bias=False)
        if not single_kv_proj:
            self.k_proj = self.memory_projections(self.key_dim)
            self.v_proj = self.memory_projections(self.value_dim)
            self.b_proj = self.memory_projections(num_heads)
            self.a_proj = self.memory_projections(num_heads)
        if single_kv_proj or shared_mem:
            self.shared_k = nn.Linear(hidden_size, self.key_dim, bias=False)
            self.shared_v = nn.Linear(hidden_size, self.value_dim, bias=False)
            self.shared_b = nn.Linear(hidden_size, num_heads, bias=False)
            self.shared_a = nn.Linear(hidden_size, num_heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(num_heads, dtype=torch.float32))
        self.dt_bias = nn.Parameter(torch.empty(num_heads, dtype=torch.float32))
        self.A_log._no_weight_decay = self.dt_bias._no_weight_decay = True
        if use_short_conv:
            self.q_conv1d = ShortConvolution(self.key_dim, conv_size, bias=conv_bias, activation="silu")
            self.k_conv1d = ShortConvolution(self.key_dim, conv_size, bias=conv_bias, activation="silu")
            self.v_conv1d = ShortConvolution(self.value_dim, conv_size, bias=conv_bias, activation="silu")
        self.build_o_norm(hidden_size, use_output_gate, norm_eps)
        self.reset_parameters()

    def set_dims(self, hidden_size: int, head_dim: int, num_heads: int, expand_v: float) -> None:
        """``key_dim = num_heads * head_dim``, ``value_dim = key_dim * expand_v`` (fla's); raise on bad sizes."""
        for name, value in (("hidden_size", hidden_size), ("head_dim", head_dim), ("num_heads", num_heads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MomAttention: {name}={value!r} must be a positive int")
        head_v_dim = head_dim * expand_v
        if abs(head_v_dim - round(head_v_dim)) > 1e-6 or round(head_v_dim) < 1:
            raise ValueError(f"MomAttention: head_dim * expand_v = {head_dim} * {expand_v} is not a positive integer")
        self.hidden_size = hidden_size
        self.num_heads = self.num_kv_heads = num_heads
        self.head_dim = self.head_k_dim = head_dim
        self.head_v_dim = round(head_v_dim)
        self.key_dim, self.value_dim = num_heads * head_dim, num_heads * self.head_v_dim
        self.key_dim_per_group, self.value_dim_per_group = self.key_dim, self.value_dim

    def memory_projections(self, width: int) -> nn.ModuleList:
        """One ``Linear(hidden_size, width)`` per routed memory."""
        return nn.ModuleList(nn.Linear(self.hidden_size, width, bias=False) for _ in range(self.num_memories))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """fla 0.6.0's MoM init: every projection (``nn.Linear``) xavier-uniform with gain ``2 ** -2.5`` (in fla's
        models too: its layer marks them initialized), the short convolutions PyTorch's default (kaiming-uniform),
        ``exp(A_log) ~ U(0, 16)`` (at least 1e-4), ``softplus(dt_bias)`` log-uniform in ``[1e-3, 1e-1]``.

        Called at construction and by the models' ``_init_weights`` (after the shared init of the submodules);
        parameters already loaded by transformers (``_is_hf_initialized``) are kept; meta tensors are skipped.
        """
        if self.A_log.device.type == "meta":
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                init.xavier_uniform_(module.weight, gain=XAVIER_GAIN)
            elif isinstance(module, ShortConvolution):
                init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        if not getattr(self.A_log, "_is_hf_initialized", False):
            A = torch.empty_like(self.A_log).uniform_(*A_INIT_RANGE).clamp_min(A_INIT_MIN)
            self.A_log.copy_(A.log())
        if not getattr(self.dt_bias, "_is_hf_initialized", False):
            lo, hi = math.log(DT_RANGE[0]), math.log(DT_RANGE[1])
            dt = (torch.rand_like(self.dt_bias) * (hi - lo) + lo).exp().clamp_min(DT_FLOOR)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)

    def extra_repr(self) -> str:
        return (
            super().extra_repr() + f", num_memories={self.num_memories}, topk={self.topk}, "
            f"shared_mem={self.shared_mem}, single_kv_proj={self.single_kv_proj}"
        )

    # ---- one memory's recurrence -------------------------------------------------------------------

    def convolve(self, qkv: tuple, cache: tuple | None, store: bool, cu_seqlens: torch.Tensor | None) -> tuple:
        """SiLU short convolutions of ``(q, k, v)`` ``[B', T', width]`` (or SiLU alone): ``(q, k, v), states``."""
        if not self.use_short_conv:
            return tuple(F.silu(t) for t in qkv), None
        convs = (self.q_conv1d, self.k_conv1d, self.v_conv1d)
        cache = cache or (None, None, None)
        outs = [
            conv(t, cache=c, output_final_state=store, cu_seqlens=cu_seqlens) for conv, t, c in zip(convs, qkv, cache)
        ]
        return tuple(o for o, _ in outs), (tuple(s for _, s in outs) if store else None)

    def recurrence(self, step: MixerStep, q, k, v, a, b, initial_state, cu_seqlens) -> tuple:
        """Gated delta rule over ``[B', T']`` (or packed) inputs: ``q, k [.., key_dim]``, ``v [.., value_dim]``,
        ``a, b [.., H]`` -> ``(o [B', T', H, V], final_state [N, H, K, V] or None)``."""
        op = self.recurrent_op if self.use_recurrent(step) else self.chunk_op
        q, k, v = split_heads(q, self.head_k_dim), split_heads(k, self.head_k_dim), split_heads(v, self.head_v_dim)
        return op(
            q, k, v, gdn_gate(a, self.A_log, self.dt_bias), b.sigmoid(),
            initial_state=initial_state,
            output_final_state=step.store,
            cu_seqlens=cu_seqlens,
            use_qk_l2norm_in_kernel=True,
        )  # fmt: skip

    # ---- routed and shared memories ------------------------------------------------------------------

    def routed_projections(self, xr: torch.Tensor, offsets: list[int]) -> tuple[torch.Tensor, ...]:
        """``k, v, a, b`` of the packed routed tokens ``xr [L, D]`` with each memory's own projections."""
        if self.single_kv_proj:
            return self.shared_k(xr), self.shared_v(xr), self.shared_a(xr), self.shared_b(xr)
        return tuple(per_memory(projs, xr, offsets) for projs in (self.k_proj, self.v_proj, self.a_proj, self.b_proj))

    def routed_memories(
        self, step: MixerStep, x: torch.Tensor, q: torch.Tensor, packing: MemoryPacking, num_docs: int
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple | None]:
        """The routed memories on their packed sequences: ``x [N, D]``, ``q [N, key_dim]`` per token ->
        ``(o [N * topk, H, V] in packed order, states [D, M, H, K, V], conv states (q, k, v) [D, M, width, W])``."""
        tokens, cu = packing.tokens, packing.cu_seqlens
        xr = x[tokens]
        k, v, a, b = self.routed_projections(xr, packing.memory_offsets)
        old = step.slot("recurrent_state")
        old_conv = step.slot("conv_state")
        old_conv = (None, None, None) if old_conv is None else old_conv[0]
        conv0 = tuple(gather_states(s, packing) for s in old_conv)
        (q, k, v), conv = self.convolve((q[tokens][None], k[None], v[None]), conv0, step.store, cu)  # [1, L, width]
        old = None if old is None else old[0]
        o, final = self.recurrence(step, q, k, v, a[None], b[None], gather_states(old, packing), cu)
        if not step.store:
            return o[0], None, None
        M = self.num_memories
        state = scatter_states(old, final, packing, num_docs, M)
        if conv is not None:
            conv = tuple(scatter_states(c0, c, packing, num_docs, M) for c0, c in zip(old_conv, conv))
        return o[0], state, conv

    def shared_memory(self, step: MixerStep, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, tuple | None]:
        """The shared memory over every token of ``step.x``: ``q [B', T', key_dim]`` ->
        ``(o [B', T', H, V], state [B, H, K, V], conv states (q, k, v) [B, width, W])``."""
        x = step.x
        old = step.slot("recurrent_state")
        old_conv = step.slot("conv_state")
        qkv = (q, self.shared_k(x), self.shared_v(x))
        (q, k, v), conv = self.convolve(qkv, None if old_conv is None else old_conv[1], step.store, step.cu_seqlens)
        initial = None if old is None else old[1]
        o, final = self.recurrence(step, q, k, v, self.shared_a(x), self.shared_b(x), initial, step.cu_seqlens)
        return o, final, conv

    # Not compiled: routing sizes the memories' packed sequences on the host (two syncs a layer, so dynamo splits the
    # layer into several graphs anyway), and on an H100 (torch 2.11) inductor failed on one of those pieces
    # (KeyError in Scheduler.compute_ancestors) when flame compiled MoM-340M. The kernels are Triton either way.
    @torch.compiler.disable
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool | None = False,
        output_attentions: bool | None = False,
        cu_seqlens: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None, object, torch.Tensor]:
        """``hidden_states [B, T, hidden_size]`` -> ``(o [B, T, hidden_size], None, past_key_values, router_logits)``.

        Args: as :meth:`fla.layers.linear_mixer.LinearMixer.forward`. ``router_logits``: ``[B * T, M]``
        (padding positions 0), or ``[N_tokens, M]`` for a packed (``cu_seqlens``) batch.
        """
        step = self.begin(hidden_states, attention_mask, past_key_values, cu_seqlens)
        x = step.x  # [B', T', D]: dense rows, or one packed row
        rows, length = x.shape[:2]
        x_flat = x.reshape(rows * length, -1)
        docs = step.cu_seqlens
        if docs is None:  # each dense row is one document
            docs = torch.arange(0, rows * length + 1, length, device=x.device)
        num_docs = docs.numel() - 1

        router_logits = self.gate(x_flat)  # [N, M]
        weights, memories = route(router_logits, self.topk)
        packing = pack_by_memory(memories, docs, self.num_memories)
        q = self.q_proj(x_flat)  # shared by every memory: once per token
        o_routed, state, conv = self.routed_memories(step, x_flat, q, packing, num_docs)
        o = unpack(o_routed, packing, weights)  # [N, H, V]
        shared_state = shared_conv = None
        if self.shared_mem:
            o_shared, shared_state, shared_conv = self.shared_memory(step, q.view(rows, length, -1))
            o = o + o_shared.reshape(o.shape)
        final_state = (state, shared_state) if step.store else None
        conv_state = (conv, shared_conv) if step.store and self.use_short_conv else None
        out, _, cache = self.finish(step, o.view(rows, length, *o.shape[1:]), final_state, conv_state)
        if step.info is not None:
            router_logits = repad_tokens(router_logits, step.info)
        return out, None, cache, router_logits.reshape(-1, self.num_memories)


__all__ = ["MomAttention", "per_memory"]
