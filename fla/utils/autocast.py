"""Autocast for custom autograd functions: their backward runs under the autocast state of their forward.

``torch.autocast`` covers the forward of a ``torch.autograd.Function`` but not its backward, so a
backward that multiplies a bf16 gradient by an fp32 parameter (autocast cast it in the forward)
fails with a dtype mismatch. ``torch.amp.custom_fwd``/``custom_bwd`` fix this for one device type
chosen at decoration; these helpers do the same for whatever device the inputs are on.
"""

from __future__ import annotations

import contextlib

import torch


def autocast_state(device: torch.device) -> torch.dtype | None:
    """The autocast dtype active for ``device``'s type, or ``None`` when autocast is off there."""
    kind = device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


def backward_autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Context for a backward: autocast to ``dtype`` on ``device`` (from :func:`autocast_state` in the
    forward), or autocast explicitly off when the forward ran without it."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
