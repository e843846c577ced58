"""What every linear-attention layer shares: q/k/v projections (+ short convolutions), the output
gate and norm, the batch / cache plumbing around the token-mixing op, and ``forward`` itself.

:meth:`LinearMixer.forward` (fla's signature) runs the same steps for every layer::

    extras = self.forward_extras_of(kwargs)            # the layer's own keywords (forward_extras), checked
    step = self.begin(...)                             # check inputs, read the cache, unpad
    step.extras.update(extras)
    q, k, v, conv_state = self.project_qkv(step)       # [B', T', width] each (+ convs)
    q, k, v = self.to_heads(step, q, k, v)             # hook: by default the three lines below
    #   q, k, v = split_heads(q, K), split_heads(k, K), split_heads(v, V)    # [B', T', h, K or V]
    #   q, k, v = self.feature_maps(step, q, k, v)     # hook: default feature_map_fn on q, k
    #   q, k, v = self.expand(q), self.expand(k), self.expand(v)   # heads repeated to op_heads
    o, final_state = self.mix(step, q, k, v)           # hook: the layer's gates + its op
    return self.finish(step, o, final_state, conv_state)   # gate, norm, o_proj, cache, repad

A layer is its constructor (fla's signature and parameter names) plus :meth:`LinearMixer.mix`,
usually a few lines ending in :meth:`LinearMixer.run`, which calls ``chunk_op`` (training,
prefill) or ``recurrent_op`` (decoding) with the cached state, ``cu_seqlens`` and whether to
return the final state. A minimal layer with a per-head scalar decay::

    class SimpleGLA(LinearMixer):
        chunk_op, recurrent_op = staticmethod(chunk_simple_gla), staticmethod(fused_recurrent_simple_gla)

        def __init__(self, mode="chunk", hidden_size=1024, expand_k=1.0, expand_v=1.0, num_heads=4,
                     num_kv_heads=None, feature_map=None, use_short_conv=False, conv_size=4, conv_bias=False,
                     use_output_gate=True, gate_fn="swish", elementwise_affine=True, norm_eps=1e-5,
                     fuse_norm=True, layer_idx=None):
            super().__init__()
            self.setup(mode, hidden_size, expand_k, expand_v, num_heads, num_kv_heads, layer_idx, feature_map)
            self.build_qkv(hidden_size, use_short_conv, conv_size, conv_bias)
            self.gk_proj = nn.Linear(hidden_size, self.num_heads)
            self.build_output(hidden_size, use_output_gate, gate_fn, fuse_norm, elementwise_affine, norm_eps)

        def mix(self, step, q, k, v):
            return self.run(step, q, k, v, g=F.logsigmoid(self.gk_proj(step.x)))

Other hooks, each small and overridable: :meth:`~LinearMixer.project_qkv` (other projections or a
token shift; whatever state it returns is cached as ``conv_state``), :meth:`~LinearMixer.to_heads`
(e.g. HGRN's element-wise op takes no heads), :meth:`~LinearMixer.feature_maps`,
:meth:`~LinearMixer.norm_and_gate` (the delta-rule layers' ``o_norm``: see
:class:`fla.layers.delta_net.DeltaMixer`), :attr:`~LinearMixer.op_heads`. Builders for fla's
parameter names: :meth:`~LinearMixer.build_qkv` (``q_proj``, ``k_proj``, ``v_proj``,
``{q,k,v}_conv1d``) and :meth:`~LinearMixer.build_output` (``g_proj``, ``g_norm_swish_gate`` or
``g_norm``, ``o_proj``).

How a batch is run (``B', T'`` above):

* ``cu_seqlens [N+1]`` (packed batch, ``B == 1``): as given; the cache must be empty.
* ``attention_mask [B, L]`` with padding and an empty cache: the real tokens are packed into a
  varlen batch once (``B' = 1``, ``cu_seqlens`` from the mask) and the output is repadded (0 at
  padding); the final states are per row, so decoding continues from them.
* ``attention_mask`` with padding and a non-empty cache (left-padded decoding): the new tokens
  must all be real and run as a dense batch from the cached per-row states.
* otherwise the dense ``[B, T]`` batch.

Layer-specific forward keywords: a layer lists the extra keywords its ``forward`` takes in
:attr:`LinearMixer.forward_extras` (HGRN / HGRN2: ``("lower_bound",)``); ``forward`` puts each into
``step.extras[name]`` (``None`` when not passed) for the layer's hooks, after
:meth:`LinearMixer.check_extras` (the layer's checks of their values). Any other keyword is accepted and
ignored, as fla 0.6.0's layers do (``**kwargs``): the decoder stack and transformers' ``generate`` hand every
mixer what they have (``position_ids``, ``cache_position``, ...), and code written for fla passes its own.

Context parallel (``cp_context``, a :class:`fla.context_parallel.CPContext`): the layer holds one rank's slice of
sequences split along time; the short convolutions read the previous rank's last inputs
(:func:`fla.context_parallel.conv_with_halo`) and the op carries the state over the ranks: :meth:`LinearMixer.run` calls
the op's split form :attr:`LinearMixer.cp_op` (default :func:`fla.context_parallel.cp_chunk_op`), layers that call their
op themselves (Mamba, HGRN, MesaNet, Based) its own split form. Layers that can say so with
:attr:`LinearMixer.supports_context_parallel`; the others raise ``ValueError`` when given a context. Training only: no
cache, no padding mask (pack the documents with ``cu_seqlens``, the context's local boundaries).

Cache (:class:`fla.models.cache.FLACache`): ``recurrent_state [N, H, K, V]`` float32 and, with
short convolutions, ``conv_state = (q, k, v)`` states ``[N, D, W]``. The state is stored whenever
``past_key_values`` is given (``use_cache`` and ``output_attentions`` are accepted for API
compatibility; there are no attention weights).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn as nn
from transformers.activations import ACT2FN

from fla.context_parallel import CPContext, conv_with_halo, cp_chunk_op, token_shift_with_halo
from fla.layers.utils import (
    PaddingInfo,
    begin_layer_call,
    decode_offsets,
    get_padding_info,
)
from fla.layers.utils import repad as repad_tokens
from fla.layers.utils import unpad as unpad_tokens
from fla.modules.conv import ShortConvolution
from fla.modules.gated_norm import FusedRMSNormGated
from fla.modules.norm import RMSNorm
from fla.modules.token_shift import token_shift

if TYPE_CHECKING:
    from fla.models.cache import FLACache

RECURRENT_MAX_LEN = 64  # outside training, inputs of at most this many tokens run the fused_recurrent op
MODES = ("chunk", "fused_recurrent", "fused_chunk", "parallel")  # fla's names; the last two run the chunk op


@dataclass
class MixerStep:
    """One forward of a linear-attention layer, as :meth:`LinearMixer.begin` prepared it.

    Attributes:
        x: the layer input as the op sees it: ``[B, T, D]`` dense, or ``[1, N_tokens, D]`` packed.
        batch_size, seq_len: ``B, T`` of the original input.
        info: padding description when the input was unpadded (then ``finish`` repads), else ``None``.
        cu_seqlens: ``[N+1]`` boundaries of the packed batch (given or from the mask), else ``None``.
        state: this layer's cached state dict before the step (``None`` when empty).
        cached: tokens this layer has seen before the step (padding included).
        cache: the cache to write, or ``None``.
        attention_mask: the padding mask (only set when it has padding), for position offsets.
        cp: the context-parallel context (this rank's slice of the sequences), or ``None``.
        extras: free slots for a layer's hooks: its :attr:`LinearMixer.forward_extras` keywords (e.g.
            ``lower_bound``), and whatever one hook leaves for the next (e.g. a token-shifted input from
            ``project_qkv`` for ``mix``).
    """

    x: torch.Tensor
    batch_size: int
    seq_len: int
    info: PaddingInfo | None
    cu_seqlens: torch.Tensor | None
    state: dict[str, Any] | None
    cached: int
    cache: FLACache | None
    attention_mask: torch.Tensor | None
    cp: CPContext | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self) -> bool:
        """Whether the op must return its final state (a cache is being filled)."""
        return self.cache is not None

    def slot(self, name: str) -> Any:
        """This layer's cached ``recurrent_state`` / ``conv_state`` (``None`` when the cache is empty)."""
        return None if self.state is None else self.state[name]


def split_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """``[..., H * head_dim]`` -> ``[..., H, head_dim]``."""
    return x.unflatten(-1, (-1, head_dim))


class LinearMixer(nn.Module):
    """Base of the linear-attention layers (see the module docstring); holds no parameters itself.

    Subclasses set ``chunk_op`` / ``recurrent_op`` (public ops with fla's signature
    ``op(q, k, v, *gates, initial_state=, output_final_state=, cu_seqlens=, **options)``) and
    implement :meth:`mix`.
    """

    layer_idx: int | None
    mode: str
    hidden_size: int
    chunk_op: Callable
    recurrent_op: Callable
    forward_extras: ClassVar[tuple[str, ...]] = ()
    """Layer-specific keywords of :meth:`forward` (default ``None``), handed to the hooks in ``step.extras``."""
    supports_context_parallel: ClassVar[bool] = False
    """Whether the layer runs under context parallelism: its inputs mix over time only through :meth:`run_convs`
    and an op that :meth:`run` runs split (:attr:`cp_op`), or through its own split form in :meth:`mix`."""
    cp_op: ClassVar[Callable | None] = None
    """The op's form over a context-parallel split, called by :meth:`run` as ``cp_op(ctx, q, k, v, *gates,
    output_final_state=, cu_seqlens=, **options)``; ``None``: :func:`fla.context_parallel.cp_chunk_op` over the op
    (its state linear in the state and the values, the transition on the key side)."""

    def setup(
        self,
        mode: str,
        hidden_size: int,
        expand_k: float,
        expand_v: float,
        num_heads: int,
        num_kv_heads: int | None,
        layer_idx: int | None,
        feature_map: str | None = None,
        modes: tuple[str, ...] = MODES,
    ) -> None:
        """The common constructor steps: :meth:`check_mode`, :meth:`check_dims`, ``layer_idx`` and the
        q / k feature map (``feature_map``: an activation name, ``None`` for identity)."""
        self.check_mode(mode, modes)
        self.hidden_size = hidden_size
        self.check_dims(hidden_size, expand_k, expand_v, num_heads, num_kv_heads)
        self.feature_map = feature_map
        self.feature_map_fn = ACT2FN[feature_map] if feature_map is not None else None
        self.layer_idx = layer_idx

    def check_dims(self, hidden_size: int, expand_k: float, expand_v: float, num_heads: int, num_kv_heads) -> None:
        """Set ``key_dim``, ``value_dim``, ``head_k_dim``, ``head_v_dim``, kv-group sizes; raise on bad sizes."""
        name = type(self).__name__
        key_dim, value_dim = hidden_size * expand_k, hidden_size * expand_v
        for what, value in (("expand_k", key_dim), ("expand_v", value_dim)):
            if abs(value - round(value)) > 1e-6:
                raise ValueError(f"{name}: hidden_size * {what} = {value} is not an integer")
        self.num_heads = num_heads
        self.num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if self.num_kv_heads <= 0 or num_heads % self.num_kv_heads != 0:
            raise ValueError(f"{name}: num_heads={num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        self.key_dim, self.value_dim = round(key_dim), round(value_dim)
        for what, value in (("key dim", self.key_dim), ("value dim", self.value_dim)):
            if value % num_heads != 0:
                raise ValueError(f"{name}: {what} {value} is not a multiple of num_heads={num_heads}")
        self.num_kv_groups = num_heads // self.num_kv_heads
        self.key_dim_per_group = self.key_dim // self.num_kv_groups
        self.value_dim_per_group = self.value_dim // self.num_kv_groups
        self.head_k_dim = self.key_dim // num_heads
        self.head_v_dim = self.value_dim // num_heads

    def check_mode(self, mode: str, modes: tuple[str, ...] = MODES) -> None:
        """Set ``mode`` (one of ``modes``, default :data:`MODES`); raise ``ValueError`` naming it otherwise."""
        if mode not in modes:
            raise ValueError(f"{type(self).__name__}: mode={mode!r} is not one of {modes}")
        self.mode = mode

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
            f"head_k_dim={self.head_k_dim}, head_v_dim={self.head_v_dim}"
        )

    def build_qkv(
        self,
        hidden_size: int,
        use_short_conv: bool,
        conv_size: int,
        conv_bias: bool,
        qk_conv_activation: str | None = "silu",
        activate_without_conv: bool = False,
    ) -> None:
        """``q_proj`` (to ``key_dim``), ``k_proj`` / ``v_proj`` (per kv group) and optional short convs.

        The v convolution applies SiLU; the q / k ones ``qk_conv_activation`` (``"silu"`` or ``None``).
        With ``activate_without_conv``, the same activations act on the projections when there are
        no convolutions (the delta-rule layers; GLA and RetNet use the projections as they are).
        """
        self.use_short_conv, self.conv_size, self.conv_bias = use_short_conv, conv_size, conv_bias
        acts = (qk_conv_activation, qk_conv_activation, "silu")
        self.qkv_activations = tuple(a and ACT2FN[a] for a in acts) if activate_without_conv else None
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim_per_group, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim_per_group, bias=False)
        if use_short_conv:
            act = qk_conv_activation
            self.q_conv1d = ShortConvolution(self.key_dim, conv_size, bias=conv_bias, activation=act)
            self.k_conv1d = ShortConvolution(self.key_dim_per_group, conv_size, bias=conv_bias, activation=act)
            self.v_conv1d = ShortConvolution(self.value_dim_per_group, conv_size, bias=conv_bias, activation="silu")

    def build_output(
        self,
        hidden_size: int,
        use_output_gate: bool,
        gate_fn: str,
        fuse_norm: bool,
        elementwise_affine: bool | None,
        norm_eps: float,
    ) -> None:
        """Output gate ``g_proj``, per-head RMSNorm (fused with a swish gate when possible) and ``o_proj``."""
        self.use_output_gate = use_output_gate
        if use_output_gate:
            self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.fuse_norm_and_gate = gate_fn == "swish" and fuse_norm and use_output_gate
        affine = bool(elementwise_affine)
        if self.fuse_norm_and_gate:
            self.g_norm_swish_gate = FusedRMSNormGated(self.head_v_dim, elementwise_affine=affine, eps=norm_eps)
        else:
            self.g_norm = RMSNorm(self.head_v_dim, elementwise_affine=affine, eps=norm_eps)
            self.gate_fn = ACT2FN[gate_fn]
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    def use_recurrent(self, step: MixerStep) -> bool:
        """fused_recurrent for short inputs outside training (decoding) or when the mode asks for it."""
        return self.mode == "fused_recurrent" or (not self.training and step.x.shape[1] <= RECURRENT_MAX_LEN)

    def begin(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        past_key_values: FLACache | None,
        cu_seqlens: torch.Tensor | None,
    ) -> MixerStep:
        """Check the inputs, read this layer's cache and unpad a padded batch (see the module docstring)."""
        cached, attention_mask = begin_layer_call(self, hidden_states, attention_mask, past_key_values, cu_seqlens)
        B, T, _ = hidden_states.shape
        state = past_key_values[self.layer_idx] if cached > 0 else None
        x, info = hidden_states, None
        if cu_seqlens is None and attention_mask is not None:
            if cached == 0:
                info = get_padding_info(attention_mask)
                x, cu_seqlens = unpad_tokens(hidden_states, info)[None], info.cu_seqlens
            else:
                decode_offsets(attention_mask, T)  # raises when a new token is padding
        return MixerStep(x, B, T, info, cu_seqlens, state, cached, past_key_values, attention_mask)

    def project_qkv(self, step: MixerStep) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """``q [.., key_dim]``, ``k [.., key_dim_per_group]``, ``v [.., value_dim_per_group]`` and the conv state."""
        x = step.x
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if not self.use_short_conv:
            if self.qkv_activations is not None:
                q, k, v = (t if act is None else act(t) for t, act in zip((q, k, v), self.qkv_activations))
            return q, k, v, None
        (q, k, v), conv_state = self.run_convs(step, (self.q_conv1d, self.k_conv1d, self.v_conv1d), (q, k, v))
        return q, k, v, conv_state

    def run_convs(self, step: MixerStep, convs: tuple, inputs: tuple) -> tuple[list[torch.Tensor], tuple | None]:
        """Short convolutions ``convs`` on ``inputs`` (each ``[.., D_i]``) from the cached ``conv_state`` (or, under
        context parallel, from the previous rank's inputs): ``(outputs, conv_state to cache or None)``."""
        if step.cp is not None:
            return [conv_with_halo(conv, t, step.cp, step.cu_seqlens) for conv, t in zip(convs, inputs)], None
        old = step.slot("conv_state")
        old = (None,) * len(convs) if old is None else (old,) if torch.is_tensor(old) else old  # one conv: a tensor
        outs = [
            conv(t, cache=c, output_final_state=step.store, cu_seqlens=step.cu_seqlens)
            for conv, t, c in zip(convs, inputs, old)
        ]
        return [y for y, _ in outs], tuple(c for _, c in outs) if step.store else None

    def rotate(self, step: MixerStep, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary positions (``self.rotary``) of ``q [.., T', H, K]``, ``k [.., T', Hkv, K]``: restarting per packed
        sequence, after the cache (left-padded rows: the real tokens seen per row), or under context parallel going
        on from the earlier ranks for the slice's first piece."""
        if step.cp is not None:
            offset, T = step.cp.position_offsets(), q.shape[1]
            top = step.cp.carried[step.cp.rank] + T
            return self.rotary(q, k, seqlen_offset=offset, max_seqlen=top, cu_seqlens=step.cu_seqlens)
        if step.cu_seqlens is not None:  # packed: the packed length bounds every position
            return self.rotary(q, k, max_seqlen=q.shape[1], cu_seqlens=step.cu_seqlens)
        if step.attention_mask is not None:
            offset, top = decode_offsets(step.attention_mask, step.seq_len)
        else:
            offset = top = step.cached
        return self.rotary(q, k, seqlen_offset=offset, max_seqlen=top + step.seq_len)

    def token_shift_delta(self, step: MixerStep) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x_{t-1} - x_t`` of ``step.x [.., D]`` (the first token's predecessor: the cached ``conv_state`` or,
        under context parallel, the previous rank's last token) and each sequence's last token ``[N, D]`` to cache
        (``None`` under context parallel): the token shift of the RWKV layers."""
        if step.cp is not None:
            return token_shift_with_halo(step.x, step.cp, step.cu_seqlens), None
        return token_shift(step.x, step.cu_seqlens, step.slot("conv_state"), output_cache=True)

    @property
    def op_heads(self) -> int:
        """Heads the op runs (``num_heads``; grouped-value layers: ``num_v_heads``); fewer are repeated."""
        return self.num_heads

    def expand(self, x: torch.Tensor, dim: int = -2) -> torch.Tensor:
        """``[.., h, D]`` -> ``[.., op_heads, D]``: each head repeated for its group (GQA / grouped values).

        ``dim=-1`` expands a scalar gate ``[.., h]``.
        """
        groups = self.op_heads // x.shape[dim]
        return x if groups == 1 else x.repeat_interleave(groups, dim=dim)

    def heads(self, x: torch.Tensor, head_dim: int) -> torch.Tensor:
        """``[.., h * head_dim]`` -> ``[.., op_heads, head_dim]`` (e.g. a gate projection, in :meth:`mix`)."""
        return self.expand(split_heads(x, head_dim))

    def feature_maps(
        self, step: MixerStep, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hook: feature maps / positions of ``q, k [.., h, K]``, ``v [.., h, V]`` before the heads are
        repeated to ``op_heads`` (default: ``feature_map_fn`` on q and k)."""
        fn = getattr(self, "feature_map_fn", None)  # set by setup (an activation module is a submodule)
        if fn is not None:
            q, k = fn(q), fn(k)
        return q, k, v

    def mix(self, step: MixerStep, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Hook: the token mixing, ``q, k [B', T', H, K]``, ``v [B', T', H, V]`` -> ``(o [B', T', H, V], state)``.

        Layers compute their gates from ``step.x`` and call :meth:`run`; the default runs the op without gates.
        """
        return self.run(step, q, k, v)

    def run(self, step: MixerStep, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *gates, **options) -> tuple:
        """``recurrent_op`` when :meth:`use_recurrent`, else ``chunk_op``, from the cached state: ``(o, state)``.
        q and k go in v's dtype: under CUDA autocast a feature map or norm of them (softmax, sum, exp run in float32
        there) can leave them float32 beside bf16 values, and the ops take q, k, v in one dtype."""
        op = self.recurrent_op if self.use_recurrent(step) else self.chunk_op
        q, k = q.to(v.dtype), k.to(v.dtype)
        if step.cp is not None:
            split = self.cp_op or partial(cp_chunk_op, op)
            return split(step.cp, q, k, v, *gates, output_final_state=step.store, cu_seqlens=step.cu_seqlens,
                         **options)  # fmt: skip
        return op(
            q, k, v, *gates,
            initial_state=step.slot("recurrent_state"),
            output_final_state=step.store,
            cu_seqlens=step.cu_seqlens,
            **options,
        )  # fmt: skip

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: FLACache | None = None,
        use_cache: bool | None = False,
        output_attentions: bool | None = False,
        cu_seqlens: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None, FLACache | None]:
        """``hidden_states [B, T, hidden_size]`` -> ``(o [B, T, hidden_size], None, past_key_values)``.

        Args:
            attention_mask: ``[B, cached + T]`` padding mask (1 = token, 0 = padding) or None.
            past_key_values: the cache to read and extend (or None); the state is stored whenever it is given.
            use_cache, output_attentions: accepted for API compatibility (no attention weights exist).
            cu_seqlens: ``[N+1]`` packed-sequence boundaries (``B == 1``).
            kwargs: the layer's :attr:`forward_extras` (into ``step.extras``); any other keyword is ignored.
        """
        extras = self.forward_extras_of(kwargs)
        step = self.begin(hidden_states, attention_mask, past_key_values, cu_seqlens)
        step.cp = self.check_context_parallel(step, kwargs.get("cp_context"))
        step.extras.update(extras)
        q, k, v, conv_state = self.project_qkv(step)
        q, k, v = self.to_heads(step, q, k, v)
        o, final_state = self.mix(step, q, k, v)
        return self.finish(step, o, final_state, conv_state)

    def to_heads(self, step: MixerStep, q: Any, k: Any, v: Any) -> tuple:
        """Hook: :meth:`project_qkv`'s outputs -> :meth:`mix`'s inputs. Default: split into heads,
        :meth:`feature_maps`, heads repeated to :attr:`op_heads` (a layer whose op takes no heads keeps them)."""
        q, k, v = split_heads(q, self.head_k_dim), split_heads(k, self.head_k_dim), split_heads(v, self.head_v_dim)
        q, k, v = self.feature_maps(step, q, k, v)
        return self.expand(q), self.expand(k), self.expand(v)

    def check_context_parallel(self, step: MixerStep, cp: CPContext | None) -> CPContext | None:
        """``cp`` if this layer can run this step under it (module docstring), else ``ValueError`` naming why."""
        if cp is None:
            return None
        name = type(self).__name__
        if not self.supports_context_parallel:
            raise ValueError(f"{name}: context parallel (cp_context) is not supported by this layer")
        cp.check_call(name, step.cache is not None, step.info is not None, step.cu_seqlens)
        return cp

    def forward_extras_of(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``{name: value}`` for every name in :attr:`forward_extras` (``None`` when not passed), checked by
        :meth:`check_extras` (other keywords: ignored, as in fla 0.6.0)."""
        extras = {name: kwargs.get(name) for name in self.forward_extras}
        self.check_extras(extras)
        return extras

    def check_extras(self, extras: dict[str, Any]) -> None:
        """Hook: check the :attr:`forward_extras` values (raise ``ValueError`` naming a bad one); default none."""

    def norm_and_gate(self, step: MixerStep, o: torch.Tensor) -> torch.Tensor:
        """Per-head output norm and output gate: ``o [.., H, V]`` -> ``[.., H * V]`` (layers may override)."""
        if self.fuse_norm_and_gate:
            return self.g_norm_swish_gate(o, split_heads(self.g_proj(step.x), self.head_v_dim)).flatten(-2)
        o = self.g_norm(o).flatten(-2)
        if self.use_output_gate:
            o = o * self.gate_fn(self.g_proj(step.x))
        return o

    def finish(self, step: MixerStep, o: torch.Tensor, final_state: Any, conv_state: Any) -> tuple:
        """Cache the new states, apply output gate + norm and ``o_proj``, repad: ``(out [B, T, D], None, cache)``."""
        if step.cache is not None:
            step.cache.update(
                recurrent_state=final_state, conv_state=conv_state, layer_idx=self.layer_idx, offset=step.seq_len
            )
        o = self.o_proj(self.norm_and_gate(step, o))
        if step.info is not None:
            o = repad_tokens(o[0], step.info)
        return o, None, step.cache


__all__ = ["MODES", "RECURRENT_MAX_LEN", "LinearMixer", "MixerStep", "split_heads"]
