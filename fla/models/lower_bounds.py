"""Per-layer forget-gate lower bounds (fla's HGRN and HGRN2 models): one learned ``[L, D]`` parameter of the model.

Layer ``i``'s bounds are the cumulative softmax over layers, shifted so that layer 0 has none:
``lb_i = sum_{j <= i} softmax(lower_bounds, 0)_j - softmax(lower_bounds, 0)_0``, in ``[0, 1)``. Every block
gets its own row ``[D]`` as the keyword ``lower_bound`` (:meth:`LowerBoundedModel.layer_kwargs`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fla.models.modeling_utils import FLAModel


class LowerBoundedModel(FLAModel):
    """:class:`FLAModel` with ``lower_bounds [num_hidden_layers, D]`` when ``config.use_lower_bound``
    (``D = getattr(config, lower_bounds_dim)``; zero init, fla's: uniform softmax, bounds ``i / L``)."""

    lower_bounds_dim = "hidden_size"  # the config field giving D

    def __init__(self, config):
        super().__init__(config)
        if config.use_lower_bound:
            width = getattr(config, self.lower_bounds_dim)
            self.lower_bounds = nn.Parameter(torch.zeros(config.num_hidden_layers, width))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """fla's init of the bounds: zeros (a uniform softmax: bounds ``i / L``). The shared
        :meth:`FLAPreTrainedModel._init_weights` calls it for this module."""
        if getattr(self, "lower_bounds", None) is not None:
            self.lower_bounds.zero_()

    def layer_lower_bounds(self) -> torch.Tensor | None:
        """``[L, D]`` float32 bounds in ``[0, 1)`` (row 0 is 0), or ``None`` without ``use_lower_bound``."""
        if not self.config.use_lower_bound:
            return None
        weights = self.lower_bounds.softmax(0, dtype=torch.float)
        return weights.cumsum(0) - weights[0]

    def forward(self, *args, **kwargs):
        """:meth:`FLAModel.forward`; block ``i`` also gets row ``i`` of the lower bounds (``lower_bound``)."""
        lower_bounds = self.layer_lower_bounds()
        if lower_bounds is not None:
            kwargs["lower_bounds"] = lower_bounds
        return super().forward(*args, **kwargs)

    def layer_kwargs(self, index: int, kwargs: dict) -> dict:
        """``kwargs`` with the ``[L, D]`` ``lower_bounds`` replaced by block ``index``'s row ``lower_bound [D]``."""
        if "lower_bounds" not in kwargs:
            return kwargs
        out = dict(kwargs)
        out["lower_bound"] = out.pop("lower_bounds")[index]
        return out


__all__ = ["LowerBoundedModel"]
