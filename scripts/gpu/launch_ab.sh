#!/usr/bin/env bash
# Lean Triton launches (fla/utils/launch.py) on the GPU machine: correctness, then A/B host cost and op speed
# with FLA_LEAN_LAUNCH=0 (triton's own launch path) against the default, then dynamo over the wrapped kernels.
# Usage (device tool, .whl carried): bash scripts/gpu/launch_ab.sh   (tables and logs under $OUT)
set -uo pipefail
OUT=${OUT:-/tmp/out}
PYTEST_TIMEOUT=${PYTEST_TIMEOUT:-200} BENCH= bash scripts/gpu/session.sh tests/fla/test_launch.py tests/fla/ops \
    tests/fla/modules -m gpu
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
for lean in 0 1; do
    FLA_LEAN_LAUNCH=$lean timeout 120 python3 -m benchmarks.ops.launch_overhead --out "$OUT/launch_lean$lean.md" \
        2>&1 | tail -14
done
ops=(chunk_gla chunk_simple_gla chunk_linear_attn chunk_retention chunk_delta_rule chunk_gated_delta_rule)
FLA_LEAN_LAUNCH=0 timeout 100 python3 -m benchmarks.ops.bench_chunk --ops "${ops[@]}" --T 2048 \
    --out "$OUT/ops_lean0.md" 2>&1 | tail -14
timeout 150 python3 -m benchmarks.ops.bench_chunk --ops "${ops[@]}" ${OPS_T:---T 2048 8192} \
    --out "$OUT/ops_lean1.md" 2>&1 | tail -20
timeout 150 python3 -m benchmarks.compile_breaks --config configs/gla_340M.json configs/gated_deltanet_340M.json \
    --out "$OUT/compile_breaks.json" 2>&1 | tail -12
