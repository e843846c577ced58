"""Mamba / Samba checkpoints of flash-linear-attention 0.6.0 on CPU (both packages are named ``fla``).

    PYTHONPATH=$FLA060_PATH TRITON_INTERPRET=1 python fla060_ssm_compat.py save OUT   # fla 0.6.0 side
    PYTHONPATH=<this repo>                    python fla060_ssm_compat.py load OUT   # ours: compare

fla 0.6.0 runs its own PyTorch Mamba path on CPU (no mamba_ssm); its Triton RMSNorm, SiLU and SwiGLU cannot
run there, so ``save`` swaps them for the same maths in PyTorch (nothing else of fla 0.6.0 is touched). ``load``
prints one line per case and exits 1 unless every checkpoint loads with no missing / unexpected / mismatched
keys and gives fla 0.6.0's logits.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

CASES = {
    "mamba": dict(residual_in_fp32=True, state_size=12, conv_kernel=3),
    "samba": dict(attn=None, use_bias=True),
}
BASE = dict(hidden_size=64, num_hidden_layers=2, vocab_size=97, fuse_cross_entropy=False, fuse_swiglu=False)


def _torch_kernels_for_fla060() -> None:
    import fla.modules.layernorm as ln

    import fla.modules.activations as act
    import fla.modules.mlp as mlp

    def rms_norm(self, x, residual=None, prenorm=False, residual_in_fp32=False):
        if residual is not None:
            x = residual = x + residual
        y = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return (y.to(x.dtype), residual) if prenorm else y.to(x.dtype)

    act.ACT2FN["silu"] = act.ACT2FN["swish"] = F.silu
    mlp.swiglu = lambda x, y: F.silu(x) * y
    for name in dir(ln):
        obj = getattr(ln, name)
        if isinstance(obj, type) and "RMSNorm" in name:
            obj.forward = rms_norm


def save(out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    _torch_kernels_for_fla060()
    torch.manual_seed(0)
    for name, fields in CASES.items():
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(name, **BASE, **fields)).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)  # move off the constant inits (D = 1, norms = 1)
            x = torch.randint(0, BASE["vocab_size"], (2, 23))
            logits = model(x).logits
        model.save_pretrained(out / name)
        torch.save((x, logits), out / name / "ref.pt")


def load(out: Path) -> int:
    from transformers import AutoModelForCausalLM

    import fla  # noqa: F401

    failed = 0
    for name in CASES:
        model, info = AutoModelForCausalLM.from_pretrained(str(out / name), output_loading_info=True)
        x, ref = torch.load(out / name / "ref.pt")
        with torch.no_grad():
            logits = model.eval()(x).logits
        err = ((logits - ref).norm() / ref.norm()).item()
        problems = {k: v for k, v in info.items() if v}
        ok = not problems and err < 1e-5 and type(model).__module__.startswith("fla.models.")
        failed += not ok
        print(f"{name}: {'ok' if ok else 'FAILED'} relative logits error {err:.2e}, loading problems {problems}")
    return failed


if __name__ == "__main__":
    command, path = sys.argv[1], Path(sys.argv[2])
    if command == "save":
        save(path)
    else:
        sys.exit(1 if load(path) else 0)
