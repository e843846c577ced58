"""A memo for host-side helpers that compiled code also calls."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

R = TypeVar("R")


def host_cache(fn: Callable[..., R]) -> Callable[..., R]:
    """``functools.cache`` in eager code; under ``torch.compile`` the function itself.

    Dynamo cannot keep a cache across traces: it traces through an ``lru_cache`` wrapper into the function and
    warns about it on every compiled run ("Dynamo detected a call to a functools.lru_cache-wrapped function",
    once per helper in each training log). The helpers this serves (tile configs from sizes, launch grids,
    capability probes) are pure functions of their arguments, so tracing the function is what the cache would
    have returned.
    """
    cached = functools.cache(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        if torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        return cached(*args, **kwargs)

    wrapper.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    wrapper.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return wrapper


__all__ = ["host_cache"]
