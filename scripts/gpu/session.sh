#!/usr/bin/env bash
# One GPU-machine session (device tool): install the carried wheels, print versions, run the
# test suite on CUDA (gpu-marked tests included) and the benchmarks, and leave logs/tables in
# $OUT. Usage on the device machine (carry .whl, .whl_peer for fla 0.6.0 comparisons, .triton_autotune when a call returned one):
#     bash scripts/gpu/session.sh [pytest paths...]
# Env: BENCH=modules,ops,diag,kprof,launch,train (benchmark groups; empty for none; TRAIN_ROWS / TRAIN_TIMEOUT: see train), NPROC (pytest-xdist workers, default 8:
# Triton compiles dominate test time there), PYTEST_TIMEOUT (s), PYTEST_ARGS (extra pytest args, split
# on spaces: no quoted values; give markers as paths' -m in "$@" instead), PYTEST=0 (no tests),
# FLA_TEST_ONE_CONFIG (default 1: each autotuner compiles one config per key, in turn; 0: all, as in
# training). Each failure's traceback is appended to $OUT/failures.log as it happens, so a run cut off by
# the time limit still explains itself.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
if [ -d .whl_peer ]; then  # fla 0.6.0 lives apart: both packages are named `fla`
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/fla060 .whl_peer/*.whl
    export FLA060_PATH=/tmp/fla060
fi
# Triton's autotune choices persist across calls and machines: fla 0.6.0 (and any kernel autotuned with
# cache_results) writes them as <hash>/<kernel>.autotune.json in the Triton cache; they come back under
# $OUT/triton_autotune (at the end, and after each training row, so a cut call keeps its progress) and, carried
# as .triton_autotune, are reused here: fla's first training step then compiles one config per kernel instead of
# benchmarking all of them for minutes (the key holds triton's version, the target arch and the kernel source).
export TRITON_CACHE_DIR=/tmp/triton_cache
mkdir -p "$TRITON_CACHE_DIR"
[ -d .triton_autotune ] && cp -r .triton_autotune/. "$TRITON_CACHE_DIR"/
save_autotune() {
    (cd "$TRITON_CACHE_DIR" && find . -name '*.autotune.json' | tar -cf - -T -) | \
        (mkdir -p "$OUT/triton_autotune" && tar -xf - -C "$OUT/triton_autotune")
}
trap save_autotune EXIT
python3 - <<'PY' | tee "$OUT/versions.txt"
import torch, triton, transformers, platform
print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| triton", triton.__version__,
      "| transformers", transformers.__version__, "| python", platform.python_version())
PY
paths=("$@")
[ ${#paths[@]} -eq 0 ] && paths=(tests/fla tests/test_project.py)
rc=0
if [ "${PYTEST:-1}" != 0 ]; then  # PYTEST=0: benchmarks only
    FLA_TEST_ONE_CONFIG=${FLA_TEST_ONE_CONFIG:-1} FLAME_FAILURE_LOG="$OUT/failures.log" timeout ${PYTEST_TIMEOUT:-420} python3 -m pytest -q --maxfail=25 -p no:cacheprovider -n ${NPROC:-8} --durations=15 "${paths[@]}" ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/pytest.log" | tail -60
    rc=${PIPESTATUS[0]}
fi
IFS=, read -ra groups <<< "${BENCH-modules}"
for g in "${groups[@]}"; do
    case "$g" in
        modules) timeout 300 python3 -m benchmarks.modules.run_all --out "$OUT/modules.md" 2>&1 | tail -60 ;;
        ops) timeout 400 python3 -m benchmarks.ops.bench_chunk ${FLA060_PATH:+--fla-path $FLA060_PATH} --out "$OUT/ops_chunk.md" 2>&1 | tail -40 ;;
        diag)  # host time of an op call (cProfile) and where compile breaks the 340M blocks
            timeout 120 python3 -m benchmarks.ops.profile_host --out "$OUT/profile_host.txt" 2>&1 | grep "^## "
            timeout 240 python3 -m benchmarks.compile_breaks --config configs/{gla,gated_deltanet,transformer}_340M.json \
                --out "$OUT/compile_breaks.json" 2>&1 | tail -40 ;;
        kprof)  # per-kernel device time at 8k: where simple GLA and the gated delta rule lose to their ungated twins
            timeout 240 python3 -m benchmarks.ops.profile_chunk --ops chunk_linear_attn chunk_retention chunk_simple_gla \
                chunk_delta_rule chunk_gated_delta_rule --T 8192 --tables --out "$OUT/profile_chunk.md" 2>&1 | tail -40 ;;
        launch) timeout 150 python3 -m benchmarks.ops.launch_overhead --out "$OUT/launch_overhead.md" 2>&1 | tail -25 ;;
        train)  # #8: GLA-340M B8 x 2048 rows, one process each (first: the old 1-rank FSDP path, whose first
                # process measured slower in earlier calls), then the other families. TRAIN_ROWS=name,... picks rows.
            # TRAIN_PROFILE=1: each row also writes a kernel table + trace under $OUT/profile.
            tt=(python3 benchmarks/train_throughput.py --batch-size 8 --seq-len 2048 --steps 8 --warmup 3
                ${TRAIN_PROFILE:+--profile $OUT/profile})
            lce="--set model.overrides=fuse_linear_cross_entropy=true"
            fsdp="--set parallelism.one_rank_fsdp=true"
            cg="--set training.compile_mode=reduce-overhead"
            rows=("gla-fsdp|gla_340M|$lce $fsdp" "gla-plain|gla_340M|$lce" "gla-plain-compile|gla_340M|--compile $lce"
                  "gla-plain-cudagraphs|gla_340M|--compile $lce $cg" "gdn-plain-cudagraphs|gated_deltanet_340M|--compile $lce $cg"
                  "gla-fsdp-compile|gla_340M|--compile $lce $fsdp" "gla-eager|gla_340M|--impl eager"
                  "gdn-plain-compile|gated_deltanet_340M|--compile $lce"
                  "transformer-plain-compile|transformer_340M|--compile $lce"
                  "gdn-eager|gated_deltanet_340M|--impl eager" "transformer-eager|transformer_340M|--impl eager"
                  "gla-fla060|gla_340M|--impl none --fla-path ${FLA060_PATH:-/tmp/fla060}"
                  "transformer-fla060|transformer_340M|--impl none --fla-path ${FLA060_PATH:-/tmp/fla060}")
            for row in "${rows[@]}"; do
                IFS='|' read -r name cfg extra <<< "$row"
                [ -n "${TRAIN_ROWS:-}" ] && [[ ",$TRAIN_ROWS," != *",$name,"* ]] && continue
                read -ra extra <<< "$extra"
                [[ " ${extra[*]} " == *" --impl "* ]] || extra=(--impl flame "${extra[@]}")
                echo "== train $name" >> "$OUT/train.log"
                timeout "${TRAIN_TIMEOUT:-150}" "${tt[@]}" --config "configs/$cfg.json" "${extra[@]}" --json /tmp/train_row.json \
                    >> "$OUT/train.log" 2>&1
                python3 -c "import json,sys; [print(sys.argv[1], json.dumps(r)) for r in json.load(open('/tmp/train_row.json'))]" \
                    "$name" >> "$OUT/train_rows.txt" 2>/dev/null || echo "$name: no row (see train.log)" >> "$OUT/train_rows.txt"
                rm -f /tmp/train_row.json
                save_autotune
            done
            cat "$OUT/train_rows.txt" ;;
        "") ;;
        *) echo "unknown bench group $g" ;;
    esac
done
exit "$rc"
