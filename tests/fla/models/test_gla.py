"""GLA specifics; the model-level checks every family passes are in test_conformance.py."""

import torch

from tests.fla.models.families import BY_TYPE, ids

GLA = BY_TYPE["gla"]


def test_gate_is_low_rank_and_normalized():
    layer = GLA.model(clamp_min=None).model.layers[0].attn
    assert layer.gk_proj[0].weight.shape == (16, 72) and layer.gk_proj[1].bias.shape == (36,)
    assert layer.gate_logit_normalizer == 16 and layer.head_k_dim == 9 and layer.head_v_dim == 18


def test_clamp_min_changes_outputs():
    plain, clamped = GLA.model().eval(), GLA.model(clamp_min=-0.01).eval()
    x = ids(1, 20)
    with torch.no_grad():
        assert not torch.allclose(plain(x).logits, clamped(x).logits, atol=1e-4)
