"""Stage by stage through the (gated) delta rule's chunked backward on one device: which stage gives non-finite or
wrong values, and whether it depends on the Triton config (``num_warps`` x ``num_stages``) or differs run to run.

For a NaN that only the GPU shows (the interpreter runs one config, one program at a time), this runs the backward's
stages one by one on the same inputs (:func:`fla.ops.common.chunk_delta.chunk_delta_rule_bwd`'s order: WY forward,
states, intra-chunk ``dv``, the reverse state walk, ``dq / dk / dw / dG``, the WY backward) and prints

* the non-finite count of every intermediate, and whether the state stages give the same bits when run again;
* for the two stages that combine everything (``chunk_bwd_dqkwg``, ``chunk_delta_wy_bwd``), each of their autotune
  configs alone and ``num_stages = 1`` variants, ``--reps`` runs each: non-finite counts, whether the runs agree
  bit for bit, and ``dq / dk`` against a float32 PyTorch evaluation of the same formula from the same stage inputs.

Inputs follow Gated DeltaProduct's micro-step layout with ``--householder n`` (``n = 1``: the gated delta rule):
token ``t``'s ``n`` keys, values and betas at micro-steps ``t n .. t n + n - 1``, its query and output gradient at
the last one (zeros before), its log decay at the first (zeros after); ``beta`` in ``(0, --beta-max)``, L2-normalized
q and k, ``g = logsigmoid(randn)``.

    python scripts/gpu/delta_stage_check.py                        # GDP-340M's layer on an H100: B=2, T=2048, n=2
    python scripts/gpu/delta_stage_check.py --householder 1 --T 4096
    TRITON_INTERPRET=1 python scripts/gpu/delta_stage_check.py --device cpu --dtype float32 --B 1 --T 32 --K 32 --V 64
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("FLA_LEAN_LAUNCH", "0")  # every launch through triton's autotuner: its configs are swapped here

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402

import fla.ops.common.chunk_bwd as chunk_bwd_module  # noqa: E402
import fla.ops.common.wy_bwd as wy_bwd_module  # noqa: E402
from fla.ops.common.chunk import chunk_layout  # noqa: E402
from fla.ops.common.chunk_bwd import chunk_bwd_dqkwg, chunk_bwd_dv  # noqa: E402
from fla.ops.common.chunk_delta import chunk_delta_rule_fwd  # noqa: E402
from fla.ops.common.chunk_delta_h import chunk_delta_bwd_dh, chunk_delta_fwd_h  # noqa: E402
from fla.ops.common.tuning import autotuner_of, only_configs  # noqa: E402
from fla.ops.common.wy import chunk_delta_wy_fwd  # noqa: E402
from fla.ops.common.wy_bwd import chunk_delta_wy_bwd  # noqa: E402
from fla.ops.gated_delta_product.interleave import micro_gates, micro_queries  # noqa: E402


def nonfinite(t: torch.Tensor | None) -> int:
    return -1 if t is None else int((~torch.isfinite(t)).sum())


def micro_step_inputs(B, T, H, K, V, n, beta_max, dtype, device, seed=0):
    """``q, k, v, g, beta, do`` over the ``T * n`` micro-steps (see the module docstring)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    q = F.normalize(torch.randn(B, T, H, K, device=device, generator=gen), dim=-1)
    k = F.normalize(torch.randn(B, T * n, H, K, device=device, generator=gen), dim=-1)
    v = torch.randn(B, T * n, H, V, device=device, generator=gen)
    g = F.logsigmoid(torch.randn(B, T, H, device=device, generator=gen))
    beta = beta_max * torch.rand(B, T * n, H, device=device, generator=gen)
    do = torch.randn(B, T, H, V, device=device, generator=gen)
    q, do = micro_queries(q, n), micro_queries(do, n)
    return [t.to(dtype).contiguous() for t in (q, k, v)] + [micro_gates(g, n).contiguous(), beta.to(dtype),
                                                             do.to(dtype).contiguous()]  # fmt: skip


def reference_dq_dk(q, k, v_new, h, do, dh, G, scale, BT):
    """float32 ``dq, dk`` of :func:`chunk_bwd_dqkwg` (scalar gate; T a multiple of ``BT``) from its inputs."""
    B, T, H, K = q.shape
    NT = T // BT
    q, k, v_new, do = (x.float().view(B, NT, BT, H, -1) for x in (q, k, v_new, do))
    G = G.float().view(B, NT, BT, H)
    dq = torch.einsum("bnihv,bnhkv->bnihk", do, h.float()) * G.exp()[..., None] * scale
    dk = torch.einsum("bnihv,bnhkv->bnihk", v_new, dh.float()) * (G[:, :, -1:] - G).exp()[..., None]
    causal = torch.ones(BT, BT, dtype=torch.bool, device=q.device).tril()
    Gh = G.permute(0, 1, 3, 2)  # [B, NT, H, BT]
    decay = (Gh[..., :, None] - Gh[..., None, :]).masked_fill(~causal, float("-inf")).exp()
    dA = torch.einsum("bnihv,bnjhv->bnhij", do, v_new) * scale * decay
    dq = dq + torch.einsum("bnhij,bnjhk->bnihk", dA, k)
    dk = dk + torch.einsum("bnhij,bnihk->bnjhk", dA, q)
    return dq.reshape(B, T, H, K), dk.reshape(B, T, H, K)


def rel(out: torch.Tensor, ref: torch.Tensor) -> str:
    if nonfinite(out):
        return "non-finite"
    return f"{((out.float() - ref).norm() / ref.norm()).item():.2e}"


def config_variants(kernel) -> list[tuple[str, list[triton.Config]]]:
    """The kernel's autotune list, each config alone, and one-stage configs for its warp counts."""
    configs = list(autotuner_of(kernel).configs)
    variants = [("autotuned", configs)] + [(f"w{c.num_warps}s{c.num_stages}", [c]) for c in configs]
    warps = sorted({c.num_warps for c in configs})
    return variants + [(f"w{w}s1", [triton.Config({}, num_warps=w, num_stages=1)]) for w in warps]


def with_configs(kernel, configs, fn):
    """``fn()`` with ``kernel``'s autotuner limited to ``configs``, and the config that ran."""
    with only_configs(kernel, configs) as tuner:
        return fn(), tuner.best_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in (("B", 2), ("T", 2048), ("H", 6), ("K", 128), ("V", 256), ("householder", 2), ("reps", 3)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--beta-max", type=float, default=2.0)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    q, k, v, g, beta, do = micro_step_inputs(
        args.B, args.T, args.H, args.K, args.V, args.householder, args.beta_max, dtype, args.device
    )
    scale = args.K**-0.5
    layout = chunk_layout(q, None)
    if q.shape[1] % layout.chunk_size:
        raise SystemExit(f"--T x --householder = {q.shape[1]} must be a multiple of the chunk ({layout.chunk_size})")
    o, _, Tm, G, _ = chunk_delta_rule_fwd(q, k, v, beta, g, scale, None, False, layout, return_scores=True)
    Tm, w, u = chunk_delta_wy_fwd(k, v, beta, layout, g=G, Tm=Tm)
    h, v_new, _ = chunk_delta_fwd_h(k, w, u, layout, g=G)
    dv_local = chunk_bwd_dv(q, k, do, None, layout, scale, g=G)
    dh, _, dv_new = chunk_delta_bwd_dh(q, k, w, do, dv_local, layout, scale, g=G)
    dh_again, _, dv_new_again = chunk_delta_bwd_dh(q, k, w, do, dv_local, layout, scale, g=G)
    h_again, v_new_again, _ = chunk_delta_fwd_h(k, w, u, layout, g=G)
    sync()
    stages = dict(o=o, Tm=Tm, w=w, u=u, h=h, v_new=v_new, dv_local=dv_local, dh=dh, dv_new=dv_new)
    print(f"{vars(args)}\nnon-finite: " + ", ".join(f"{n} {nonfinite(t)}" for n, t in stages.items()), flush=True)
    same = dict(h=torch.equal(h, h_again), v_new=torch.equal(v_new, v_new_again), dh=torch.equal(dh, dh_again),
                dv_new=torch.equal(dv_new, dv_new_again))  # fmt: skip
    print("run again, same bits: " + ", ".join(f"{n} {s}" for n, s in same.items()), flush=True)

    ref_dq, ref_dk = reference_dq_dk(q, k, v_new, h, do, dh, G, scale, layout.chunk_size)
    for name, configs in config_variants(chunk_bwd_module.chunk_dqkg_bwd_kernel):

        def dqkwg():
            outs = [chunk_bwd_dqkwg(q, k, v_new, h, do, dh, dv_new, layout, scale, g=G, want_dg=True)]
            outs += [chunk_bwd_dqkwg(q, k, v_new, h, do, dh, dv_new, layout, scale, g=G, want_dg=True)
                     for _ in range(args.reps - 1)]  # fmt: skip
            sync()
            return outs

        outs, best = with_configs(chunk_bwd_module.chunk_dqkg_bwd_kernel, configs, dqkwg)
        agree = all(torch.equal(a, b) for out in outs[1:] for a, b in zip(outs[0][:3], out[:3]))
        print(f"chunk_bwd_dqkwg {name:9s} dq {rel(outs[0][0], ref_dq)} dk {rel(outs[0][1], ref_dk)} | non-finite dk "
              f"{[nonfinite(out[1]) for out in outs]} dw {nonfinite(outs[0][2])} dG {nonfinite(outs[0][3])} | runs "
              f"agree {agree} | ran w{best.num_warps}s{best.num_stages}", flush=True)  # fmt: skip

    dq, dk_in, dw, dG = chunk_bwd_dqkwg(q, k, v_new, h, do, dh, dv_new, layout, scale, g=G, want_dg=True)
    for name, configs in config_variants(wy_bwd_module.chunk_delta_wy_bwd_kernel):

        def wy():
            outs = [chunk_delta_wy_bwd(k, v, beta, Tm, dw, dv_new, dk_in, layout, g=G, dG=dG) for _ in range(args.reps)]
            sync()
            return outs

        outs, best = with_configs(wy_bwd_module.chunk_delta_wy_bwd_kernel, configs, wy)
        agree = all(torch.equal(a, b) for out in outs[1:] for a, b in zip(outs[0], out))
        print(f"chunk_delta_wy_bwd {name:9s} non-finite dk {[nonfinite(out[0]) for out in outs]} dv "
              f"{nonfinite(outs[0][1])} dbeta {nonfinite(outs[0][2])} dg {nonfinite(outs[0][3])} | runs agree {agree} "
              f"| ran w{best.num_warps}s{best.num_stages}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
