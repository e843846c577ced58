"""Shared pieces of the fla Hugging Face models.

* :class:`FLAPreTrainedModel` - weight init (``normal(0, initializer_range)`` for Linear /
  Conv1d / Embedding weights, zero biases, ``reset_parameters()`` for everything else that has
  it: norms, rotary tables) and the transformers integration flags.
* :class:`FLABlock` - the pre-norm residual block ``x + mixer(norm(x))``, then
  ``x + mlp(norm(x))`` (fused residual-add + RMSNorm with ``fuse_norm``); ``attn`` is whatever
  token mixer the model puts there (``Attention`` or a linear-attention layer).
* :class:`FLAModel` - embeddings -> blocks -> final norm, with the cache and padding-mask handling
  every model shares.
* :class:`FLAForCausalLM` - LM head and loss: labels are shifted inside (position ``t`` predicts
  ``labels[t + 1]``), ``-100`` is ignored; plain, fused or fused-linear cross-entropy.
* :func:`build_attention` - softmax ``Attention`` for the layers a hybrid ``attn`` spec names.

What a trainer needs to know about a family is declared on its model class: its tensor-parallel
plan (``tensor_parallel_plan``, :mod:`fla.models.tp_plan`) and its token mixer's kind and sizes
(``token_mixer(config)``), from which :meth:`FLAPreTrainedModel.flops_per_token` counts training
FLOPs (:mod:`fla.models.flops`).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel

from fla.layers.attn import Attention
from fla.layers.utils import check_attention_mask, has_padding
from fla.models import flops
from fla.models.cache import FLACache
from fla.models.config_utils import get_attn_spec
from fla.models.generation import FLAGenerationMixin
from fla.models.tp_plan import TPPlan
from fla.modules.cross_entropy import FusedCrossEntropyLoss
from fla.modules.l2warp import l2_warp
from fla.modules.linear_cross_entropy import FusedLinearCrossEntropyLoss
from fla.modules.mlp import GatedMLP
from fla.modules.norm import RMSNorm
from fla.utils import check_cu_seqlens
from fla.utils.constants import IGNORE_INDEX


def build_attention(config, layer_idx: int) -> Attention | None:
    """``Attention`` for ``layer_idx`` when the config's hybrid ``attn`` spec names it, else ``None``."""
    spec = get_attn_spec(getattr(config, "attn", None), layer_idx)
    if spec is None:
        return None
    return Attention(
        hidden_size=config.hidden_size,
        num_heads=spec["num_heads"],
        num_kv_heads=spec["num_kv_heads"],
        qkv_bias=spec["qkv_bias"],
        qk_norm=spec["qk_norm"],
        window_size=spec["window_size"],
        rope_theta=spec["rope_theta"],
        max_position_embeddings=getattr(config, "max_position_embeddings", None),
        layer_idx=layer_idx,
    )


def build_norm(config, hidden_size: int | None = None) -> nn.Module:
    """RMSNorm of the residual stream: fla's fused one with ``fuse_norm``, else ``torch.nn.RMSNorm``."""
    size = config.hidden_size if hidden_size is None else hidden_size
    return (RMSNorm if config.fuse_norm else nn.RMSNorm)(size, eps=config.norm_eps)


def check_context_parallel(model: nn.Module) -> None:
    """Raise ``ValueError`` naming the first block of ``model.layers`` that cannot run under context parallelism
    (``cp_context``): a block whose own parts act token by token (``token_local``: :class:`FLABlock`, whose
    subclasses' forwards only route keywords, and Mamba2's) around a mixer (``attn`` or ``mixer``) that says it can
    (``supports_context_parallel``: :class:`fla.layers.linear_mixer.LinearMixer`, ``Attention``)."""
    for index, block in enumerate(model.layers):
        mixer = getattr(block, "attn", None) or getattr(block, "mixer", None)
        plain = getattr(block, "token_local", False)
        if not (plain and getattr(mixer, "supports_context_parallel", False)):
            what = type(mixer).__name__ if plain else type(block).__name__
            raise ValueError(f"{type(model).__name__}: context parallel (cp_context) is not supported by layer "
                             f"{index} ({what})")  # fmt: skip


class FLABlock(GradientCheckpointingLayer):
    """Pre-norm block: ``h = x + attn(attn_norm(x))``; ``out = h + mlp(mlp_norm(h))``.

    Parameter names (fla's): ``attn_norm``, ``attn``, ``mlp_norm``, ``mlp.{gate,up,down}_proj``.
    """

    token_local = True
    """Everything but the mixer acts token by token (norms, MLP, residuals): the block runs under context parallel
    when its mixer does (:func:`check_context_parallel`)."""

    def __init__(self, config, layer_idx: int, mixer: nn.Module):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.attn_norm = build_norm(config)
        self.attn = mixer
        self.mlp_norm = build_norm(config)
        self.mlp = GatedMLP(
            hidden_size=config.hidden_size,
            hidden_ratio=config.hidden_ratio,
            intermediate_size=config.intermediate_size,
            hidden_act=config.hidden_act,
            fuse_swiglu=config.fuse_swiglu,
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: FLACache | None = None,
        use_cache: bool | None = False,
        output_attentions: bool | None = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None, FLACache | None]:
        """``hidden_states [B, T, H]`` -> ``(hidden_states, attentions (None), past_key_values)``."""
        residual = hidden_states
        hidden_states = self.attn_norm(hidden_states)
        hidden_states, attentions, past_key_values = self.attn(
            hidden_states,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_attentions=output_attentions,
            **kwargs,
        )
        if self.config.fuse_norm:
            hidden_states, residual = self.mlp_norm(hidden_states, residual, True)
        else:
            residual = residual + hidden_states
            hidden_states = self.mlp_norm(residual)
        hidden_states = residual + self.mlp(hidden_states, **kwargs)
        return hidden_states, attentions, past_key_values


CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"
"""The name of the cache in transformers' model outputs: ``cache`` from transformers 5.24 on (reading or
writing ``past_key_values`` there logs a deprecation), ``past_key_values`` before. fla's outputs use this
name, so ``output.cache`` (new transformers) and ``output.past_key_values`` (either) both work."""


def cache_argument(past_key_values, cache):
    """The cache passed as ``past_key_values`` or as ``cache`` (transformers >= 5.24 renamed it; its
    ``generate()`` passes ``cache=``). Both at once is an error, as in transformers."""
    if cache is None:
        return past_key_values
    if past_key_values is not None:
        raise ValueError("pass the cache as either past_key_values or cache, not both")
    return cache


class FLAPreTrainedModel(PreTrainedModel):
    """Base of every fla model: weight init and transformers integration (no parameters itself)."""

    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_cache_class = True
    _is_stateful = True
    _input_embed_layer = "embeddings"

    tensor_parallel_plan: ClassVar[TPPlan | None] = None
    """How a trainer shards this family over tensor-parallel ranks; ``None``: no tensor parallelism."""

    @classmethod
    def token_mixer(cls, config) -> flops.TokenMixer | None:
        """Kind and sizes of the token mixer of this family's layers (hybrid ``attn`` layers aside), for FLOPs."""
        return None

    @classmethod
    def flops_per_token_of(cls, config, num_params: int, num_embedding_params: int, seq_len: int) -> float:
        """Training FLOPs per token of a ``config`` model with these parameter counts (:mod:`fla.models.flops`)."""
        return flops.flops_per_token(config, num_params, num_embedding_params, seq_len, cls.token_mixer(config))

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token at ``seq_len``: ``6 N`` + the token mixers' (:mod:`fla.models.flops`)."""
        return self.flops_per_token_of(self.config, *flops.count_params(self), seq_len)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """``normal(0, initializer_range)`` for Linear / Conv1d / Embedding, zero biases, else ``reset_parameters``."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif hasattr(module, "reset_parameters"):
            module.reset_parameters()


class FLAModel(FLAPreTrainedModel):
    """Decoder stack: ``embeddings`` -> ``layers`` (blocks) -> ``norm``; subclasses build the modules.

    Forward arguments beyond transformers' usual ones:

    * ``cu_seqlens [S+1]`` (with ``B == 1``): packed sequences, no attention across boundaries;
      the padding mask is then ignored.
    * ``position_ids [B or 1, T]``: rotary positions (consecutive per row) when there is neither
      ``cu_seqlens`` nor padding; see :mod:`fla.layers.attn`.
    * ``attention_mask [B, cached + T]``: padding mask; an all-ones mask is dropped here (one host
      sync), so layers only ever see masks with padding.

    Subclasses name their block class in ``block_class``: ``block_class(config, layer_idx)``.
    """

    block_class: type[nn.Module]
    final_norm: ClassVar[str] = "norm"
    """Attribute name of the final norm (fla 0.6.0's Mamba and Samba call it ``norm_f``)."""
    carried_outputs: ClassVar[tuple[str, ...]] = ()
    """Names of a block's outputs after ``(hidden_states, attentions, past_key_values)`` that the next block
    takes as keywords (RWKV7: ``("v_first",)``, the first layer's values); the first block gets none."""

    def __init__(self, config):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([self.block_class(config, i) for i in range(config.num_hidden_layers)])
        setattr(self, self.final_norm, self.build_final_norm(config))
        self.gradient_checkpointing = False
        self.post_init()

    def layer_kwargs(self, index: int, kwargs: dict) -> dict:
        """The extra keywords of block ``index`` (default: the forward's ``kwargs`` for every block). A family whose
        blocks take per-layer inputs hands each block its own here, in the model's (uncompiled) loop: a block
        that picked its share by ``self.layer_idx`` would make torch.compile, which guards on the attributes a
        forward reads, compile every layer anew."""
        return kwargs

    def build_final_norm(self, config) -> nn.Module:
        """The norm after the last block (default :func:`build_norm`; a family with other norms overrides it)."""
        return build_norm(config)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values: FLACache | list | None = None,
        cache: FLACache | list | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cu_seqlens: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast | tuple:
        if output_attentions:
            warnings.warn(f"{type(self).__name__} does not return attention weights", stacklevel=2)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embeddings(input_ids)
        batch_size, seq_len = inputs_embeds.shape[:2]

        past_key_values = cache_argument(past_key_values, cache)
        if past_key_values is not None and not isinstance(past_key_values, FLACache):
            if isinstance(past_key_values, Cache):
                raise TypeError(
                    f"past_key_values is a {type(past_key_values).__name__}; fla models need an FLACache "
                    "(fla.models.FLACache), which also holds recurrent and convolution states"
                )
            past_key_values = FLACache.from_legacy_cache(past_key_values)
        if use_cache and past_key_values is None:
            past_key_values = FLACache()
        if cu_seqlens is not None:
            check_cu_seqlens(cu_seqlens, total=seq_len, batch=batch_size)
        if kwargs.get("cp_context") is not None:
            check_context_parallel(self)
        if attention_mask is not None:
            cached = past_key_values.get_seq_length() if past_key_values is not None else 0
            check_attention_mask(attention_mask, batch_size, None if cu_seqlens is not None else cached + seq_len)
            if cu_seqlens is not None or not has_padding(attention_mask):
                attention_mask = None

        hidden_states = inputs_embeds
        all_hidden_states = () if output_hidden_states else None
        carried: dict = {}
        for index, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, _, past_key_values, *extra = layer(
                hidden_states,
                attention_mask=attention_mask,
                past_key_values=past_key_values,
                use_cache=use_cache,
                cu_seqlens=cu_seqlens,
                position_ids=position_ids,
                **carried,
                **self.layer_kwargs(index, kwargs),
            )
            carried = dict(zip(self.carried_outputs, extra))
        hidden_states = getattr(self, self.final_norm)(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        if not use_cache:
            past_key_values = None
        if not return_dict:
            return tuple(v for v in (hidden_states, past_key_values, all_hidden_states) if v is not None)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, **{CACHE_FIELD: past_key_values}
        )


class FLAForCausalLM(FLAPreTrainedModel, FLAGenerationMixin):
    """Causal LM head over an :class:`FLAModel` (``self.model``) with ``lm_head``; subclasses build both.

    The loss: ``logits [B, T, V]`` at position ``t`` predict ``labels[:, t + 1]`` (shifted here; the
    last position has no target), targets equal to ``-100`` are ignored, mean over the rest (or
    sum / ``num_items_in_batch`` when that is given). ``fuse_cross_entropy`` uses fla's fused
    cross-entropy on the logits; ``fuse_linear_cross_entropy`` fuses ``lm_head`` into the loss and
    never materializes the logits (``logits`` is then ``None`` whenever labels are given).

    Subclasses name their decoder class in ``base_model_class``.
    """

    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}
    base_model_class: type[FLAModel]

    def __init__(self, config):
        super().__init__(config)
        self.model = self.base_model_class(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.criterion = None
        self.post_init()

    def get_decoder(self) -> FLAModel:
        return self.model

    def set_decoder(self, decoder: FLAModel) -> None:
        self.model = decoder

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def compute_logits_and_loss(
        self,
        hidden_states: torch.Tensor,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor | None = 0,
        num_items_in_batch: int | torch.Tensor | None = None,
        shift_labels: torch.LongTensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(loss, logits)`` from the final hidden states ``[B, T, H]``.

        Args:
            labels: ``[B, T]`` token ids (unshifted), ``-100`` = ignore.
            shift_labels: ``[B, T]`` targets already shifted (position ``t``'s is the token after it), used instead
                of ``labels`` (transformers' name): a slice of a longer sequence (context parallel) has its last
                position's target on the next slice.
            logits_to_keep: without labels, compute only the last ``n`` positions' logits
                (``0``: all), or those at the given index tensor.
            num_items_in_batch: divide the summed loss by this count instead of averaging.
        """
        if shift_labels is not None:
            labels = shift_labels
        fuse_linear = labels is not None and self.config.fuse_linear_cross_entropy
        logits = None
        if not fuse_linear:
            selected = hidden_states
            if labels is None and isinstance(logits_to_keep, torch.Tensor):
                selected = hidden_states[:, logits_to_keep]
            elif labels is None and logits_to_keep:
                selected = hidden_states[:, -logits_to_keep:]
            logits = self.lm_head(selected)
        if labels is None:
            return None, logits

        labels = labels.to(hidden_states.device)
        if labels.shape != hidden_states.shape[:2]:
            raise ValueError(
                f"labels has shape {list(labels.shape)}, expected {list(hidden_states.shape[:2])} [batch, seq_len]"
            )
        if shift_labels is None:
            targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX).reshape(-1)
        else:
            targets = labels.reshape(-1)
        reduction = "mean" if num_items_in_batch is None else "sum"
        criterion = getattr(self, "criterion", None)
        use_l2warp = getattr(self.config, "use_l2warp", False)
        if fuse_linear:
            loss = FusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction=reduction, use_l2warp=use_l2warp)(
                hidden_states.reshape(-1, hidden_states.shape[-1]), targets, self.lm_head.weight, self.lm_head.bias
            )
        elif criterion is not None:
            loss = criterion(logits.reshape(targets.numel(), -1), targets)
        elif self.config.fuse_cross_entropy:
            loss = FusedCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction=reduction)(
                logits.reshape(targets.numel(), -1), targets
            )
        else:
            loss = F.cross_entropy(
                logits.reshape(targets.numel(), -1).float(), targets, ignore_index=IGNORE_INDEX, reduction=reduction
            )
        if use_l2warp and not fuse_linear:  # before the division by num_items_in_batch, as fla 0.6.0
            loss = l2_warp(loss, logits)
        if num_items_in_batch is not None:
            loss = loss / (
                num_items_in_batch.to(loss.device) if torch.is_tensor(num_items_in_batch) else num_items_in_batch
            )
        return loss, logits

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values: FLACache | list | None = None,
        cache: FLACache | list | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor | None = 0,
        num_items_in_batch: int | torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        shift_labels: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """Causal LM forward; ``loss`` is set when ``labels [B, T]`` (or ``shift_labels``, already shifted: see
        :meth:`compute_logits_and_loss`) are given (see the class docstring)."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            past_key_values=cache_argument(past_key_values, cache),
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            cu_seqlens=cu_seqlens,
            position_ids=position_ids,
            **kwargs,
        )
        loss, logits = self.compute_logits_and_loss(
            outputs.last_hidden_state, labels, logits_to_keep, num_items_in_batch, shift_labels
        )
        targets = labels if labels is not None else shift_labels
        extra_loss, extra_fields = self.auxiliary_outputs(outputs, targets, attention_mask, cu_seqlens)
        if loss is not None and extra_loss is not None:
            loss = loss + extra_loss.to(loss.device)
        if not return_dict:
            cache = getattr(outputs, CACHE_FIELD)
            rest = tuple(v for v in (logits, cache, outputs.hidden_states) if v is not None)
            return rest if loss is None else (loss, *rest)
        return self.output_class(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            **extra_fields,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )

    output_class = CausalLMOutputWithPast
    """The output dataclass of :meth:`forward` (a subclass adds the fields of :meth:`auxiliary_outputs`)."""

    def auxiliary_outputs(
        self, outputs, labels: torch.LongTensor | None, attention_mask: torch.Tensor | None, cu_seqlens
    ) -> tuple[torch.Tensor | None, dict[str, Any]]:
        """``(term added to the loss or None, extra output fields)`` from the base model's ``outputs``: none here;
        a family with an auxiliary loss (MoM's load balancing) overrides it."""
        return None, {}


__all__ = [
    "FLABlock",
    "FLAForCausalLM",
    "FLAModel",
    "FLAPreTrainedModel",
    "IGNORE_INDEX",
    "build_attention",
    "build_norm",
]
