"""Gated DeltaProduct: ``num_householder`` delta-rule (Householder) steps per token after one decay
(https://arxiv.org/abs/2502.10297), run as the gated delta rule over interleaved micro-steps."""

from fla.ops.gated_delta_product.chunk import chunk_gated_delta_product
from fla.ops.gated_delta_product.fused_recurrent import fused_recurrent_gated_delta_product
from fla.ops.gated_delta_product.naive import naive_recurrent_gated_delta_product

__all__ = ["chunk_gated_delta_product", "fused_recurrent_gated_delta_product", "naive_recurrent_gated_delta_product"]
