"""Shared chunk-pipeline stages reused across op families.

* :mod:`.cumsum` chunk-local gate cumsum (and its reverse, the gate backward)
* :mod:`.chunk_h` inter-chunk state recurrence (``h`` forward, ``dh`` backward)
* :mod:`.chunk_o` intra-chunk output ``o = q h + causal(q k^T * decay) v``
* :mod:`.chunk_intra_gk` vector-gate intra-chunk scores with sub-chunking (and backward)
* :mod:`.chunk_bwd` ``dv`` and ``dq, dk, dg`` stages
* :mod:`.chunk` the assembled forward / backward; :mod:`.fused_recurrent` the decode kernel
* :mod:`.chunk_torch` the vectorized PyTorch (CPU) form; :mod:`.recurrent_torch` the token-by-token
  PyTorch reference; :mod:`.inputs` argument checks; :mod:`.layout`, :mod:`.indexing` bookkeeping
"""
