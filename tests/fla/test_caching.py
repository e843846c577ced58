"""fla.utils.caching.host_cache: a cache in eager code, no Dynamo warning under torch.compile."""

from __future__ import annotations

import functools
import warnings

import torch

from fla.utils.caching import host_cache


def _compiled_warnings(helper) -> tuple[list[str], torch.Tensor]:
    def fn(x):
        return x * helper(3)

    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = torch.compile(fn, backend="eager", fullgraph=True)(torch.ones(2))
    return [str(w.message) for w in caught], out


def test_eager_calls_are_cached():
    calls = []

    @host_cache
    def width(n: int) -> int:
        calls.append(n)
        return 2 * n

    assert [width(3), width(3), width(4)] == [6, 6, 8] and calls == [3, 4]
    assert width.cache_info().hits == 1

    @host_cache(maxsize=2)
    def bounded(n: int) -> int:
        return n

    for n in range(5):
        bounded(n)
    assert bounded.cache_info().currsize == 2 and bounded.cache_info().maxsize == 2


def test_compiled_calls_trace_the_function_without_dynamo_warning():
    """Every compiled training run warned once per such helper (norm tile configs, launch grids) with
    functools.cache: "Dynamo detected a call to a functools.lru_cache-wrapped function"."""
    messages, out = _compiled_warnings(host_cache(lambda n: n + 1))
    assert torch.equal(out, torch.full((2,), 4.0))
    assert not any("lru_cache" in m for m in messages), messages
    # the warning this avoids
    messages, _ = _compiled_warnings(functools.cache(lambda n: n + 1))
    assert any("lru_cache" in m for m in messages), messages
