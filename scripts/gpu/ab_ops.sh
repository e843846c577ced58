#!/usr/bin/env bash
# On the GPU machine (carry .whl and .ab_base from scripts/gpu/ab_prepare.sh): the chunk-op GPU tests of this
# tree, then benchmarks.ops.bench_chunk for the base tree and this one in the same call (same device, same
# warm machine), then a per-kernel profile of this tree. Tables and logs go to $OUT.
# Env: OPS (bench_chunk --ops), T (sequence lengths), TESTS (pytest paths; empty: none), PROFILE=0 (no profile),
# MODULES (benchmarks.modules.run_all --only names, A/B the same way; empty: none), FLA_OPS (with .whl_peer carried:
# bench_chunk --ops for this tree and fla 0.6.0 side by side, after the A/B; empty: none), MIDS (more archived trees
# from `ab_prepare.sh REV .ab_NAME`, carried too, benchmarked between base and this tree: a bisection in one call),
# ACCURACY (benchmarks.ops.accuracy --ops for every tree, bf16 at ACC_SHAPE (B,H,K,V; default 2,8,128,128: the
# float64 vector-gate reference holds [B, H, T/16, 16, 16, K] decays) / ACC_T: relative errors of every output and
# gradient against float64, acc_<name>.md; empty: none).
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
[ -d .ab_base ] || { echo "no .ab_base: run scripts/gpu/ab_prepare.sh REV here and carry .ab_base"; exit 1; }
OPS=${OPS:-decode chunk_simple_gla chunk_retention chunk_linear_attn chunk_delta_rule chunk_gated_delta_rule}
T=${T:-2048 8192}
TESTS=${TESTS-tests/fla/ops tests/fla/test_launch.py}
python3 -c "import torch,triton;print(torch.cuda.get_device_name(), torch.__version__, triton.__version__)" | tee "$OUT/device.txt"
echo "base $(cat .ab_base/REV)" | tee -a "$OUT/device.txt"
if [ -n "$TESTS" ]; then
    # each failure's traceback goes to failures.log as it happens (a run cut by the timeout still names them)
    FLA_TEST_ONE_CONFIG=${FLA_TEST_ONE_CONFIG:-1} FLAME_FAILURE_LOG="$OUT/failures.log" timeout ${TEST_TIMEOUT:-150} \
        python3 -m pytest -q -p no:cacheprovider -n 8 --maxfail=10 $TESTS 2>&1 | tee "$OUT/pytest.log" | tail -4
    [ -f "$OUT/failures.log" ] && grep -h "^=====" "$OUT/failures.log" && grep -h "^E " "$OUT/failures.log" | head -20
fi
# the archived trees that were carried (files named by the part after .ab_), then this one (".", files named "new")
trees=""
for tree in .ab_base ${MIDS:-}; do
    if [ -f "$tree/REV" ]; then trees="$trees $tree"; else echo "no $tree: ab_prepare.sh REV $tree, then carry it"; fi
done
trees="$trees ."
tree_name() { if [ "$1" = . ]; then echo new; else echo "${1#.ab_}"; fi; }
for tree in $trees; do
    name=$(tree_name "$tree")
    (cd "$tree" && PYTHONPATH=/tmp/site:$PWD timeout ${BENCH_TIMEOUT:-120} python3 -m benchmarks.ops.bench_chunk \
        --ops $OPS --T $T --out "$OUT/ops_$name.md" > "$OUT/ops_$name.log" 2>&1)
    rc=$?; rev=$(cat "$tree/REV" 2>/dev/null); echo "$name${rev:+ $rev} rc=$rc"
done
for tree in $trees; do
    name=$(tree_name "$tree"); grep -h "\[bench_chunk\]" "$OUT/ops_$name.log" 2>/dev/null | sed "s/^/$name /"
done
if [ -n "${ACCURACY:-}" ]; then
    for tree in $trees; do
        name=$(tree_name "$tree")
        (cd "$tree" && PYTHONPATH=/tmp/site:$PWD timeout ${ACC_TIMEOUT:-120} python3 -m benchmarks.ops.accuracy \
            --ops $ACCURACY --T ${ACC_T:-8192} --shape ${ACC_SHAPE:-2,8,128,128} --dtype bfloat16 \
            --out "$OUT/acc_$name.md" > /dev/null 2>&1); echo "accuracy $name rc=$?"; cat "$OUT/acc_$name.md" 2>/dev/null
    done
fi
if [ -n "${MODULES:-}" ]; then
    (cd .ab_base && PYTHONPATH=/tmp/site:$PWD timeout 90 python3 -m benchmarks.modules.run_all --only $MODULES \
        --out "$OUT/modules_base.md" > "$OUT/modules_base.log" 2>&1); echo "modules base rc=$?"
    timeout 90 python3 -m benchmarks.modules.run_all --only $MODULES --out "$OUT/modules_new.md" > "$OUT/modules_new.log" 2>&1
    echo "modules new rc=$?"; cat "$OUT/modules_base.md" "$OUT/modules_new.md"
fi
if [ -n "${FLA_OPS:-}" ]; then
    [ -d .whl_peer ] || { echo "FLA_OPS needs .whl_peer carried"; exit 1; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/fla060 .whl_peer/*.whl
    timeout ${FLA_TIMEOUT:-200} python3 -m benchmarks.ops.bench_chunk --ops $FLA_OPS --T $T --fla-path /tmp/fla060 \
        --out "$OUT/ops_fla.md" > "$OUT/ops_fla.log" 2>&1; echo "fla rc=$?"; grep -h "\[bench_chunk\]" "$OUT/ops_fla.log"
fi
if [ "${PROFILE:-1}" != 0 ]; then
    timeout 100 python3 -m benchmarks.ops.profile_chunk --ops chunk_linear_attn chunk_simple_gla chunk_delta_rule \
        chunk_gated_delta_rule --T 8192 --tables --out "$OUT/profile_chunk.md" > "$OUT/kprof.log" 2>&1; echo "kprof rc=$?"
fi
# the device tool brings back at most 8 files from $OUT: pack them all into one (a run cut by its limit never gets
# here and leaves the files as they are)
tar -czf /tmp/ab_ops.tar.gz -C "$OUT" . && find "$OUT" -mindepth 1 -delete && mv /tmp/ab_ops.tar.gz "$OUT/" \
    && echo "packed: $OUT/ab_ops.tar.gz"
