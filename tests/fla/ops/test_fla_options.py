"""fla 0.6.0's layout and hint keywords on our ops (fla/ops/common/fla_options.py and the gated delta rule's
extras): each against the plain call it stands for."""

import pytest
import torch
import torch.nn.functional as F

from fla.ops import (
    chunk_delta_rule,
    chunk_gated_delta_rule,
    chunk_gla,
    chunk_simple_gla,
    fused_recurrent_gated_delta_rule,
    fused_recurrent_retention,
)
from fla.ops.kda import fused_recurrent_kda
from tests.harness import DEVICE, assert_close

B, T, H, K, V = 2, 21, 2, 8, 6


def qkv():
    torch.manual_seed(0)
    q, k = (torch.randn(B, T, H, K, device=DEVICE) for _ in range(2))
    return q, F.normalize(k, dim=-1), torch.randn(B, T, H, V, device=DEVICE)


@pytest.mark.parametrize("op", ["chunk_gla", "chunk_simple_gla", "fused_recurrent_retention", "chunk_delta_rule"])
def test_state_v_first_transposes_the_states(op):
    q, k, v = qkv()
    h0 = torch.randn(B, H, K, V, device=DEVICE)
    gates = {
        "chunk_gla": (chunk_gla, (F.logsigmoid(torch.randn(B, T, H, K, device=DEVICE)),)),
        "chunk_simple_gla": (chunk_simple_gla, (F.logsigmoid(torch.randn(B, T, H, device=DEVICE)),)),
        "fused_recurrent_retention": (fused_recurrent_retention, ()),
        "chunk_delta_rule": (chunk_delta_rule, (torch.rand(B, T, H, device=DEVICE),)),
    }
    fn, extra = gates[op]
    o, ht = fn(q, k, v, *extra, initial_state=h0, output_final_state=True)
    cpu_cu = torch.tensor([0, T])
    o2, ht2 = fn(q, k, v, *extra, initial_state=h0.transpose(-1, -2).contiguous(), output_final_state=True,
                 state_v_first=True, cu_seqlens_cpu=cpu_cu)  # fmt: skip
    assert ht2.shape == (B, H, V, K)
    assert_close("o", o, o2, 1e-6)
    assert_close("ht", ht.transpose(-1, -2), ht2, 1e-6)


def test_gated_delta_rule_beta_logits_and_gate_from_logits():
    q, k, v = qkv()
    raw_g, raw_beta = torch.randn(B, T, H, device=DEVICE), torch.randn(B, T, H, device=DEVICE)
    A_log, dt_bias = torch.randn(H, device=DEVICE), torch.randn(H, device=DEVICE)
    g = -A_log.exp() * F.softplus(raw_g + dt_bias)
    for neg in (False, True):
        ref = chunk_gated_delta_rule(q, k, v, g, raw_beta.sigmoid(), allow_neg_eigval=neg)[0]
        out = chunk_gated_delta_rule(q, k, v, g, raw_beta, allow_neg_eigval=neg, use_beta_sigmoid_in_kernel=True)[0]
        assert_close(f"chunk o (allow_neg_eigval={neg})", ref, out, 1e-6)
    ref = fused_recurrent_gated_delta_rule(q, k, v, g, raw_beta.sigmoid())[0]
    out = fused_recurrent_gated_delta_rule(q, k, v, raw_g, raw_beta, use_gate_in_kernel=True, A_log=A_log,
                                           dt_bias=dt_bias, use_beta_sigmoid_in_kernel=True)[0]  # fmt: skip
    assert_close("recurrent o", ref, out, 1e-6)


def test_gated_delta_rule_with_a_key_channel_gate():
    """``gk`` with ``g``: KDA's recurrence with the per-channel decay ``g + gk``."""
    q, k, v = qkv()
    g, gk = F.logsigmoid(torch.randn(B, T, H, device=DEVICE)), F.logsigmoid(torch.randn(B, T, H, K, device=DEVICE))
    beta = torch.rand(B, T, H, device=DEVICE)
    out, ht = fused_recurrent_gated_delta_rule(q, k, v, g, beta, gk=gk, output_final_state=True)
    ref, ref_ht = fused_recurrent_kda(q, k, v, gk + g[..., None], beta, output_final_state=True)
    assert_close("o", ref, out, 1e-6)
    assert_close("ht", ref_ht, ht, 1e-6)


def test_unsupported_options_raise():
    q, k, v = qkv()
    g, beta = torch.zeros(B, T, H, device=DEVICE), torch.rand(B, T, H, device=DEVICE)
    with pytest.raises(ValueError, match="gv"):
        fused_recurrent_gated_delta_rule(q, k, v, g, beta, gv=torch.zeros(B, T, H, V, device=DEVICE))
    with pytest.raises(ValueError, match="cp_context"):
        chunk_gated_delta_rule(q, k, v, g, beta, cp_context=object())
    with pytest.raises(ValueError, match="needs g and A_log"):
        fused_recurrent_gated_delta_rule(q, k, v, g, beta, use_gate_in_kernel=True)
