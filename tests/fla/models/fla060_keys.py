"""Print the state-dict keys and shapes fla 0.6.0 gives for some configs (run with fla 0.6.0 on PYTHONPATH).

    PYTHONPATH=$FLA060_PATH python fla060_keys.py '[["gla", {...config fields...}], ...]'

prints one JSON list: per case ``{key: shape}`` of fla 0.6.0's ``AutoModelForCausalLM.from_config``,
built on the meta device (nothing runs). fla 0.6.0's softmax ``Attention`` refuses to be built
without flash-attn (nor does its MLA), so for those a placeholder stands in for ``flash_attn_func``: it is
only checked at construction, and the layer's parameters are fla 0.6.0's own.
"""

from __future__ import annotations

import json
import sys

import torch


def main(cases: list) -> list[dict[str, list[int]]]:
    from transformers import AutoConfig, AutoModelForCausalLM

    import fla
    import fla.layers.attn as fla_attn

    if getattr(fla, "__version__", None) != "0.6.0":
        raise SystemExit(f"expected flash-linear-attention 0.6.0, imported fla {fla.__version__} from {fla.__file__}")
    if fla_attn.flash_attn_func is None:
        fla_attn.flash_attn_func = object()  # construction-time check only; nothing is run
    import fla.layers.mla as fla_mla  # MLA makes the same construction-time check

    if fla_mla.flash_attn_func is None:
        fla_mla.flash_attn_func = object()
    out = []
    for model_type, fields in cases:
        config = AutoConfig.for_model(model_type, **fields)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        out.append({k: list(v.shape) for k, v in model.state_dict().items()})
    return out


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
