"""fla: efficient token mixers (linear attention family) in PyTorch + Triton."""

__version__ = "0.1.0"
