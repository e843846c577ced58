"""User tools outside the training loop, each a ``python -m flame.tools.<name>`` command.

* :mod:`flame.tools.sample_data`: the offline sample corpus + BPE tokenizer (``--out data/sample``),
  the trainer's default data when nothing is downloaded.
* :mod:`flame.tools.plot_run`: a PNG of a run's metrics (``train.sh`` draws ``<dump_folder>/metrics.png``).
"""
