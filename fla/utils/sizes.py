"""Launch-size arithmetic on the host.

``triton.cdiv`` and ``triton.next_power_of_2`` are Triton ``ConstexprFunction`` objects that cost
about 2 us per call from Python, and a chunk op's forward + backward makes dozens of such calls
while it launches its kernels. These plain functions do the same for Python ints (kernels keep
``tl.cdiv``).
"""

from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for ints, ``b > 0``."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two ``>= n`` (1 for ``n <= 1``)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
