"""rotary_embedding / RotaryEmbedding vs a float64 complex-rotation reference (both backends)."""

import pytest
import torch

from fla.modules.rotary import RotaryEmbedding, rotary_embedding
from tests.harness import BACKENDS, DEVICE, assert_close, assert_grads_close, to_reference, tol, using


def rotary_reference(x, theta, interleaved):
    """Multiply each channel pair, read as a complex number, by exp(i * theta).

    theta: angles broadcastable to ``[B, T, 1, R]`` (float64); channels past ``2R`` pass through.
    """
    R = theta.shape[-1]
    rot, tail = x[..., : 2 * R], x[..., 2 * R :]
    if interleaved:
        z = torch.complex(rot[..., 0::2], rot[..., 1::2])
    else:
        z = torch.complex(rot[..., :R], rot[..., R:])
    z = z * torch.polar(torch.ones_like(theta), theta)
    out = torch.stack([z.real, z.imag], -1).flatten(-2) if interleaved else torch.cat([z.real, z.imag], -1)
    return torch.cat([out, tail], -1)


def positions(T, offsets=0, cu_seqlens=None):
    """[B or 1, T] positions written out explicitly, sequence by sequence."""
    if cu_seqlens is None:
        offsets = torch.as_tensor(offsets).reshape(-1, 1)
        return torch.arange(T)[None, :] + offsets
    offsets = torch.as_tensor(offsets).expand(len(cu_seqlens) - 1)
    pos = [torch.arange(e - s) + o for s, e, o in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist(), offsets)]
    return torch.cat(pos)[None, :]


def tables(S, R, base=10000.0):
    """float64 angles [S, R] and the float32 cos/sin tables built from them."""
    inv_freq = base ** (-torch.arange(R, dtype=torch.float64) * 2 / (2 * R))
    theta = torch.arange(S, dtype=torch.float64)[:, None] * inv_freq
    return theta, theta.cos().float().to(DEVICE), theta.sin().float().to(DEVICE)


def check_functional(backend, x, R, interleaved, offsets=0, cu_seqlens=None, scale=1.0):
    B, T = x.shape[:2]
    theta, cos, sin = tables(T + 40, R)
    pos = positions(T, offsets.cpu() if isinstance(offsets, torch.Tensor) else offsets, cu_seqlens)
    ref_x = to_reference(x)
    with using(backend):
        y = rotary_embedding(
            x, cos, sin, interleaved, offsets, cu_seqlens.to(DEVICE) if cu_seqlens is not None else None
        )
    y_ref = rotary_reference(ref_x, theta[pos][:, :, None].to(DEVICE), interleaved)
    assert y.dtype == x.dtype
    assert_close("y", y_ref, y, tol(x.dtype, scale))
    assert_grads_close({"x": x}, {"x": ref_x}, y, y_ref, torch.randn_like(y_ref), tol(x.dtype, scale))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("D, R", [(60, 30), (100, 16)])  # full and partial rotary dim
def test_rotary_forward_backward(backend, dtype, interleaved, D, R):
    x = torch.randn(2, 63, 3, D, device=DEVICE, dtype=dtype, requires_grad=True)
    check_functional(backend, x, R, interleaved, offsets=5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_per_sequence_offsets(backend, interleaved):
    x = torch.randn(3, 63, 2, 60, device=DEVICE, requires_grad=True)
    check_functional(backend, x, 30, interleaved, offsets=torch.tensor([0, 7, 33], device=DEVICE))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("offsets", [0, torch.tensor([4, 0, 1, 9])])
def test_rotary_varlen_positions_restart(backend, offsets):
    cu_seqlens = torch.tensor([0, 1, 20, 40, 63], dtype=torch.int32)  # includes a length-1 sequence
    x = torch.randn(1, 63, 3, 100, device=DEVICE, requires_grad=True)
    offsets = offsets.to(DEVICE) if isinstance(offsets, torch.Tensor) else offsets
    check_functional(backend, x, 32, False, offsets=offsets, cu_seqlens=cu_seqlens)


def module_angles(module, pos):
    """Angles as the module forms them: position * inv_freq rounded to float32 (then exact cos/sin)."""
    return (pos.to(DEVICE).float()[..., None] * module.inv_freq.float()).double()[:, :, None]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_module_q_k(backend, interleaved):
    B, T, D = 2, 63, 100
    module = RotaryEmbedding(64, interleaved=interleaved, device=DEVICE)  # rotary dim 64 < head dim 100
    q = torch.randn(B, T, 4, D, device=DEVICE, requires_grad=True)
    k = torch.randn(B, T, 1, D, device=DEVICE, requires_grad=True)
    offsets = torch.tensor([3, 11], device=DEVICE)
    ref_q, ref_k = to_reference(q), to_reference(k)
    with using(backend):
        q_rot, k_rot = module(q, k, seqlen_offset=offsets)
    theta = module_angles(module, positions(T, offsets.cpu()))
    q_ref, k_ref = rotary_reference(ref_q, theta, interleaved), rotary_reference(ref_k, theta, interleaved)
    assert_close("q", q_ref, q_rot, tol(torch.float32))
    assert_close("k", k_ref, k_rot, tol(torch.float32))
    grad = (torch.randn_like(q_ref), torch.randn_like(k_ref))
    assert_grads_close({"q": q, "k": k}, {"q": ref_q, "k": ref_k}, (q_rot, k_rot), (q_ref, k_ref), grad, 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotary_module_decoding_equals_full(backend):
    module = RotaryEmbedding(32, device=DEVICE)
    q = torch.randn(2, 20, 2, 32, device=DEVICE)
    k = torch.randn(2, 20, 2, 32, device=DEVICE)
    with using(backend):
        q_full, k_full = module(q, k)
        module._cos_cached = None  # grow the tables again, step by step
        steps = [module(q[:, t : t + 1], k[:, t : t + 1], seqlen_offset=t) for t in range(20)]
    assert module._cos_cached.shape[0] >= 20
    assert_close("q", q_full, torch.cat([s[0] for s in steps], 1), 1e-6)
    assert_close("k", k_full, torch.cat([s[1] for s in steps], 1), 1e-6)


def test_rotary_module_has_no_state_and_survives_meta_init():
    module = RotaryEmbedding(64, base=500.0)
    assert list(module.state_dict()) == [] and list(module.parameters()) == []
    with torch.device("meta"):
        meta = RotaryEmbedding(64, base=500.0)
    meta.to_empty(device="cpu")
    meta.reset_parameters()
    assert torch.equal(meta.inv_freq, module.inv_freq)
    expected = 500.0 ** (-torch.arange(0, 64, 2, dtype=torch.float64) / 64)
    assert_close("inv_freq", expected, module.inv_freq, 1e-7)


def test_errors_name_argument_and_shapes():
    q = torch.randn(2, 8, 4, 64)
    k = torch.randn(2, 8, 2, 64)
    with pytest.raises(ValueError, match="rotary dim must be a positive even number, got dim=33"):
        RotaryEmbedding(33)
    module = RotaryEmbedding(32)
    with pytest.raises(ValueError, match=r"q has shape \[2, 8, 256\], expected 4-D"):
        module(q.flatten(2), k)
    with pytest.raises(ValueError, match=r"k has shape \[2, 8, 2, 32\], expected \[B, T, Hk, D\] matching q's"):
        module(q, k[..., :32])
    with pytest.raises(ValueError, match=r"rotary dim 128 exceeds the head dim of q \[2, 8, 4, 64\]"):
        RotaryEmbedding(128)(q, k)
    cos = torch.randn(16, 40)
    with pytest.raises(ValueError, match=r"rotary dim 2 \* 40 \(cos has shape \[16, 40\]\) exceeds x's head dim 64"):
        rotary_embedding(q, cos, cos)
    with pytest.raises(ValueError, match=r"cos has shape \[16, 16\] but sin has shape \[16, 8\]"):
        rotary_embedding(q, cos[:, :16], cos[:, :8])
    with pytest.raises(ValueError, match=r"seqlen_offsets has shape \[3\], expected \[2\]"):
        rotary_embedding(q, cos[:, :16], cos[:, :16], seqlen_offsets=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"positions up to 19 need cos/sin with > 16 rows"):
        rotary_embedding(q, cos[:, :16], cos[:, :16], seqlen_offsets=12)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_gpu_real_size(dtype, interleaved):
    B, T, H, D = 8, 4096, 16, 128
    module = RotaryEmbedding(D, interleaved=interleaved, device=DEVICE)
    q = torch.randn(B, T, H, D, device=DEVICE, dtype=dtype, requires_grad=True)
    k = torch.randn(B, T, 4, D, device=DEVICE, dtype=dtype, requires_grad=True)
    ref_q, ref_k = to_reference(q), to_reference(k)
    q_rot, k_rot = module(q, k)
    theta = module_angles(module, positions(T))
    q_ref, k_ref = rotary_reference(ref_q, theta, interleaved), rotary_reference(ref_k, theta, interleaved)
    assert_close("q", q_ref, q_rot, tol(dtype))
    assert_close("k", k_ref, k_rot, tol(dtype))
    grad = (torch.randn_like(q_ref), torch.randn_like(k_ref))
    assert_grads_close({"q": q, "k": k}, {"q": ref_q, "k": ref_k}, (q_rot, k_rot), (q_ref, k_ref), grad, tol(dtype))
