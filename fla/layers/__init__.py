"""Token mixers as nn.Modules (projections + op + cache handling)."""

from fla.layers.attn import Attention

__all__ = ["Attention"]
