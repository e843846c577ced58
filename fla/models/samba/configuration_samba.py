"""SambaConfig: Samba models (Mamba blocks + sliding-window attention), field-compatible with fla 0.6.0."""

from __future__ import annotations

from fla.layers.mamba import DT_INITS, check_mamba_sizes, mamba_dt_rank
from fla.models.config_utils import FLAConfig, check_choice
from fla.models.mamba.configuration_mamba import inner_size

DEFAULT_ATTN = {
    "layers": (1, 3, 5, 7, 9, 11, 13, 15, 17),
    "num_heads": 18,
    "num_kv_heads": 18,
    "qkv_bias": False,
    "window_size": 2048,
    "rope_theta": 10000.0,
}
"""fla 0.6.0's default ``attn``: every odd layer, cut to ``num_hidden_layers``."""

_UNSET = object()


class SambaConfig(FLAConfig):
    """Config of :class:`~fla.models.samba.SambaForCausalLM` (``model_type = "samba"``).

    fla 0.6.0's fields and defaults: the Mamba mixer's ``state_size``, ``expand`` (``intermediate_size =
    int(expand * hidden_size)``, the mixer's width, unless given), ``conv_kernel``, ``use_bias``,
    ``use_conv_bias``, ``time_step_rank`` (``"auto"`` = ``ceil(hidden_size / 16)``, stored resolved),
    ``time_step_scale`` / ``_min`` / ``_max`` / ``_init_scheme`` / ``time_step_floor`` (the step-size init);
    the shared ones (``hidden_ratio`` / ``hidden_act`` of the SwiGLU MLP, ``attn`` for the sliding-window
    attention layers: by default fla's, every odd layer with 18 heads and a 2048-token window).
    ``residual_in_fp32`` and ``use_conv_bias`` are stored but, as in fla, not read (the mixer's convolution always
    has a bias); ``rescale_prenorm_residual`` scales ``out_proj`` at init.
    """

    model_type = "samba"

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """As :meth:`PreTrainedConfig.from_dict`; a config.json that older fla wrote for a model shallower than
        18 layers holds the full default ``attn`` (layers up to 17): it is cut to the depth, as fla 0.6.0 does."""
        attn = config_dict.get("attn")
        if (
            "transformers_version" in config_dict
            and isinstance(attn, dict)
            and attn.keys() == DEFAULT_ATTN.keys()
            and all(tuple(v) == DEFAULT_ATTN[k] if k == "layers" else v == DEFAULT_ATTN[k] for k, v in attn.items())
        ):
            depth = config_dict.get("num_hidden_layers", 18)
            config_dict = {**config_dict, "attn": {**attn, "layers": [i for i in attn["layers"] if i < depth]}}
        return super().from_dict(config_dict, **kwargs)

    def __init__(
        self,
        *,
        state_size: int = 16,
        expand: int = 2,
        conv_kernel: int = 4,
        use_bias: bool = False,
        use_conv_bias: bool = True,
        residual_in_fp32: bool = False,
        time_step_rank: str | int = "auto",
        time_step_scale: float = 1.0,
        time_step_min: float = 0.001,
        time_step_max: float = 0.1,
        time_step_init_scheme: str = "random",
        time_step_floor: float = 1e-4,
        rescale_prenorm_residual: bool = False,
        hidden_size: int = 2304,
        num_hidden_layers: int = 18,
        norm_eps: float = 1e-5,
        pad_token_id: int | None = 0,
        intermediate_size: int | None = None,
        attn=_UNSET,
        **kwargs,
    ):
        args = {k: v for k, v in locals().items() if k != "attn"}
        self.set_fields(args)
        self.time_step_rank = mamba_dt_rank(hidden_size, time_step_rank)
        if attn is _UNSET:
            attn = {**DEFAULT_ATTN, "layers": [i for i in DEFAULT_ATTN["layers"] if i < num_hidden_layers]}
        super().__init__(
            hidden_size=hidden_size,
            num_hidden_layers=num_hidden_layers,
            norm_eps=norm_eps,
            pad_token_id=pad_token_id,
            intermediate_size=inner_size(self, expand, intermediate_size),
            attn=attn,
            **kwargs,
        )

    def check_fields(self) -> None:
        """The shared checks (the ``attn`` spec too), then the Mamba mixer's sizes and its dt init scheme."""
        super().check_fields()
        check_mamba_sizes(type(self).__name__, self.state_size, self.conv_kernel, self.intermediate_size, "silu")
        check_choice(self, "time_step_init_scheme", DT_INITS)


__all__ = ["DEFAULT_ATTN", "SambaConfig"]
