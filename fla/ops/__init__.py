"""Token-mixing ops: one folder per op family (chunk, fused_recurrent, naive)."""
