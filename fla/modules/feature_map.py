"""Feature maps of linear attention: ``phi(q) phi(k)^T`` stands in for ``exp(q k^T)``.

Each map acts on the last dimension of ``x [..., head_dim]`` (every head alike: one map serves all
heads) and returns ``[..., feature_dim]``. Names, constructor signatures and parameter names are fla
0.6.0's, so its checkpoints load:

==========================================  ===========================  ================================
map                                         parameters                   ``feature_dim`` (``d = head_dim``)
==========================================  ===========================  ================================
:class:`HedgehogFeatureMap`                 ``layer`` (d -> d, bias)     ``2 d``: ``softmax([2 W x, -2 W x])``
:class:`T2RFeatureMap`                      ``layer`` (d -> dot_dim)     ``dot_dim``: ``relu(W x)``
:class:`DPFPFeatureMap`                     none                         ``2 nu d``
:class:`HadamardFeatureMap`                 ``layer1``, ``layer2``       ``d``: ``(W1 x + b1) * (W2 x + b2)``
:class:`LearnableOuterProductFeatureMap`    ``layer1``, ``layer2``       ``f (f + 1) / 2`` (``f = feature_dim``)
:class:`LearnablePolySketchNonNegative...`  ``gamma``, ``beta``,         ``s (s + 1) / 2`` (``s = sketch_size``)
                                            ``sketches{1,2}.N``
:class:`TaylorFeatureMap` (Based)           none                         ``1 + d + d (d + 1) / 2``
:class:`RebasedFeatureMap` (ReBased)        ``gamma``, ``beta``          ``d (d + 1) / 2``
ReLU / SquaredReLU / GELU / Swish / Sigmoid none                         ``d``
==========================================  ===========================  ================================

The quadratic maps keep the upper triangle of the outer product ``x x^T`` (:func:`flatten_diag_outer_product`),
so that ``phi(q) . phi(k)`` is a polynomial of ``q . k``. ``elu_p1`` (``elu(x) + 1``) is fla's
``feature_map="elu"``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from fla.modules.norm import layer_norm


@functools.cache
def _triu_indices(n: int, offset: int, device: torch.device) -> torch.Tensor:
    return torch.triu_indices(n, n, offset, device=device)


def _checkpointed(fn):
    """Recompute ``fn`` in the backward (the outer products are ``d`` times larger than their inputs)."""

    @functools.wraps(fn)
    def wrapper(*args):
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    return wrapper


@_checkpointed
def flatten_diag_outer_product(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x, y [..., N]`` -> the upper triangle (diagonal included) of ``x y^T``, by rows: ``[..., N (N + 1) / 2]``."""
    z = torch.einsum("...i,...j->...ij", x, y)
    idx = _triu_indices(z.shape[-1], 0, z.device)
    return z[..., idx[0], idx[1]]


@_checkpointed
def flatten_diag_outer_product_off1(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x, y [..., N]`` -> (strict upper triangle of ``x y^T`` ``[..., N (N - 1) / 2]``, its diagonal ``[..., N]``)."""
    z = torch.einsum("...i,...j->...ij", x, y)
    n = z.shape[-1]
    idx = _triu_indices(n, 1, z.device)
    diag = torch.arange(n, device=z.device)
    return z[..., idx[0], idx[1]], z[..., diag, diag]


def is_power_of_2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def elu_p1(x: torch.Tensor) -> torch.Tensor:
    """``elu(x) + 1`` (positive), computed without cancellation for negative ``x``: ``exp(x)`` there."""
    return torch.where(x >= 0, x + 1, x.clamp_max(0).exp()).to(x.dtype)


class HedgehogFeatureMap(nn.Module):
    """Hedgehog (Zhang et al. 2024, https://arxiv.org/abs/2402.04347): ``softmax([2 W x + b, -(2 W x + b)])``.

    Args:
        head_dim: input width ``d``; output ``2 d``. ``layer`` starts as the identity.
    """

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.layer = nn.Linear(head_dim, head_dim)
        self.init_weights_()

    def init_weights_(self) -> None:
        """``layer`` = identity (the model's weight init then overrides it, as in fla)."""
        nn.init.eye_(self.layer.weight)
        nn.init.zeros_(self.layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = 2 * self.layer(x)
        return torch.cat([y, -y], dim=-1).softmax(-1)


class T2RFeatureMap(nn.Module):
    """T2R (Kasai et al. 2021, https://arxiv.org/abs/2103.13076): ``relu(W x (+ b))``.

    Args:
        head_dim: input width; dot_dim: output width (default ``head_dim``); bias: of ``layer``.
    """

    def __init__(self, head_dim: int, dot_dim: int | None = None, bias: bool | None = False) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.dot_dim = head_dim if dot_dim is None else dot_dim
        self.bias = bias
        self.layer = nn.Linear(head_dim, self.dot_dim, bias=bool(bias))

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, dot_dim={self.dot_dim}, bias={self.bias}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x).relu()


class DPFPFeatureMap(nn.Module):
    """DPFP (Schlag et al. 2021, https://arxiv.org/abs/2102.11174), parameter free.

    ``r = [relu(x), relu(-x)]`` (``2 d``); output ``[r * roll(r, 1), ..., r * roll(r, nu)]`` (``2 nu d``).
    """

    def __init__(self, head_dim: int, nu: int = 4) -> None:
        super().__init__()
        self.nu = nu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = torch.cat([x.relu(), (-x).relu()], dim=-1)
        rolled = torch.cat([r.roll(shifts=j, dims=-1) for j in range(1, self.nu + 1)], dim=-1)
        return torch.cat([r] * self.nu, dim=-1) * rolled


class HadamardFeatureMap(nn.Module):
    """fla's ``feature_map="elementwise_product"``: ``layer1(x) * layer2(x)`` (``d -> d``, with biases)."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.layer1 = nn.Linear(head_dim, head_dim)
        self.layer2 = nn.Linear(head_dim, head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer1(x) * self.layer2(x)


class LearnableOuterProductFeatureMap(nn.Module):
    """Upper triangle of ``layer1(x) layer2(x)^T`` (two bias-free ``d -> feature_dim`` maps).

    ``normalizer = feature_dim ** -0.5`` is kept as an attribute (unused in the forward, as in fla).
    """

    def __init__(self, head_dim: int, feature_dim: int) -> None:
        super().__init__()
        self.layer1 = nn.Linear(head_dim, feature_dim, bias=False)
        self.layer2 = nn.Linear(head_dim, feature_dim, bias=False)
        self.normalizer = feature_dim**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return flatten_diag_outer_product(self.layer1(x), self.layer2(x))


class LearnablePolySketchNonNegativeFeatureMap(nn.Module):
    """Learnable non-negative PolySketch (Kacham et al. 2023, https://arxiv.org/abs/2310.01655), fla's variant.

    ``x <- layer_norm(x; gamma, beta)``; ``x <- sketches1[i](x) * sketches2[i](x) / sqrt(d)`` for the sketch
    layers fla builds (one for degrees 2 and 4, ``log2(degree) - 1`` from 8 on), then the upper triangle of
    ``x x^T`` (non-negative on the diagonal, ``s (s + 1) / 2`` features).

    Args:
        head_dim: ``d``; sketch_size: ``s`` (default ``d``); degree: a power of 2, at least 2.
    """

    def __init__(self, head_dim: int, sketch_size: int | None = None, degree: int | None = 2) -> None:
        super().__init__()
        if not (isinstance(degree, int) and degree >= 2 and is_power_of_2(degree)):
            raise ValueError(f"LearnablePolySketchNonNegativeFeatureMap: degree={degree!r} must be a power of 2, >= 2")
        self.head_dim = head_dim
        self.sketch_size = head_dim if sketch_size is None else sketch_size
        self.degree = degree
        s, extra = self.sketch_size, max(int(math.log2(degree)) - 2, 0)
        self.gamma = nn.Parameter(torch.ones(head_dim))
        self.beta = nn.Parameter(torch.zeros(head_dim))
        for name in ("sketches1", "sketches2"):
            layers = [nn.Linear(head_dim, s, bias=False), *(nn.Linear(s, s, bias=False) for _ in range(extra))]
            setattr(self, name, nn.ModuleList(layers))

    def reset_parameters(self) -> None:
        """``gamma = 1``, ``beta = 0`` (the sketch layers are Linear modules, initialized as such)."""
        nn.init.ones_(self.gamma)
        nn.init.zeros_(self.beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = layer_norm(x, self.gamma, self.beta)
        scale = self.head_dim**-0.5
        x = self.sketches1[0](x) * self.sketches2[0](x) * scale
        for i in range(1, int(math.log2(self.degree)) - 1):
            x = self.sketches1[i](x) * self.sketches2[i](x) * scale
        return flatten_diag_outer_product(x, x)


class TaylorFeatureMap(nn.Module):
    """Based's second-order Taylor map of ``exp(q . k / sqrt(d))`` (Arora et al. 2024, https://arxiv.org/abs/2402.18668).

    ``phi(x) = [1, x / d^(1/4), diag(x x^T) / (sqrt(2) sqrt(d)), triu_1(x x^T) / sqrt(d)]``
    (``1 + d + d (d + 1) / 2`` features), so ``phi(q) . phi(k) = 1 + s + s^2 / 2`` with ``s = q . k / sqrt(d)``.
    """

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.r2 = math.sqrt(2)
        self.rd = math.sqrt(head_dim)
        self.rrd = math.sqrt(self.rd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        off, diag = flatten_diag_outer_product_off1(x, x)
        ones = torch.ones_like(x[..., :1])
        return torch.cat([ones, x / self.rrd, diag / (self.rd * self.r2), off / self.rd], dim=-1)


class RebasedFeatureMap(nn.Module):
    """ReBased (Aksenov et al. 2024, https://arxiv.org/abs/2402.10644): a learnable affine (layer) norm, then the
    quadratic map ``[diag(x x^T) / sqrt(d), triu_1(x x^T) * sqrt(2 / d)]`` (``d (d + 1) / 2`` features), so
    ``phi(q) . phi(k) = (q . k)^2 / d``.

    Args:
        head_dim: ``d``.
        use_gamma, use_beta: learnable scale ``gamma`` / shift ``beta`` ``[d]``.
        normalize: layer-normalize first (with ``gamma`` / ``beta`` as its affine).
    """

    def __init__(
        self, head_dim: int, use_gamma: bool | None = True, use_beta: bool | None = True, normalize: bool | None = True
    ) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.use_gamma, self.use_beta, self.normalize = use_gamma, use_beta, normalize
        if not normalize and not use_gamma:
            raise ValueError(
                f"RebasedFeatureMap: use_gamma={use_gamma}, use_beta={use_beta}, normalize={normalize} is not "
                "supported (without normalize, use_gamma must be true)"
            )
        self.gamma = nn.Parameter(torch.ones(head_dim)) if use_gamma else None
        self.beta = nn.Parameter(torch.zeros(head_dim)) if use_beta else None

    def reset_parameters(self) -> None:
        """``gamma = 1``, ``beta = 0``."""
        if self.gamma is not None:
            nn.init.ones_(self.gamma)
        if self.beta is not None:
            nn.init.zeros_(self.beta)

    def forward(self, x: torch.Tensor, flatten: bool | None = True) -> torch.Tensor:
        """``x [..., d]`` -> ``[..., d (d + 1) / 2]`` (``flatten=False``: the normalized ``x`` only)."""
        if self.normalize and self.use_gamma and self.use_beta:
            x = layer_norm(x, self.gamma, self.beta)
        elif self.normalize:
            x = F.layer_norm(x, (self.head_dim,), self.gamma, self.beta)
        elif self.use_beta:
            x = torch.addcmul(self.beta, x, self.gamma)
        else:
            x = x * self.gamma
        if not flatten:
            return x
        off, diag = flatten_diag_outer_product_off1(x, x)
        return torch.cat([diag * self.head_dim**-0.5, off * (2 / self.head_dim) ** 0.5], dim=-1)


class ReLUFeatureMap(nn.Module):
    """``relu(x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


class SquaredReLUFeatureMap(nn.Module):
    """``relu(x) ** 2``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


class GELUFeatureMap(nn.Module):
    """GELU, tanh approximation (as fla's ``fast_gelu_impl``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


class SwishFeatureMap(nn.Module):
    """``x * sigmoid(x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


class SigmoidFeatureMap(nn.Module):
    """``sigmoid(x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


__all__ = [
    "DPFPFeatureMap",
    "GELUFeatureMap",
    "HadamardFeatureMap",
    "HedgehogFeatureMap",
    "LearnableOuterProductFeatureMap",
    "LearnablePolySketchNonNegativeFeatureMap",
    "RebasedFeatureMap",
    "ReLUFeatureMap",
    "SigmoidFeatureMap",
    "SquaredReLUFeatureMap",
    "SwishFeatureMap",
    "T2RFeatureMap",
    "TaylorFeatureMap",
    "elu_p1",
    "flatten_diag_outer_product",
    "flatten_diag_outer_product_off1",
]
