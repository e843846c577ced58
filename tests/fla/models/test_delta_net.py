"""DeltaNet specifics; the model-level checks every family passes are in test_conformance.py."""

import pytest
import torch

from tests.fla.models.families import BY_TYPE, ids

DELTA_NET = BY_TYPE["delta_net"]


def test_feature_map_options_change_outputs():
    """qk_activation, qk_norm, use_beta and allow_neg_eigval each reach the computation."""
    x = ids(1, 20)
    with torch.no_grad():
        base = DELTA_NET.model().eval()(x).logits
        for fields in (
            dict(qk_activation="relu"),
            dict(qk_norm="sum"),
            dict(use_beta=False),
            dict(allow_neg_eigval=True),
        ):
            other = DELTA_NET.model(**fields).eval()(x).logits
            assert not torch.allclose(base, other, atol=1e-4), fields


def test_config_errors():
    with pytest.raises(ValueError, match="qk_activation='tanh' is not one of"):
        DELTA_NET.model(qk_activation="tanh")
    with pytest.raises(ValueError, match="qk_norm='l1' is not one of"):
        DELTA_NET.model(qk_norm="l1")
    with pytest.raises(ValueError, match=r"mode='fused_chunk' is not one of \('chunk', 'fused_recurrent'\)"):
        DELTA_NET.model(attn_mode="fused_chunk")
