"""Training FLOPs per token of a causal LM: ``6 N`` plus each layer's token mixer.

A model family states only its token mixer's kind and sizes (:class:`TokenMixer`, from
``token_mixer(config)`` on its model class); the rule here does the rest, the same for every
family, and counts the softmax-attention layers of hybrids (the config's ``attn`` spec):

* ``6 * N`` for the matmuls of the non-embedding parameters (a tied LM head counted once more);
* softmax attention: ``6 * H * (K + V) * L`` with ``L = min(seq_len, window)`` (scores ``q k^T`` and
  outputs ``p v``; torchtitan's ``12 * H * K * L`` when ``K == V``, no causal halving);
* chunked linear attention: ``3 * H * (4 * K * V + 2 * C * (K + V))`` with chunk size ``C = 64``
  (read/write the ``K x V`` state, intra-chunk scores and outputs), plus ``3 * H * 2 * C * K``
  for the delta rule's intra-chunk ``K K^T`` system (WY form);
* an element-wise scan over a ``K x V`` state per head (Mamba's selective scan):
  ``3 * H * SCAN_OPS * K * V``, ``SCAN_OPS = 7`` forward FLOPs per state element and token (the decay
  ``exp(dt A)``, ``h = e h + u``, ``u = (dt x) B``, ``y += C h``);
* MesaNet (kind ``mesa``): the chunked linear attention above for the ``K x V`` state, the same for the
  ``K x K`` one, plus ``2 * H * S * (4 * C * K + 2 * K * K)`` for ``S = cg_steps`` conjugate-gradient
  steps per token (intra-chunk ``p k^T`` and its product with the keys, ``p h`` with the state), run once
  in the forward and once more for the adjoint solve of the backward.

Models outside fla (transformers' Llama, ...) count as softmax attention read from their config
fields: :func:`softmax_attention_from_config`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

CHUNK_SIZE = 64
"""Chunk length of the chunked linear-attention kernels the FLOPs rule assumes."""

SCAN_OPS = 7
"""Forward FLOPs per state element and token of an element-wise scan (kind ``scan``)."""

MixerKind = Literal["softmax", "linear", "delta", "scan", "mesa"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenMixer:
    """One layer's token mixer as far as FLOPs go.

    Args:
        kind: ``softmax`` attention, chunked ``linear`` attention / linear RNN, ``delta``
            (linear attention that also solves the intra-chunk ``K K^T`` system), or ``scan`` (an
            element-wise recurrence over a ``K x V`` state per head, no matrix products).
        heads: heads the state (or attention) is kept per.
        key_dim: per-head key width ``K``.
        value_dim: per-head value width ``V``.
        window: sliding-window length of softmax attention (``None``: the whole sequence).
        cg_steps: conjugate-gradient steps per token (kind ``mesa``).
    """

    kind: MixerKind
    heads: int
    key_dim: int
    value_dim: int
    window: int | None = None
    cg_steps: int = field(default=0, kw_only=True)  # keyword-only: subclasses add positional fields

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token of this mixer at ``seq_len``."""
        h, k, v = self.heads, self.key_dim, self.value_dim
        if self.kind == "softmax":
            return 6.0 * h * (k + v) * min(seq_len, self.window or seq_len)
        if self.kind == "scan":
            return 3.0 * SCAN_OPS * h * k * v
        flops = 3.0 * h * (4 * k * v + 2 * CHUNK_SIZE * (k + v))
        if self.kind == "mesa":  # the K x K state as a second linear attention, and the CG solves
            flops += 3.0 * h * (4 * k * k + 2 * CHUNK_SIZE * 2 * k)
            flops += 2.0 * h * self.cg_steps * (4 * CHUNK_SIZE * k + 2 * k * k)
        if self.kind == "delta":
            flops += 3.0 * h * 2 * CHUNK_SIZE * k
        return flops

    @classmethod
    def from_expand(
        cls, kind: MixerKind, hidden_size: int, heads: int, expand_k: float | None, expand_v: float | None
    ) -> TokenMixer:
        """A linear mixer whose key / value widths are ``hidden_size * expand_{k,v}`` split over ``heads``."""
        return cls(
            kind, int(heads), int(hidden_size * (expand_k or 1.0) / heads), int(hidden_size * (expand_v or 1.0) / heads)
        )

    @classmethod
    def from_head_dim(cls, kind: MixerKind, heads: int, head_dim: int, expand_v: float | None) -> TokenMixer:
        """A linear mixer with per-head key width ``head_dim`` and value width ``head_dim * expand_v``."""
        return cls(kind, int(heads), int(head_dim), int(head_dim * (expand_v or 1.0)))


def _first(config, *names):
    for name in names:
        value = getattr(config, name, None)
        if value:
            return value
    return None


def num_layers(config) -> int:
    """The config's number of blocks (``num_hidden_layers`` / ``num_layers`` / ``n_layer``)."""
    return _first(config, "num_hidden_layers", "num_layers", "n_layer") or 0


def hidden_size(config) -> int:
    """The config's residual width (``hidden_size`` / ``d_model`` / ``n_embd``)."""
    return _first(config, "hidden_size", "d_model", "n_embd") or 0


def softmax_attention_from_config(config) -> TokenMixer | None:
    """Softmax attention sized by generic config fields (heads, ``head_dim`` or hidden / heads,
    ``window_size``); ``None`` when the config names no head count."""
    heads = _first(config, "num_attention_heads", "num_heads", "n_head")
    if not heads:
        return None
    head_dim = getattr(config, "head_dim", None) or hidden_size(config) // heads
    return TokenMixer("softmax", int(heads), int(head_dim), int(head_dim), getattr(config, "window_size", None))


def layer_mixers(config, mixer: TokenMixer | None) -> list[TokenMixer]:
    """Per layer: ``mixer``, or softmax attention at the layers the config's hybrid ``attn`` spec names.

    ``mixer`` ``None`` (no FLOPs rule known) gives no layers at all: FLOPs are then ``6 N`` only.
    """
    if mixer is None:
        return []
    attn = getattr(config, "attn", None)
    attn_layers = set(attn.get("layers", [])) if isinstance(attn, dict) else set()
    out = []
    for i in range(num_layers(config)):
        if i in attn_layers:
            heads = attn.get("num_heads", mixer.heads)
            head_dim = attn.get("head_dim") or hidden_size(config) // heads
            out.append(TokenMixer("softmax", int(heads), int(head_dim), int(head_dim), attn.get("window_size")))
        else:
            out.append(mixer)
    return out


def flops_per_token(
    config, num_params: int, num_embedding_params: int, seq_len: int, mixer: TokenMixer | None
) -> float:
    """Training FLOPs per token (forward + backward = 3 x forward); see the module docstring.

    Args:
        config: the model's HF config (layer count, hybrid ``attn`` spec, ``tie_word_embeddings``).
        num_params: all parameters (shared ones once).
        num_embedding_params: parameters of the input embedding.
        seq_len: tokens each token can attend to at most.
        mixer: the token mixer of the model's (non-hybrid) layers; ``None``: ``6 N`` only.
    """
    dense = num_params - num_embedding_params
    if getattr(config, "tie_word_embeddings", False):
        dense += num_embedding_params  # the tied LM head is a matmul too
    return 6.0 * dense + sum(m.flops_per_token(seq_len) for m in layer_mixers(config, mixer))


def count_params(model) -> tuple[int, int]:
    """(all parameters, input-embedding parameters) of ``model``, shared parameters counted once."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    emb = model.get_input_embeddings()
    return total, (emb.weight.numel() if emb is not None else 0)


__all__ = [
    "CHUNK_SIZE",
    "SCAN_OPS",
    "TokenMixer",
    "count_params",
    "flops_per_token",
    "layer_mixers",
    "softmax_attention_from_config",
]
