"""Checkpoint compatibility of the Comba and Gated DeltaProduct models with flash-linear-attention 0.6.0.

The protocol and helpers of ``fla060_linear_compat.py`` (two processes, keys + logits) with these cases::

    PYTHONPATH=$FLA060_PATH python fla060_comba_compat.py save OUT
    PYTHONPATH=<this repo>  python fla060_comba_compat.py load OUT [--require-logits]

On CPU (``TRITON_INTERPRET=1``) both sides run 64 tokens: fla 0.6.0's decoding path (``fused_recurrent_comba``;
``fused_recurrent_gated_delta_rule`` on the interleaved micro-steps), ours likewise.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fla060_linear_compat as protocol  # noqa: E402

BASE = dict(protocol.BASE, head_dim=32)
CASES = {
    "comba": ("comba", dict(BASE)),
    "comba_gva_nogate_hybrid": (
        "comba",
        dict(BASE, num_heads=2, num_v_heads=4, use_output_gate=False, attn=protocol.HYBRID),
    ),
    "gated_deltaproduct_2_gated": (
        "gated_deltaproduct",
        dict(BASE, num_householder=2, use_forget_gate=True, allow_neg_eigval=True),
    ),
    "gated_deltaproduct_3_noconv_tied": (
        "gated_deltaproduct",
        dict(BASE, num_householder=3, use_short_conv=False, fuse_norm=False, tie_word_embeddings=True),
    ),
}
protocol.CASES = CASES  # the protocol's save / load loop over the module's CASES

if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) not in (2, 3) or args[0] not in ("save", "load") or args[2:] not in ([], ["--require-logits"]):
        sys.exit(f"usage: {sys.argv[0]} save OUT_DIR | load OUT_DIR [--require-logits]")
    directory = Path(args[1])
    directory.mkdir(parents=True, exist_ok=True)
    sys.exit(protocol.save(directory) if args[0] == "save" else protocol.load(directory, require_logits=len(args) == 3))
