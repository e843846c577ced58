"""A Llama whose loss is NaN on chosen forward calls (``FLAME_TEST_NAN_CALLS="2,3"``, 1-based).

Imported with ``--model.custom_module tests.flame.dist.nan_llama``; registers model_type
``nan_llama`` with transformers' Auto classes.
"""

import os

from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM


class NanLlamaConfig(LlamaConfig):
    model_type = "nan_llama"


class NanLlamaForCausalLM(LlamaForCausalLM):
    config_class = NanLlamaConfig
    calls = 0

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        NanLlamaForCausalLM.calls += 1
        nan_calls = {int(c) for c in os.environ.get("FLAME_TEST_NAN_CALLS", "").split(",") if c}
        if NanLlamaForCausalLM.calls in nan_calls:
            out.loss = out.loss * float("nan")
        return out


AutoConfig.register("nan_llama", NanLlamaConfig)
AutoModelForCausalLM.register(NanLlamaConfig, NanLlamaForCausalLM)
