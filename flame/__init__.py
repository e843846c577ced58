"""flame: a torchtitan-based pretraining framework for fla models."""

__version__ = "0.1.0"
