"""The model families the conformance suite (test_conformance.py) checks, and the helpers its checks share.

Adding a family = one :class:`Family` line in :data:`FAMILIES` + its ``configs/<family>_tiny.json``
(+ ``configs/<family>_cpu.json`` for the trainer runs, when it has one). The suite then runs every
model-level check on it; behaviour only one family has goes in a small ``test_<family>.py``.

A family's test model is ``configs/<family>_tiny.json`` with :attr:`Family.tiny` (CPU-sized widths) and
a small vocabulary on top, then each of :attr:`Family.variants` (short convolutions, GQA, a hybrid
attention layer, ...).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

import fla  # noqa: F401  (registers the Auto* classes)
from tests.harness import DEVICE, tol

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "configs"
V = 101  # test vocabulary
RATIO = tol(torch.float32, 20)
SMALL = dict(hidden_size=72, num_hidden_layers=2, num_heads=4, intermediate_size=96)
# a wider init than the default 0.02: without it a tiny model's token mixers (after short convolutions above all)
# add so little to the logits that a broken mixer (say, varlen ignored in a convolution) hides under the tolerance
TEST_ONLY = dict(vocab_size=V, fuse_cross_entropy=False, initializer_range=0.1)
RODIMUS_SKA = {"num_heads": 4, "window_size": 8}
HYBRID = {"attn": {"layers": [1], "num_heads": 2, "num_kv_heads": 1, "window_size": None, "rope_theta": 10000.0}}


@dataclass(frozen=True)
class Family:
    model_type: str
    params_m: dict[str, float]  # configs/<model_type>_<size>.json -> parameters in millions (every such file)
    tiny: dict = field(default_factory=lambda: dict(SMALL))  # over configs/<model_type>_tiny.json
    variants: dict[str, dict] = field(default_factory=lambda: {"plain": {}, "hybrid": HYBRID})  # every check
    name_only: dict[str, dict] = field(default_factory=dict)  # only in the fla 0.6.0 parameter-name snapshot
    bad_heads: tuple[dict, str] = (dict(num_kv_heads=3), "is not a multiple of num_kv_heads")  # fields, error
    recurrent: bool = True  # a chunk (training) and a fused_recurrent (decoding) op: train == eval logits
    slow_triton: bool = False  # the Triton-interpreter check takes > 10 s: mark it slow
    hybrid: bool = True  # the config takes a hybrid softmax-attention ``attn`` spec (checked in the error test)
    mode_field: str | None = "attn_mode"  # the config field naming the mixer's mode, if it has one
    # TP trainer test: bound on the grad-norm drift of later steps (Adam amplifies fp32 reduction-order differences
    # by how sensitive the family's gradients are to its parameters; step 1 is held to 1e-5 for every family)
    tp_grad_drift: float = 2e-4
    # normal noise of this std added to every parameter after the model's own init (seeded: the same for every
    # build): for families whose init zeroes whole paths (RWKV7's o_proj, FFN value and LoRA first matrices, as
    # fla), which would leave the mixers without gradients and their outputs without effect in the checks
    perturb_init: float = 0.0

    def __str__(self) -> str:
        return self.model_type

    @property
    def tiny_json(self) -> Path:
        return CONFIGS / f"{self.model_type}_tiny.json"

    @property
    def trainer_json(self) -> Path:
        """The config the trainer runs (TP): ``configs/<family>_cpu.json`` where present, else the tiny one."""
        cpu = CONFIGS / f"{self.model_type}_cpu.json"
        return cpu if cpu.exists() else self.tiny_json

    def fields(self, variant: str = "plain", **overrides) -> dict:
        """The test config's fields over the tiny JSON: widths, test-only fields, then ``variant`` (of
        :attr:`variants` or :attr:`name_only`) and ``overrides``."""
        return {**self.tiny, **TEST_ONLY, **{**self.variants, **self.name_only}[variant], **overrides}

    def config_fields(self, variant: str = "plain", **overrides) -> dict:
        """Every field of the test config: the tiny JSON's (but ``model_type``), then :meth:`fields`."""
        base = {k: v for k, v in json.loads(self.tiny_json.read_text()).items() if k != "model_type"}
        return {**base, **self.fields(variant, **overrides)}

    def config(self, variant: str = "plain", **overrides):
        return AutoConfig.for_model(self.model_type, **self.config_fields(variant, **overrides))

    def model(self, variant: str = "plain", seed: int = 0, perturbed: bool = True, **overrides):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(self.config(variant, **overrides)).to(DEVICE)
        if self.perturb_init and perturbed:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * self.perturb_init)
        return model

    def name_cases(self) -> list[list]:
        """``[model_type, fields]`` of every config whose parameter names are compared with fla 0.6.0."""
        cases = [*self.variants.values(), *self.name_only.values()]
        return [[self.model_type, {**self.tiny, "vocab_size": V, **fields}] for fields in cases]


FAMILIES = [
    Family(
        "transformer",
        dict(tiny=8.7, cpu=0.4, **{"340M": 373.9, "1.3B": 1364.3}),
        recurrent=False,
        tiny=dict(SMALL, hidden_size=120, num_kv_heads=2, intermediate_size=100),
        variants={"plain": {}, "window_qk_norm": dict(window_size=4, qk_norm=True, num_kv_heads=1)},
        name_only={"bias_tied": dict(qkv_bias=True, tie_word_embeddings=True, fuse_norm=False)},
        bad_heads=(dict(num_kv_heads=3), "num_heads=4 is not a multiple of num_kv_heads=3"),
    ),
    Family(
        "gla",
        dict(tiny=8.7, cpu=0.4, **{"340M": 374.5, "1.3B": 1365.5}),
        slow_triton=True,
        variants={
            "plain": {},
            "conv_gqa": dict(use_short_conv=True, num_kv_heads=2, clamp_min=-0.05, feature_map="relu"),
            "hybrid": dict(HYBRID, use_short_conv=True, fuse_norm=False),
        },
        name_only={
            "no_output_gate": dict(use_output_gate=False, elementwise_affine=False, expand_v=2),
            "unfused_tied": dict(fuse_norm=False, tie_word_embeddings=True, num_kv_heads=1),
        },
    ),
    Family(
        "retnet",
        dict(tiny=8.7, cpu=0.4, **{"340M": 380.2, "1.3B": 1351.7}),
        variants={
            "plain": {},
            "gqa": dict(num_kv_heads=2, feature_map="relu", expand_v=1),
            "hybrid": dict(HYBRID, fuse_norm=False),
        },
        name_only={
            "short_conv_ignored": dict(use_short_conv=True, conv_size=3),
            "no_output_gate": dict(use_output_gate=False, elementwise_affine=False),
            "unfused_tied": dict(fuse_norm=False, tie_word_embeddings=True, num_kv_heads=1),
        },
    ),
    Family(
        "delta_net",
        dict(tiny=8.7, cpu=0.4, **{"340M": 374.4, "1.3B": 1365.7}),
        variants={
            "plain": {},
            "gate_relu_sum": dict(use_gate=True, qk_activation="relu", qk_norm="sum", allow_neg_eigval=True),
            "hybrid": dict(HYBRID, use_short_conv=False, use_beta=False, qk_activation="elu", fuse_norm=False),
        },
        name_only={
            "identity_wide_v": dict(qk_activation="identity", expand_v=2, conv_size=3),
            "unfused_tied": dict(fuse_norm=False, tie_word_embeddings=True, use_beta=False, use_short_conv=False),
        },
        bad_heads=(dict(num_heads=5), "key dim 72 is not a multiple of num_heads=5"),
    ),
    Family(
        "gated_deltanet",
        dict(tiny=8.8, cpu=0.4, **{"340M": 379.9, "1.3B": 1387.3}),
        tiny=dict(SMALL, num_heads=2, head_dim=18),
        variants={
            "plain": {},
            "gva_no_gate": dict(num_v_heads=4, use_gate=False, allow_neg_eigval=True),
            "hybrid": dict(HYBRID, use_short_conv=False, output_gate_activation="sigmoid", fuse_norm=False),
        },
        name_only={
            "gva_conv3": dict(num_v_heads=6, expand_v=1.5, conv_size=3),
            "unfused_tied": dict(fuse_norm=False, tie_word_embeddings=True, use_short_conv=False, use_gate=False),
        },
        bad_heads=(dict(num_v_heads=3), "num_v_heads=3 is not a multiple of num_heads=2"),
    ),
    Family(
        "linear_attn",
        dict(tiny=8.7, **{"340M": 374.3, "1.3B": 1365.9}),
        variants={
            "plain": {},
            "hedgehog_tied_gqa_normalized": dict(
                feature_map="hedgehog", tie_feature_map_qk=True, num_kv_heads=2, norm_feature_map=True
            ),
            "hybrid": dict(HYBRID, feature_map="elu", norm_k=True, norm_feature_map=True, fuse_norm=False),
        },
        name_only={
            "t2r_tied": dict(feature_map="t2r", tie_feature_map_qk=True, tie_word_embeddings=True, fuse_norm=False),
            "dpfp_wide_v": dict(feature_map="dpfp", expand_v=2, elementwise_affine=False, num_kv_heads=1),
            "identity_half_k": dict(feature_map="identity", norm_q=True, expand_k=0.5),
        },
    ),
    Family(
        "hgrn2",
        dict(tiny=8.7, cpu=0.4, **{"340M": 373.9, "1.3B": 1364.4}),
        tiny=dict(SMALL, expand_ratio=18),
        variants={
            "plain": {},
            "conv_no_lower_bound": dict(use_short_conv=True, conv_size=3, use_lower_bound=False),
            # attention at layer 0: HGRN2 at layer 1 still gets a lower bound (layer 0 never uses one)
            "hybrid": dict(attn={**HYBRID["attn"], "layers": [0]}, use_short_conv=True, fuse_norm=False),
        },
        name_only={
            "heads_only_tied": dict(expand_ratio=None, num_heads=2, tie_word_embeddings=True, elementwise_affine=False),
        },
        bad_heads=(dict(num_heads=5, expand_ratio=None), "hidden_size=72 is not a multiple of num_heads=5"),
    ),
    Family(
        "hgrn",
        dict(tiny=8.7, **{"340M": 373.9, "1.3B": 1364.4}),
        tiny=dict(SMALL, expand_ratio=1),
        variants={
            "plain": {},
            "conv_no_lower_bound": dict(use_short_conv=True, conv_size=3, use_lower_bound=False),
            # attention at layer 0: HGRN at layer 1 still gets a lower bound (layer 0 never uses one)
            "hybrid": dict(attn={**HYBRID["attn"], "layers": [0]}, use_short_conv=True, fuse_norm=False),
        },
        name_only={
            "expand_tied": dict(expand_ratio=2, tie_word_embeddings=True, elementwise_affine=False),
        },
        bad_heads=(dict(expand_ratio=0), "expand_ratio must be a positive number, got 0"),
    ),
    Family(
        "lightnet",
        dict(tiny=8.7, **{"340M": 380.2, "1.3B": 1376.9}),
        tiny=dict(SMALL, expand_ratio=None, gate_low_rank_dim=16),
        variants={
            "plain": {},
            "conv_keys_wider": dict(use_short_conv=True, conv_size=3, expand_ratio=24),
            "hybrid": dict(HYBRID, fuse_norm=False),
        },
        name_only={
            "ratio_only_tied": dict(
                num_heads=None, expand_ratio=36, tie_word_embeddings=True, elementwise_affine=False
            ),
        },
        bad_heads=(dict(num_heads=5, expand_ratio=None), "hidden_size=72 is not a multiple of num_heads=5"),
    ),
    Family(
        "rodimus",
        dict(tiny=8.7, **{"340M": 381.9, "1.3B": 1366.8}),
        # no num_heads field: the Rodimus mixer is one head; SW-SKA's heads are in ska_attn (window 8 < test lengths)
        tiny=dict(hidden_size=72, num_hidden_layers=2, intermediate_size=96, expand_ratio=12, ska_attn=RODIMUS_SKA),
        variants={
            "plain": {},  # rodimus_plus: Rodimus + SW-SKA + MLP
            "rodimus_block": dict(block_type="rodimus", use_short_conv=False, expand_ratio=20),
            "hybrid": dict(HYBRID, fuse_norm=False, ska_attn={**RODIMUS_SKA, "qk_norm": True, "qkv_bias": True}),
        },
        name_only={
            "fla_defaults_tied": dict(
                intermediate_size=None, input_gate_low_rank=8, tie_word_embeddings=True, residual_in_fp32=False
            ),
        },
        bad_heads=(dict(ska_attn={"num_heads": 5}), "hidden_size=72 is not a multiple of ska_attn.num_heads=5"),
    ),
    Family(
        "mla",
        dict(tiny=8.7, cpu=0.4, **{"340M": 350.3, "1.3B": 1235.4}),
        recurrent=False,
        # odd widths, v wider than nope but narrower than q/k
        tiny=dict(
            SMALL,
            q_lora_rank=24,
            kv_lora_rank=20,
            qk_nope_head_dim=10,
            qk_rope_head_dim=6,
            qk_head_dim=16,
            v_head_dim=12,
        ),
        variants={
            "plain": {},
            # full q projection; values wider than q/k (q and k zero-padded for the backends)
            "window_no_q_lora": dict(window_size=4, q_lora_rank=None, v_head_dim=20),
        },
        name_only={"unfused_tied": dict(fuse_norm=False, tie_word_embeddings=True, qk_head_dim=None)},
        bad_heads=(dict(qk_head_dim=15), "qk_head_dim=15 != qk_nope_head_dim \\+ qk_rope_head_dim = 10 \\+ 6"),
        hybrid=False,  # no ``attn`` field: every layer is MLA (as fla 0.6.0's MLAConfig)
        mode_field=None,
    ),
    Family(
        "forgetting_transformer",
        dict(tiny=8.7, **{"340M": 374.3, "1.3B": 1365.9}),
        recurrent=False,
        slow_triton=True,
        variants={
            "plain": {},
            "gqa_window_qk_norm_gate": dict(num_kv_heads=2, window_size=4, qk_norm=True, use_output_gate=True),
        },
        name_only={"bias_tied": dict(qkv_bias=True, tie_word_embeddings=True, fuse_norm=False)},
        bad_heads=(dict(num_kv_heads=3), "num_heads=4 is not a multiple of num_kv_heads=3"),
    ),
    Family(
        "nsa",
        dict(tiny=8.7, cpu=0.4, **{"340M": 329.0, "1.3B": 1185.0}),
        recurrent=False,
        slow_triton=True,
        # blocks of 4 tokens, 2 selected, a 6-token window: the test sequences cover every branch
        tiny=dict(SMALL, num_kv_heads=2, head_dim=12, block_size=4, block_counts=2, window_size=6),
        variants={
            "plain": {},
            "mqa_bias_no_window": dict(num_kv_heads=1, qkv_bias=True, block_counts=3, window_size=0),
        },
        name_only={"unfused_tied": dict(fuse_norm=False, tie_word_embeddings=True, num_kv_heads=4)},
        bad_heads=(dict(num_kv_heads=3), "num_heads=4 is not a multiple of num_kv_heads=3"),
        hybrid=False,  # no ``attn`` field: every layer is NSA (as fla 0.6.0's NSAConfig)
        mode_field=None,
    ),
    Family(
        "rwkv6",
        dict(tiny=8.6, **{"340M": 378.1, "1.3B": 1360.2}),
        tiny=dict(SMALL, proj_low_rank_dim=8, gate_low_rank_dim=16),
        variants={
            "plain": {},
            "recurrent_post_norm": dict(
                attn_mode="fused_recurrent", norm_first=False, fuse_norm=False, hidden_act="relu"
            ),
            "hybrid": dict(HYBRID, fuse_norm=False),
        },
        name_only={
            "no_bias_tied": dict(norm_bias=False, tie_word_embeddings=True, expand_v=2, intermediate_size=None),
        },
        bad_heads=(dict(num_heads=5), "key dim 36 is not a multiple of num_heads=5"),
        slow_triton=True,
    ),
    Family(
        "gsa",
        dict(tiny=8.7, cpu=0.4, **{"340M": 380.2, "1.3B": 1376.9}),
        tiny=dict(SMALL, num_slots=8),
        variants={
            "plain": {},
            "conv_gqa_t2r": dict(use_short_conv=True, conv_size=3, num_kv_heads=2, feature_map="t2r"),
            "hybrid": dict(HYBRID, feature_map="relu", gate_logit_normalizer=4, num_slots=6, fuse_norm=False),
        },
        name_only={
            "default_slots_tied": dict(
                num_slots=None, expand_k=0.5, tie_word_embeddings=True, elementwise_affine=False
            ),
        },
        slow_triton=True,
    ),
    Family(
        "abc",
        dict(tiny=8.7, **{"340M": 380.2, "1.3B": 1376.9}),
        tiny=dict(SMALL, num_heads=2, num_slots=6),
        variants={
            "plain": {},
            "conv_no_rope": dict(use_short_conv=True, conv_size=3, use_rope=False, clamp_min=None, clamp_max=4.0),
            "hybrid": dict(HYBRID, fuse_norm=False),
        },
        name_only={
            "default_slots_tied": dict(num_slots=None, expand_v=2, tie_word_embeddings=True, elementwise_affine=False),
        },
        bad_heads=(dict(num_heads=5), "key dim 36 is not a multiple of num_heads=5"),
        slow_triton=True,
    ),
    Family(
        "kda",
        dict(tiny=8.7, **{"340M": 387.0, "1.3B": 1390.9}),
        tiny=dict(SMALL, num_heads=2, head_dim=18),
        slow_triton=True,
        variants={
            "plain": {},
            "gva_bounded": dict(num_v_heads=4, allow_neg_eigval=True, safe_gate=True, lower_bound=-5.0),
            "hybrid": dict(HYBRID, use_short_conv=False, fuse_norm=False),
        },
        name_only={
            "gva_conv3": dict(num_v_heads=6, expand_v=1.5, conv_size=3),
            "unfused_tied": dict(fuse_norm=False, tie_word_embeddings=True, use_short_conv=False),
        },
        bad_heads=(dict(num_v_heads=3), "num_v_heads=3 is not a multiple of num_heads=2"),
    ),
    Family(
        "comba",
        dict(tiny=8.8, **{"340M": 379.9, "1.3B": 1387.3}),
        tiny=dict(SMALL, num_heads=2, head_dim=18),
        slow_triton=True,
        variants={
            "plain": {},
            "gva_no_gate": dict(num_v_heads=4, use_output_gate=False, correction_factor=0.02),
            "hybrid": dict(HYBRID, use_short_conv=False, fuse_norm=False),
        },
        # fla 0.6.0's model always builds D and decay (it does not pass use_output_correction / use_inner_decay
        # on): only configs with both on are compared by name
        name_only={
            "gva_conv3": dict(num_v_heads=6, expand_v=1.5, conv_size=3),
            "unfused_tied": dict(fuse_norm=False, tie_word_embeddings=True, use_short_conv=False),
        },
        bad_heads=(dict(num_v_heads=3), "num_v_heads=3 is not a multiple of num_heads=2"),
    ),
    Family(
        "gated_deltaproduct",
        dict(tiny=8.9, **{"340M": 429.8, "1.3B": 1586.2}),
        tiny=dict(SMALL, num_heads=2, head_dim=18, num_householder=2, use_forget_gate=True, allow_neg_eigval=True),
        slow_triton=True,
        variants={
            "plain": {},
            "one_step_no_gates": dict(num_householder=1, use_forget_gate=False, use_output_gate=False),
            "hybrid": dict(HYBRID, num_householder=3, use_short_conv=False, fuse_norm=False),
        },
        name_only={
            "fla_defaults_tied": dict(
                num_householder=1, use_forget_gate=False, allow_neg_eigval=False, tie_word_embeddings=True
            ),
        },
        bad_heads=(dict(expand_v=1.3), "head_dim \\* expand_v = 18 \\* 1.3 is not an integer"),
    ),
]
FAMILIES.append(
    Family(
        "mamba2",
        dict(tiny=8.4, **{"340M": 382.4, "1.3B": 1371.8}),
        # no num_heads field: Mamba2 derives it (expand * hidden_size / head_dim = 8 heads in 2 groups); no MLP
        tiny=dict(hidden_size=72, num_hidden_layers=2, head_dim=18, state_size=16, n_groups=2),
        # one variant (the conformance checks cost the most here); the options' maths: test_mamba2.py
        variants={"plain": {}},  # gated RMSNorm over 2 groups, gate before the norm
        name_only={
            "ungated_hdim_dt_limit": dict(
                rmsnorm=False,
                D_has_hdim=True,
                use_bias=True,
                n_groups=1,
                dt_limit=[0.0, 0.05],
                use_conv_bias=False,
                residual_in_fp32=False,
                fuse_norm=False,
            ),
            "tied_groups_conv3": dict(tie_word_embeddings=True, n_groups=4, conv_kernel=3, state_size=8),
            "norm_before_gate": dict(norm_before_gate=True, use_conv_bias=False),
        },
        bad_heads=(dict(n_groups=3), "num_heads=8 is not a multiple of n_groups=3"),
        slow_triton=True,
        hybrid=False,
        mode_field=None,
    )
)
MAMBA_TINY = dict(hidden_size=72, num_hidden_layers=2, intermediate_size=96)  # no heads: one scan per channel
FAMILIES += [
    Family(
        "mamba",
        dict(tiny=8.4, **{"340M": 385.6, "1.3B": 1400.3}),
        # one variant (each costs ~10 s here): the options ride on it; state_size 5 is not a power of two
        tiny=dict(MAMBA_TINY, state_size=5, conv_kernel=3, residual_in_fp32=True, use_bias=True),
        variants={"plain": {}},
        name_only={
            "tied_unfused": dict(tie_word_embeddings=True, fuse_norm=False, dt_rank=7, use_conv_bias=False),
            "fla_defaults": dict(state_size=16, conv_kernel=4, residual_in_fp32=False, use_bias=False),
        },
        bad_heads=(dict(state_size=65), "state_size=65 must be an int in 1 .. 64"),
        slow_triton=True,
        hybrid=False,  # no ``attn`` field (fla 0.6.0's MambaConfig has none)
        mode_field=None,
    ),
    Family(
        "samba",
        dict(tiny=8.8, **{"340M": 403.5, "1.3B": 1367.8}),
        # attention first: the one-layer Triton check then runs attention, Mamba's Triton path is the mamba entry's
        tiny=dict(MAMBA_TINY, attn={"layers": [0], "num_heads": 4, "num_kv_heads": 2, "window_size": 8}),
        variants={"plain": dict(use_bias=True, state_size=4)},  # one variant, as for mamba
        name_only={
            "tied_rank": dict(tie_word_embeddings=True, time_step_rank=3, use_conv_bias=False),
            "no_attn_unfused": dict(attn=None, fuse_norm=False),
        },
        bad_heads=(dict(attn={"layers": [1], "num_heads": 5}), "hidden_size=72 is not a multiple of num_heads=5"),
        mode_field=None,
    ),
    Family(
        "mom",
        dict(tiny=8.8, **{"340M": 356.1, "1.3B": 1291.1}),
        # aux_loss_scale 0: the shared loss check compares the loss with plain cross-entropy; test_mom.py checks
        # the load-balancing term. 3 memories, top-2 (+ the shared one): every memory sees tokens of a short batch
        tiny=dict(SMALL, num_heads=2, head_dim=18, num_memories=3, topk=2, aux_loss_scale=0.0),
        variants={
            "plain": {},
            "single_kv_top1_hybrid": dict(
                HYBRID,
                single_kv_proj=True,
                shared_mem=False,
                topk=1,
                use_output_gate=False,
                expand_v=2,
                fuse_norm=False,
            ),
        },
        name_only={
            "wide_v_conv3": dict(expand_v=1.5, conv_size=3, num_memories=5, topk=3, shared_mem=False),
            "unfused_tied": dict(fuse_norm=False, tie_word_embeddings=True, use_output_gate=False, single_kv_proj=True),
        },
        bad_heads=(dict(topk=4), "topk=4 must not exceed num_memories=3"),
        slow_triton=True,  # ~18 s in the interpreter; the gated delta rule's kernels are gated_deltanet's
    ),
    Family(
        "path_attn",
        # cpu: the trainer's TP runs; initializer_range 0.1, as at 0.02 the Householder directions come out of
        # w_proj.0 -> w_proj.1 -> conv at |w| ~ 1e-3, where the l2norm (eps 1e-6) amplifies fp32 sum-order noise
        dict(tiny=8.7, cpu=0.4, **{"340M": 375.9, "1.3B": 1369.2}),
        recurrent=False,
        slow_triton=True,
        variants={"plain": {}, "gqa_gate_no_conv": dict(num_kv_heads=2, use_forget_gate=True, use_w_shortconv=False)},
        name_only={"full_rank_w_tied": dict(use_low_rank_w=False, tie_word_embeddings=True, fuse_norm=False)},
        bad_heads=(dict(num_kv_heads=3), "num_heads=4 is not a multiple of num_kv_heads=3"),
        hybrid=False,  # no ``attn`` field: every layer is PaTH attention
        mode_field=None,
    ),
]
FAMILIES.append(
    Family(
        "mesa_net",
        dict(tiny=8.7, **{"340M": 374.5, "1.3B": 1366.3}),
        tiny=dict(SMALL, head_dim=18),
        variants={
            "plain": {},
            "gate_conv3": dict(
                use_output_gate=True,
                conv_size=3,
                lambda_lower_bound=0.1,
                max_cg_step_training=20,
                max_cg_step_decoding=20,
            ),
            "hybrid": dict(HYBRID, fuse_norm=False),
        },
        name_only={
            "no_conv_flag_tied": dict(use_short_conv=False, tie_word_embeddings=True, num_heads=2, head_dim=36),
        },
        bad_heads=(dict(head_dim=0), "head_dim=0"),
        slow_triton=True,
        # the CG solve makes the gradients ~10x more sensitive to a parameter change than GatedDeltaNet's (1e-6 on
        # the parameters moves them 4e-5 vs 4e-6): measured 1.4e-3 drift by step 6 with step 1 at 4.5e-7
        tp_grad_drift=3e-3,
    )
)
FAMILIES.append(
    Family(
        "rwkv7",
        dict(tiny=8.7, **{"340M": 381.3, "1.3B": 1366.6}),
        tiny=dict(SMALL, head_dim=18, decay_low_rank_dim=8, gate_low_rank_dim=16, a_low_rank_dim=8, v_low_rank_dim=8),
        # two variants (the second carries the options): the recurrent op for training too, a post-norm stack,
        # unfused norms, attention at layer 1 (v_first comes from layer 0 only). fla 0.6.0 cannot build
        # value_dim > hidden_size (its v_lora init is hidden_size wide), so no case widens the values
        variants={
            "plain": {},
            "hybrid": dict(HYBRID, attn_mode="fused_recurrent", norm_first=False, fuse_norm=False, hidden_act="relu"),
        },
        name_only={
            "heads_only_tied": dict(
                head_dim=None, norm_bias=False, tie_word_embeddings=True, intermediate_size=None, value_dim=72
            ),
        },
        bad_heads=(dict(head_dim=7, num_heads=None), "hidden_size=72 is not a multiple of head_dim=7"),
        slow_triton=True,
        perturb_init=0.05,
    )
)
BY_TYPE = {f.model_type: f for f in FAMILIES}


# ---- inputs and references ------------------------------------------------------------------------


def ids(*shape):
    return torch.randint(3, V, shape, device=DEVICE)


def padded_batches(lens, side):
    """Random sequences of ``lens`` as a padded batch (+ mask) and as a packed varlen batch (+ cu_seqlens)."""
    T = max(lens)
    seqs = [ids(n) for n in lens]
    padded = torch.zeros(len(lens), T, dtype=torch.long, device=DEVICE)
    mask = torch.zeros_like(padded)
    for b, s in enumerate(seqs):
        where = slice(T - len(s), T) if side == "left" else slice(0, len(s))
        padded[b, where], mask[b, where] = s, 1
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    return seqs, padded, mask, torch.cat(seqs)[None], cu


def greedy_by_full_forward(model, x, mask, steps, pad_token_id=0):
    """Greedy continuation recomputing the whole (left-padded) batch every step, no cache.

    Like ``generate``, a row that has produced ``eos_token_id`` continues with ``pad_token_id``.
    """
    logits = []
    done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(steps):
        last = model(x, attention_mask=mask, use_cache=False).logits[:, -1]
        logits.append(last)
        nxt = torch.where(done, pad_token_id, last.argmax(-1))
        done |= nxt == model.config.eos_token_id
        x = torch.cat([x, nxt[:, None]], 1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
    return x, logits


# ---- fla 0.6.0 parameter names ----------------------------------------------------------------------

FLA060_PATH = os.environ.get("FLA060_PATH", "/tmp/fla060")
# fla 0.6.0's keys for every family's name_cases(), written by fla 0.6.0 itself (write_fla060_snapshot), so the
# name check runs on every machine; test_fla060_snapshot_is_current (slow) re-derives it from fla 0.6.0.
FLA060_SNAPSHOT = Path(__file__).with_name("fla060_keys.json")


def all_name_cases() -> dict[str, list[list]]:
    return {family.model_type: family.name_cases() for family in FAMILIES}


@functools.cache
def fla060_keys_by_family(live: bool = False) -> dict[str, list[dict]] | None:
    """fla 0.6.0's ``{key: shape}`` for :meth:`Family.name_cases` of every family.

    From the committed snapshot, or (``live=True``) from fla 0.6.0 at FLA060_PATH in one subprocess
    (``None`` when it is not there).
    """
    cases = all_name_cases()
    if not live:
        return json.loads(FLA060_SNAPSHOT.read_text())
    flat = fla060_keys([case for family_cases in cases.values() for case in family_cases])
    if flat is None:
        return None
    out, i = {}, 0
    for model_type, family_cases in cases.items():
        out[model_type], i = flat[i : i + len(family_cases)], i + len(family_cases)
    return {"cases": cases, "keys": out}


def fla060_keys(cases: list) -> list[dict] | None:
    """fla 0.6.0's ``{key: shape}`` per ``(model_type, fields)`` case, or ``None`` when it is not at FLA060_PATH."""
    if not (Path(FLA060_PATH) / "fla" / "__init__.py").exists():
        return None
    env = {**os.environ, "PYTHONPATH": FLA060_PATH, "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    script = Path(__file__).with_name("fla060_keys.py")
    run = subprocess.run(
        [sys.executable, str(script), json.dumps(cases)], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, f"building fla 0.6.0's models failed:\n{run.stderr[-3000:]}"
    return json.loads(run.stdout.strip().splitlines()[-1])


def write_fla060_snapshot() -> None:
    """Write :data:`FLA060_SNAPSHOT` from fla 0.6.0 at FLA060_PATH.

    Run as ``FLA060_PATH=... python -m tests.fla.models.families``.
    """
    live = fla060_keys_by_family(live=True)
    if live is None:
        raise SystemExit(f"flash-linear-attention 0.6.0 not found at FLA060_PATH={FLA060_PATH}")
    FLA060_SNAPSHOT.write_text(json.dumps(live, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    write_fla060_snapshot()
