"""Layer-specific forward keywords of the LinearMixer template (``forward_extras`` -> ``step.extras``)."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fla.layers.hgrn import HGRNAttention
from fla.layers.linear_mixer import LinearMixer
from fla.ops.simple_gla import chunk_simple_gla, fused_recurrent_simple_gla


class ScaledGLA(LinearMixer):
    """A toy layer with one declared forward keyword, ``scale``, read from ``step.extras`` in ``mix``."""

    chunk_op = staticmethod(chunk_simple_gla)
    recurrent_op = staticmethod(fused_recurrent_simple_gla)
    forward_extras = ("scale",)

    def __init__(self, hidden_size=32, num_heads=2):
        super().__init__()
        self.setup("chunk", hidden_size, 0.5, 1.0, num_heads, None, None)
        self.build_qkv(hidden_size, False, conv_size=4, conv_bias=False)
        self.gk_proj = nn.Linear(hidden_size, num_heads)
        self.build_output(hidden_size, True, "swish", fuse_norm=True, elementwise_affine=True, norm_eps=1e-5)
        self.seen = []

    def check_extras(self, extras):
        if extras["scale"] is not None and extras["scale"] <= 0:
            raise ValueError(f"ScaledGLA: scale must be positive, got {extras['scale']}")

    def mix(self, step, q, k, v):
        self.seen.append(dict(step.extras))
        scale = step.extras["scale"]
        return self.run(step, q, k, v, g=F.logsigmoid(self.gk_proj(step.x)), scale=scale)


def test_declared_keyword_reaches_step_extras():
    torch.manual_seed(0)
    layer, x = ScaledGLA(), torch.randn(2, 9, 32)
    out, _, _ = layer(x, scale=0.5, position_ids=torch.arange(9)[None])  # a passthrough keyword is ignored
    assert layer.seen[-1] == {"scale": 0.5}
    layer(x)
    assert layer.seen[-1] == {"scale": None}  # not passed: None
    assert not torch.equal(out, layer(x, scale=0.25)[0])  # the value is used
    with pytest.raises(ValueError, match="scale must be positive, got -1"):
        layer(x, scale=-1)


def test_other_keywords_are_ignored_as_in_fla060():
    """fla 0.6.0's layers take ``**kwargs``: a keyword a layer does not declare changes nothing (HGRN's
    ``lower_bound`` does)."""
    torch.manual_seed(0)
    layer, x = ScaledGLA(), torch.randn(1, 4, 32)
    assert torch.equal(layer(x)[0], layer(x, lower_bound=torch.zeros(16), token_type_ids=x)[0])
    hgrn = HGRNAttention(hidden_size=16, expand_ratio=1, layer_idx=1)
    assert HGRNAttention.forward_extras == ("lower_bound",)
    y = torch.randn(1, 4, 16)
    bounded = hgrn(y, lower_bound=torch.full((16,), 0.5))[0]
    assert torch.equal(hgrn(y, lowerbound=torch.full((16,), 0.5))[0], hgrn(y)[0])
    assert not torch.equal(bounded, hgrn(y)[0])
