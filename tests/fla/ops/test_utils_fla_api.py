"""fla 0.6.0's names in fla.ops.utils: index helpers, pack/unpack, cumsums, pooling, solve_tril and tensor ops,
each against a reference written here from its definition (float64 loops)."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from fla.ops.utils import (
    addmm,
    chunk_global_cumsum,
    chunk_global_cumsum_scalar,
    chunk_global_cumsum_vector,
    chunk_local_cumsum,
    chunk_local_cumsum_scalar,
    chunk_local_cumsum_vector,
    get_max_num_splits,
    logsumexp_fwd,
    matmul,
    mean_pooling,
    pack_sequence,
    prepare_block_csr,
    prepare_chunk_indices,
    prepare_chunk_indices_static,
    prepare_cu_seqlens_from_lens,
    prepare_cu_seqlens_from_mask,
    prepare_lens_from_mask,
    prepare_token_indices,
    sinkhorn,
    softmax_bwd,
    softmax_fwd,
    softplus,
    solve_tril,
    unpack_sequence,
)
from tests.harness import BACKENDS, DEVICE, assert_close, to_reference, tol, using

LENS = [5, 1, 0, 13, 1]  # length-1 and length-0 sequences


def cu_of(lens: list[int], dtype=torch.int32) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=dtype)


def bounds(lens: list[int]) -> list[tuple[int, int]]:
    cu = cu_of(lens).tolist()
    return list(zip(cu[:-1], cu[1:]))


# index helpers -----------------------------------------------------------------------------------------------


def test_mask_helpers_left_and_right_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    assert prepare_lens_from_mask(mask).tolist() == [3, 2, 0, 5]
    assert prepare_lens_from_mask(mask.bool()).dtype == torch.int32
    cu = prepare_cu_seqlens_from_mask(mask)
    assert cu.tolist() == [0, 3, 5, 5, 10] and cu.dtype == torch.int32
    assert prepare_cu_seqlens_from_mask(mask.bool(), torch.int64).dtype == torch.int64
    lens = torch.tensor([4, 1, 0, 2])
    assert prepare_cu_seqlens_from_lens(lens).tolist() == [0, 4, 5, 5, 7]
    assert prepare_cu_seqlens_from_lens(lens, dtype=None).dtype == torch.int64


def test_mask_helpers_reject_bad_input():
    with pytest.raises(ValueError, match="mask must be a 2-D"):
        prepare_lens_from_mask(torch.ones(2, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be a 2-D"):
        prepare_cu_seqlens_from_mask(torch.ones(2, 3))  # float
    with pytest.raises(ValueError, match="lens must be non-negative"):
        prepare_cu_seqlens_from_lens(torch.tensor([2, -1]))
    with pytest.raises(ValueError, match="lens must be a 1-D integer"):
        prepare_cu_seqlens_from_lens(torch.tensor([[2, 1]]))


def test_token_indices_and_max_splits():
    cu = cu_of(LENS, torch.int64)
    want = [[n, p] for n, length in enumerate(LENS) for p in range(length)]
    got = prepare_token_indices(cu)
    assert got.tolist() == want and got.dtype == torch.int64
    assert get_max_num_splits(cu, 4) == 4 and get_max_num_splits(cu, 16) == 1
    assert get_max_num_splits(cu, 4, cu_seqlens_cpu=cu.clone()) == 4
    assert get_max_num_splits(cu, 4, cu_seqlens_cpu=cu.clone()) == 4  # another host copy: no tensor comparison
    assert prepare_token_indices(cu, cu.clone()).tolist() == prepare_token_indices(cu, cu.clone()).tolist() == want
    with pytest.raises(ValueError, match="non-decreasing"):
        prepare_token_indices(torch.tensor([0, 5, 3, 7]))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_chunk_indices_static(dtype):
    lens = [5, 1, 0, 13, 1, 0, 0]  # zero-length tail: padding up to a fixed N
    cu = cu_of(lens, dtype)
    real = [[n, c] for n, length in enumerate(lens) for c in range(-(-length // 4))]
    idx, off = prepare_chunk_indices_static(cu, 4, len(real) + 3)
    assert idx.tolist() == real + [[-1, 0]] * 3 and idx.dtype == dtype and off.dtype == dtype
    counts = [-(-length // 4) for length in lens]
    assert off.tolist() == [sum(counts[:i]) for i in range(len(lens) + 1)]
    with pytest.raises(ValueError, match="cu_seqlens must be 1-D"):
        prepare_chunk_indices_static(cu.float(), 4, 8)


def csr_groups(indices: torch.Tensor, offsets: torch.Tensor) -> list[list[int]]:
    """Each block's queries, sorted (their order within a block is free)."""
    off = offsets.tolist()
    return [sorted(indices[a:b].tolist()) for a, b in zip(off[:-1], off[1:])]


def test_block_csr_dense_example():
    # B = H = 1, block_size 1: query t selects blocks <= t; -1 pads
    sel = torch.tensor([[0, -1], [0, 1], [1, 2], [0, 3]]).view(1, 4, 1, 2)
    indices, offsets = prepare_block_csr(sel, 2, None, None, num_blocks=4, block_size=1)
    assert offsets.tolist() == [0, 3, 5, 6, 7] and offsets.dtype == indices.dtype == torch.int32
    assert csr_groups(indices, offsets) == [[0, 1, 3], [1, 2], [2], [3]] and indices.numel() == 8


def test_block_csr_against_a_loop():
    B, T, H, S, bs, nb = 2, 9, 2, 3, 2, 5
    sel = torch.randint(-1, nb + 1, (B, T, H, S))  # includes -1 and out-of-range ids
    counts = torch.randint(0, S + 1, (B, T, H))
    indices, offsets = prepare_block_csr(sel, counts, None, None, nb, bs)
    want = [[] for _ in range(B * H * nb)]
    for b, t, h, s in torch.cartesian_prod(*(torch.arange(n) for n in (B, T, H, S))).tolist():
        i = int(sel[b, t, h, s])
        if s < counts[b, t, h] and 0 <= i < nb and i * bs <= t:
            want[(b * H + h) * nb + i].append(b * T + t)
    assert csr_groups(indices, offsets) == want
    # varlen: block ids start at each sequence's first block; the causal check reads the global token index
    lens = [5, 1, 6]
    cu = cu_of(lens)
    chunks = prepare_chunk_indices(cu, bs)
    first = [0, 3, 4]  # blocks before each sequence (ceil(len / bs))
    sel = torch.tensor(
        [[0, 1], [2, -1], [1, 0], [0, 2], [2, 1], [0, 0], [1, 2], [0, 1], [2, 0], [1, 1], [0, 2], [2, 2]]
    )
    sel = sel.view(1, 12, 1, 2)
    indices, offsets = prepare_block_csr(sel, 2, cu, chunks, num_blocks=3, block_size=bs)
    seq = [n for n, length in enumerate(lens) for _ in range(length)]
    want = [[] for _ in range(chunks.shape[0])]
    for t in range(12):
        for s in range(2):
            i = int(sel[0, t, 0, s])
            if 0 <= i < 3 and i * bs <= t:
                want[first[seq[t]] + i].append(t)
    assert csr_groups(indices, offsets) == want


# pack / unpack -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["left", "right"])
def test_pack_unpack_round_trip(side):
    lens = [3, 1, 0, 5]
    S, cu = 6, cu_of(lens)
    x = torch.randn(len(lens), S, 2, 3, dtype=torch.float64, requires_grad=True)
    keep = torch.zeros(len(lens), S, dtype=torch.bool)
    for n, length in enumerate(lens):
        if side == "left":
            keep[n, S - length :] = True
        else:
            keep[n, :length] = True
    packed = pack_sequence(x, cu, padding_side=side)
    assert torch.equal(packed, x[keep])  # row-major order of the kept tokens == sequence order
    back = unpack_sequence(packed, cu, padding_side=side, desired_shape=x.shape)
    assert torch.equal(back, x * keep[..., None, None])
    (dx,) = torch.autograd.grad(back.sum(), x)
    assert torch.equal(dx, keep[..., None, None].double().expand_as(x))
    tight = unpack_sequence(packed, cu, padding_side=side)  # default width: the longest sequence
    assert tight.shape == (4, 5, 2, 3) and torch.equal(pack_sequence(tight, cu, side), packed)


def test_pack_rejects_bad_input():
    cu = cu_of([3, 2])
    with pytest.raises(ValueError, match="padding_side"):
        pack_sequence(torch.randn(2, 4), cu, padding_side="middle")
    with pytest.raises(ValueError, match="more than the padded width 2"):
        pack_sequence(torch.randn(2, 2), cu)
    with pytest.raises(ValueError, match="expected \\[N, S, ...\\] with N = 2"):
        pack_sequence(torch.randn(3, 4), cu)
    with pytest.raises(ValueError, match="desired_shape"):
        unpack_sequence(torch.randn(5, 3), cu, desired_shape=(2, 4, 7))


# cumsums -----------------------------------------------------------------------------------------------------


def ref_cumsum(g: torch.Tensor, spans: list[tuple[int, int]], reverse: bool, scale: float | None) -> torch.Tensor:
    """float64 loop over ``(start, end)`` spans of the flattened ``[B*T, ...]`` tokens."""
    flat = g.double().cpu().flatten(0, 1)
    out = torch.zeros_like(flat)
    for a, b in spans:
        for t in range(a, b):
            out[t] = flat[t:b].sum(0) if reverse else flat[a : t + 1].sum(0)
    return (out * (1.0 if scale is None else scale)).view(g.shape)


def chunk_spans(seq_spans: list[tuple[int, int]], bt: int) -> list[tuple[int, int]]:
    return [(s, min(s + bt, b)) for a, b in seq_spans for s in range(a, b, bt)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("varlen", [False, True])
@pytest.mark.parametrize("vector", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_chunk_local_cumsum(backend, varlen, vector, reverse):
    bt, H, D = 4, 3, 5
    if varlen:
        cu, seq_spans, B, T = cu_of(LENS), bounds(LENS), 1, sum(LENS)
    else:
        B, T, cu = 2, 11, None
        seq_spans = [(b * T, (b + 1) * T) for b in range(B)]
    g = torch.randn(B, T, H, *((D,) if vector else ()), device=DEVICE)
    cu = None if cu is None else cu.to(DEVICE)
    scale = 0.5 if reverse else None
    with using(backend):
        out = chunk_local_cumsum(g, bt, reverse=reverse, scale=scale, cu_seqlens=cu)
        fn = chunk_local_cumsum_vector if vector else chunk_local_cumsum_scalar
        out2 = fn(g, bt, reverse=reverse, scale=scale, cu_seqlens=cu, output_dtype=None, head_first=False)
    ref = ref_cumsum(g, chunk_spans(seq_spans, bt), reverse, scale)
    assert out.dtype == torch.float32 and out2.dtype == g.dtype
    assert_close("cumsum", ref, out, tol(torch.float32))
    assert_close("cumsum (form)", ref, out2, tol(torch.float32))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("varlen", [False, True])
@pytest.mark.parametrize("vector", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_chunk_global_cumsum(backend, varlen, vector, reverse):
    H, D = 2, 3
    if varlen:
        cu, spans, B, T = cu_of(LENS), bounds(LENS), 1, sum(LENS)
    else:
        B, T, cu = 2, 9, None
        spans = [(b * T, (b + 1) * T) for b in range(B)]
    s = torch.randn(B, T, H, *((D,) if vector else ()), device=DEVICE)
    cu = None if cu is None else cu.to(DEVICE)
    scale = 2.0 if reverse else None
    with using(backend):
        out = chunk_global_cumsum(s, reverse=reverse, cu_seqlens=cu, scale=scale)
        fn = chunk_global_cumsum_vector if vector else chunk_global_cumsum_scalar
        out2 = fn(s, reverse, cu, scale, output_dtype=torch.float16)
    ref = ref_cumsum(s, spans, reverse, scale)
    assert out.dtype == torch.float32 and out2.dtype == torch.float16
    assert_close("cumsum", ref, out, tol(torch.float32))
    assert_close("cumsum (fp16)", ref, out2, tol(torch.float16))


def test_cumsum_torch_path_is_differentiable_in_float64():
    g = torch.randn(1, 7, 2, dtype=torch.float64, requires_grad=True)
    out = chunk_local_cumsum(g, 4, output_dtype=None)
    assert out.dtype == torch.float64
    (dg,) = torch.autograd.grad(out.sum(), g)
    # d/dg_t of the sum of a forward chunk-local cumsum: tokens from t to its chunk's end
    want = torch.tensor([4, 3, 2, 1, 3, 2, 1], dtype=torch.float64)[None, :, None].expand_as(g)
    assert torch.equal(dg, want)


def test_cumsum_rejects_bad_input():
    g = torch.randn(1, 8, 2)
    with pytest.raises(ValueError, match="chunk_size must be a power of 2, got 6"):
        chunk_local_cumsum(g, 6)
    with pytest.raises(ValueError, match="expected \\[B, T, H\\]"):
        chunk_local_cumsum_scalar(torch.randn(1, 8, 2, 3), 4)
    with pytest.raises(ValueError, match="s has shape \\[8, 2\\]"):
        chunk_global_cumsum(torch.randn(8, 2))
    with pytest.raises(ValueError, match="head_first"):
        chunk_local_cumsum(g, 4, head_first=True)
    with pytest.raises(ValueError, match="non-decreasing"):
        chunk_global_cumsum(g, cu_seqlens=torch.tensor([0, 5, 3, 8]))
    with pytest.raises(ValueError, match="batch size must be 1"):
        chunk_local_cumsum(torch.randn(2, 4, 2), 4, cu_seqlens=torch.tensor([0, 4]))


# pooling and the triangular solve ----------------------------------------------------------------------------


@pytest.mark.parametrize("varlen", [False, True])
def test_mean_pooling(varlen):
    bt, H, D = 4, 2, 3
    if varlen:
        x, cu, spans = torch.randn(1, sum(LENS), H, D, requires_grad=True), cu_of(LENS), bounds(LENS)
    else:
        x, cu = torch.randn(2, 10, H, D, requires_grad=True), None
        spans = [(0, 10), (10, 20)]
    ref_x = to_reference(x)
    out = mean_pooling(x, bt, cu_seqlens=cu)
    chunks = chunk_spans(spans, bt)
    flat = ref_x.flatten(0, 1)
    ref = torch.stack([flat[a:b].mean(0) for a, b in chunks]).view(1 if varlen else 2, -1, H, D)
    assert_close("mean", ref, out, tol(torch.float32))
    dy = torch.randn_like(out)
    (dx,) = torch.autograd.grad(out, x, dy)
    (ref_dx,) = torch.autograd.grad(ref, ref_x, dy.double())
    assert_close("dx", ref_dx, dx, tol(torch.float32))


@pytest.mark.parametrize("bt", [16, 32])
@pytest.mark.parametrize("varlen", [False, True])
def test_solve_tril(bt, varlen):
    H = 2
    lens = [bt + 3, 1, 2 * bt] if varlen else None
    B, T = (1, sum(lens)) if varlen else (2, bt + 5)
    A = torch.randn(B, T, H, bt) * 0.3
    cu = cu_of(lens) if varlen else None
    out = solve_tril(A, cu_seqlens=cu)
    spans = chunk_spans(bounds(lens) if varlen else [(b * T, (b + 1) * T) for b in range(B)], bt)
    flat, ref = A.double().flatten(0, 1), torch.zeros(B * T, H, bt, dtype=torch.float64)
    for a, b in spans:  # each chunk: invert I + (strictly lower part of its leading n x n block), per head
        n = b - a
        M = torch.eye(n, dtype=torch.float64) + flat[a:b, :, :n].permute(1, 0, 2).tril(-1)
        ref[a:b, :, :n] = torch.linalg.inv(M).permute(1, 0, 2)
    assert out.dtype == torch.float32
    assert_close("Ai", ref.view(B, T, H, bt), out, tol(torch.float32, 10))
    assert solve_tril(A.half(), cu_seqlens=cu, output_dtype=None).dtype == torch.float16
    with pytest.raises(ValueError, match="BT in \\(16, 32, 64\\)"):
        solve_tril(torch.randn(1, 8, 2, 8))


# tensor ops --------------------------------------------------------------------------------------------------


def test_logsumexp_softmax():
    x = torch.randn(3, 5, 37)
    ref = x.double()
    assert_close("lse", (ref * 0.5).exp().sum(-1).log(), logsumexp_fwd(x, scale=0.5), tol(torch.float32))
    assert logsumexp_fwd(x).dtype == torch.float32 and logsumexp_fwd(x, dtype=torch.float16).dtype == torch.float16
    p_ref = ref.exp() / ref.exp().sum(-1, keepdim=True)
    p = softmax_fwd(x.half())
    assert p.dtype == torch.float32 and softmax_fwd(x.half(), dtype=None).dtype == torch.float16
    assert_close("softmax", p_ref, p, tol(torch.float16))
    # softmax_bwd against autograd of a float64 softmax
    xr = ref.clone().requires_grad_()
    dp = torch.randn_like(x)
    (ds_ref,) = torch.autograd.grad(xr.softmax(-1), xr, dp.double())
    assert_close("ds", ds_ref, softmax_bwd(p_ref.float(), dp), tol(torch.float32))
    with pytest.raises(ValueError, match="expected the same"):
        softmax_bwd(p, dp[..., :3])


@pytest.mark.parametrize("activation", ["", "relu", "leaky_relu", "sigmoid", "tanh"])
def test_matmul(activation):
    a, b = torch.randn(2, 7, 13), torch.randn(13, 5)
    c = a.double() @ b.double()
    act = {
        "": c,
        "relu": c.clamp_min(0),
        "leaky_relu": torch.where(c >= 0, c, 0.01 * c),
        "sigmoid": 1 / (1 + (-c).exp()),
        "tanh": (c.exp() - (-c).exp()) / (c.exp() + (-c).exp()),
    }[activation]
    assert_close("c", act, matmul(a, b, activation), tol(torch.float32))
    assert_close("c 2-D", act[0], matmul(a[0], b, activation), tol(torch.float32))
    assert matmul(a.half(), b.half()).dtype == torch.float16


def test_addmm():
    a, b = torch.randn(2, 7, 13), torch.randn(13, 5)
    x1, x2 = torch.randn(5), torch.randn(7, 5)
    c = a.double() @ b.double()
    assert_close("x [N]", c + x1.double(), addmm(x1, a, b), tol(torch.float32))
    alpha, beta = torch.tensor(0.5), torch.tensor(-2.0)
    assert_close("x [M, N]", 0.5 * c - 2 * x2.double(), addmm(x2, a, b, alpha, beta), tol(torch.float32))
    assert_close("2-D a", 3 * c[1] + x2.double(), addmm(x2, a[1], b, alpha=3.0), tol(torch.float32))
    with pytest.raises(ValueError, match="x has shape \\[7\\]"):
        addmm(torch.randn(7), a, b)
    with pytest.raises(ValueError, match="expected a \\[\\(B,\\) M, K\\]"):
        matmul(a, b.T)
    with pytest.raises(ValueError, match="activation"):
        matmul(a, b, "gelu")


def test_sinkhorn():
    logits = torch.randn(3, 4, 4, requires_grad=True)
    ref_l = to_reference(logits)
    x = ref_l
    for _ in range(5):  # columns then rows, in probability space
        x = x.exp()
        x = (x / x.sum(-2, keepdim=True)).log()
        x = x.exp()
        x = (x / x.sum(-1, keepdim=True)).log()
    ref = x.exp()
    out = sinkhorn(logits, num_iters=5)
    assert out.dtype == torch.float32
    assert_close("P", ref, out, tol(torch.float32))
    assert torch.allclose(out.sum(-1), torch.ones(3, 4), atol=1e-5)
    dy = torch.randn_like(out)
    (dl,) = torch.autograd.grad(out, logits, dy)
    (ref_dl,) = torch.autograd.grad(ref, ref_l, dy.double())
    assert_close("dlogits", ref_dl, dl, tol(torch.float32, 10))
    with pytest.raises(ValueError, match="expected \\[..., N, N\\]"):
        sinkhorn(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="num_iters must be >= 1"):
        sinkhorn(torch.randn(2, 3, 3), num_iters=0)


@triton.jit
def _softplus_kernel(x, y, N, BN: tl.constexpr):
    o = tl.arange(0, BN)
    m = o < N
    tl.store(y + o, softplus(tl.load(x + o, mask=m)), mask=m)


def test_softplus_device_function():
    x = torch.tensor([-30.0, -2.0, 0.0, 0.5, 3.0, 19.0, 21.0, 80.0], device=DEVICE)
    y = torch.full_like(x, float("nan"))
    _softplus_kernel[(1,)](x, y, x.numel(), BN=8)  # the interpreter on CPU (tests/conftest.py)
    assert_close("softplus", torch.nn.functional.softplus(x.double()), y, tol(torch.float32))
