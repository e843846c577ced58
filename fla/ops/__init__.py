"""Token-mixing ops: one folder per op family (chunk, fused_recurrent, naive)."""

from fla.ops.abc import chunk_abc, fused_recurrent_abc
from fla.ops.attn import attn_decoding_one_step, parallel_attn
from fla.ops.based import fused_chunk_based, parallel_based
from fla.ops.comba import chunk_comba, fused_recurrent_comba
from fla.ops.delta_rule import chunk_delta_rule, fused_chunk_delta_rule, fused_recurrent_delta_rule
from fla.ops.forgetting_attn import parallel_forgetting_attn
from fla.ops.gated_delta_product import chunk_gated_delta_product, fused_recurrent_gated_delta_product
from fla.ops.gated_delta_rule import (
    chunk_gated_delta_rule,
    chunk_gdn,
    fused_recurrent_gated_delta_rule,
    fused_recurrent_gdn,
)
from fla.ops.generalized_delta_rule import (
    chunk_dplr_delta_rule,
    chunk_iplr_delta_rule,
    fused_recurrent_dplr_delta_rule,
    fused_recurrent_iplr_delta_rule,
)
from fla.ops.gla import chunk_gla, fused_chunk_gla, fused_recurrent_gla
from fla.ops.gsa import chunk_gsa, fused_recurrent_gsa
from fla.ops.hgrn import chunk_hgrn, fused_recurrent_hgrn
from fla.ops.kda import chunk_kda, fused_recurrent_kda
from fla.ops.lightnet import chunk_lightnet, fused_recurrent_lightnet
from fla.ops.lightning_attn import chunk_lightning_attn, fused_recurrent_lightning_attn
from fla.ops.linear_attn import chunk_linear_attn, fused_chunk_linear_attn, fused_recurrent_linear_attn
from fla.ops.mamba import chunk_selective_scan, fused_recurrent_selective_scan, selective_scan_fn
from fla.ops.mamba2 import chunk_mamba2_ssd, fused_recurrent_mamba2_ssd
from fla.ops.mesa_net import chunk_mesa_net, fused_recurrent_mesa_net, mesa_net_decoding_one_step
from fla.ops.nsa import parallel_nsa
from fla.ops.path_attn import parallel_path_attn
from fla.ops.retention import chunk_retention, fused_chunk_retention, fused_recurrent_retention, parallel_retention
from fla.ops.rwkv6 import chunk_rwkv6, fused_recurrent_rwkv6
from fla.ops.rwkv7 import chunk_rwkv7, fused_mul_recurrent_rwkv7, fused_recurrent_rwkv7
from fla.ops.simple_gla import chunk_simple_gla, fused_chunk_simple_gla, fused_recurrent_simple_gla, parallel_simple_gla

__all__ = [
    "attn_decoding_one_step",
    "parallel_attn",
    "parallel_forgetting_attn",
    "chunk_delta_rule",
    "chunk_gated_delta_rule",
    "chunk_gdn",
    "chunk_gla",
    "chunk_hgrn",
    "chunk_kda",
    "chunk_lightning_attn",
    "chunk_lightnet",
    "chunk_linear_attn",
    "chunk_mamba2_ssd",
    "chunk_retention",
    "chunk_selective_scan",
    "chunk_simple_gla",
    "fused_chunk_linear_attn",
    "fused_recurrent_delta_rule",
    "fused_recurrent_gated_delta_rule",
    "fused_recurrent_gdn",
    "fused_recurrent_gla",
    "fused_recurrent_hgrn",
    "fused_recurrent_kda",
    "fused_recurrent_lightning_attn",
    "fused_recurrent_lightnet",
    "fused_recurrent_linear_attn",
    "fused_recurrent_mamba2_ssd",
    "fused_recurrent_retention",
    "fused_recurrent_selective_scan",
    "fused_recurrent_simple_gla",
    "chunk_comba",
    "fused_recurrent_comba",
    "chunk_gated_delta_product",
    "fused_recurrent_gated_delta_product",
]
__all__ += ["chunk_rwkv6", "fused_recurrent_rwkv6"]
__all__ += ["chunk_gsa", "fused_recurrent_gsa", "chunk_abc", "fused_recurrent_abc"]
__all__ += ["selective_scan_fn"]
__all__ += ["chunk_mesa_net", "fused_recurrent_mesa_net", "mesa_net_decoding_one_step"]
__all__ += ["chunk_rwkv7", "fused_recurrent_rwkv7", "fused_mul_recurrent_rwkv7"]
__all__ += ["chunk_dplr_delta_rule", "fused_recurrent_dplr_delta_rule"]
__all__ += ["parallel_nsa"]
__all__ += ["parallel_path_attn"]
__all__ += ["fused_chunk_gla", "fused_chunk_simple_gla", "fused_chunk_retention", "fused_chunk_delta_rule"]
__all__ += ["parallel_retention", "parallel_simple_gla", "parallel_based", "fused_chunk_based"]
__all__ += ["chunk_iplr_delta_rule", "fused_recurrent_iplr_delta_rule"]
