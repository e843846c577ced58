"""ReBased (Aksenov et al. 2024): linear attention with squared dot-product scores."""

from fla.ops.rebased.parallel import parallel_rebased

__all__ = ["parallel_rebased"]
