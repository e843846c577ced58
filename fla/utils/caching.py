"""A memo for host-side helpers that compiled code also calls."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

R = TypeVar("R")


def host_cache(fn: Callable[..., R] | None = None, *, maxsize: int | None = None):
    """``functools.lru_cache(maxsize)`` in eager code (unbounded by default); under ``torch.compile`` the function
    itself. ``@host_cache`` or ``@host_cache(maxsize=N)``.

    Dynamo cannot keep a cache across traces: it traces through an ``lru_cache`` wrapper into the function and
    warns about it on every compiled run ("Dynamo detected a call to a functools.lru_cache-wrapped function",
    once per helper in each training log). The helpers this serves (tile configs from sizes, launch grids,
    capability probes) are pure functions of their arguments, so tracing the function is what the cache would
    have returned.
    """

    def decorate(fn: Callable[..., R]) -> Callable[..., R]:
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> R:
            if torch.compiler.is_compiling():
                return fn(*args, **kwargs)
            return cached(*args, **kwargs)

        wrapper.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        wrapper.cache_info = cached.cache_info  # type: ignore[attr-defined]
        return wrapper

    return decorate if fn is None else decorate(fn)


__all__ = ["host_cache"]
