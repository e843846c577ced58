"""Tokenizer loading and batched document encoding with BOS/EOS separators."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flame.paths import looks_local, missing


def build_tokenizer(path_or_name: str):
    """Load a Hugging Face tokenizer from a local folder (or a hub name when one is reachable).

    Raises ``FileNotFoundError`` (one line) when nothing loads: a missing folder, a folder without
    tokenizer files, or a name the hub does not answer for.
    """
    from transformers import AutoTokenizer

    path = Path(path_or_name).expanduser()
    hint = " (the offline sample tokenizer is written by: python -m flame.tools.sample_data --out data/sample)"
    if path.is_dir():
        try:
            return AutoTokenizer.from_pretrained(str(path))
        except Exception as e:  # noqa: BLE001 - any failure here means "no usable tokenizer"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise FileNotFoundError(f"tokenizer not found: folder {path} has no loadable tokenizer ({first})") from e
    if path.exists():
        raise FileNotFoundError(f"tokenizer not found: {path_or_name} is not a tokenizer folder{hint}")
    if looks_local(str(path_or_name)):  # a local path with a typo: fail now, not after the hub's retries
        why = missing(str(path_or_name))
        raise FileNotFoundError(f"tokenizer not found: {path_or_name} is not a tokenizer folder ({why}){hint}")
    try:
        return AutoTokenizer.from_pretrained(path_or_name)
    except Exception as e:  # noqa: BLE001
        raise FileNotFoundError(
            f"tokenizer not found: '{path_or_name}' is not a local folder and the Hugging Face hub did not "
            f"provide it ({type(e).__name__}){hint}"
        ) from e


class TextEncoder:
    """Batched text -> token ids, each document wrapped as ``[bos] + ids + [eos]`` per the flags.

    ``add_bos=None`` follows the tokenizer's ``add_bos_token`` attribute (False when absent).
    """

    def __init__(self, tokenizer, add_bos: bool | None = None, add_eos: bool = True):
        if add_bos is None:
            add_bos = bool(getattr(tokenizer, "add_bos_token", False))
        if add_bos and tokenizer.bos_token_id is None:
            raise ValueError(f"data.add_bos is on but the tokenizer ({type(tokenizer).__name__}) has no BOS token")
        if add_eos and tokenizer.eos_token_id is None:
            raise ValueError(f"data.add_eos is on but the tokenizer ({type(tokenizer).__name__}) has no EOS token")
        if not (add_bos or add_eos):
            raise ValueError("data.add_bos and data.add_eos are both off: documents would run into each other")
        self.tokenizer = tokenizer
        self.prefix = [tokenizer.bos_token_id] if add_bos else []
        self.suffix = [tokenizer.eos_token_id] if add_eos else []
        self.bos_id = tokenizer.bos_token_id if add_bos else None
        self.eos_id = tokenizer.eos_token_id if add_eos else None
        # The Rust tokenizer directly: no per-call Python overhead, no max-length warnings.
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._encode_batch = getattr(backend, "encode_batch_fast", None) or getattr(backend, "encode_batch", None)

    def _ids(self, texts: list[str]) -> list[list[int]]:
        if self._encode_batch is not None:
            return [e.ids for e in self._encode_batch(texts, add_special_tokens=False)]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        """Encode ``texts`` (empty ones are dropped) -> one int64 array ``[len]`` per document."""
        texts = [t for t in texts if t]
        if not texts:
            return []
        return [np.array(self.prefix + ids + self.suffix, dtype=np.int64) for ids in self._ids(texts)]
