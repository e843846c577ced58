"""Shared chunk-pipeline stages reused across op families (``README.md`` has the maths and the layout).

GLA family (gated linear attention: gla, simple_gla, retention, linear_attn, and its kin):

* :mod:`.cumsum` chunk-local gate cumsum (and its reverse, the gate backward)
* :mod:`.chunk_h` inter-chunk state recurrence (``h`` forward, ``dh`` backward)
* :mod:`.chunk_o` intra-chunk output ``o = q h + causal(q k^T * decay) v``
* :mod:`.chunk_intra_gk` vector-gate intra-chunk scores with sub-chunking (and backward)
* :mod:`.chunk_bwd` ``dv`` and ``dq, dk, dg`` stages
* :mod:`.chunk` the assembled forward / backward, the family's autograd Function and op body
  (``chunk_gated``); :mod:`.fused_recurrent` the decode kernel and op body (``fused_recurrent_gated``)
* :mod:`.chunk_gv` a value-side (column) gate ``gv``: the ``gv`` branches of the stages above assembled, plus its
  ``dv, dgv`` kernel (``chunk_value_gated``, GSA's first pass)

Delta-rule family (delta_rule, gated_delta_rule, and its kin):

* :mod:`.wy` the beta-scaled ``k k^T`` scores, the triangular solve and ``w, u``; :mod:`.wy_bwd` its backward
* :mod:`.chunk_delta_h` the delta state recurrence (``h, v_new`` forward, ``dh, dv_new`` backward)
* :mod:`.chunk_delta` the assembled forward / backward, the autograd Function and op body (``chunk_delta``);
  :mod:`.fused_recurrent_delta` the decode kernel and op body (``fused_recurrent_delta``); :mod:`.l2norm`

fla 0.6.0's internal names for code that imports them: :mod:`.fused_chunk` (``fused_chunk``: simple GLA),
:mod:`.gate` (``fused_beta_sigmoid``), :mod:`.chunk_scaled_dot_kkt` (``chunk_scaled_dot_kkt_fwd``).

Both: :mod:`.chunk_torch` the vectorized PyTorch (CPU) forms; :mod:`.recurrent_torch` the token-by-token
PyTorch references; :mod:`.inputs` argument checks and input preparation; :mod:`.layout`, :mod:`.indexing`
bookkeeping; :mod:`.tuning` launch settings.
"""
