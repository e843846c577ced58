"""Evaluation of trained models: perplexity over any flame data source, lm-evaluation-harness tasks.

``python -m flame.eval.perplexity --model <HF dir> --dataset <path or hub name>`` and
``python -m flame.eval.harness --model <HF dir> --tasks <names>`` (needs ``pip install 'flame[eval]'``).
Nothing is imported here so that ``flame.eval.perplexity`` works without lm-evaluation-harness.
"""
