"""flame: a torchtitan-based pretraining framework for fla models."""

import os

# Triton autotune results cached on disk (keyed by the kernel's source, the Triton version, the device
# and the tuning key): a relaunch skips re-benchmarking every kernel (~30 s per launch on an H200) and a
# resumed run launches the kernel configs the interrupted run used, so its losses can match bitwise.
# Read when a kernel is decorated, so this must run before ``fla.ops`` is imported; "0" turns it off.
os.environ.setdefault("TRITON_CACHE_AUTOTUNING", "1")

__version__ = "0.1.0"
