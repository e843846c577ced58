#!/usr/bin/env bash
# One GPU-machine session (device tool): install the carried wheels, print versions, run the
# test suite on CUDA (gpu-marked tests included) and the benchmarks, and leave logs/tables in
# $OUT. Usage on the device machine (carry .whl, and .whl_peer for fla 0.6.0 comparisons):
#     bash scripts/gpu/session.sh [pytest paths...]
# Env: BENCH=modules,ops,train (benchmark groups; empty for none), NPROC (pytest-xdist workers, default 8:
# Triton compiles dominate test time there), PYTEST_TIMEOUT (s), PYTEST_ARGS (extra pytest args, split
# on spaces: no quoted values; give markers as paths' -m in "$@" instead). Each failure's traceback is
# appended to $OUT/failures.log as it happens, so a run cut off by the time limit still explains itself.
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
python3 - <<'PY' | tee "$OUT/versions.txt"
import torch, triton, transformers, platform
print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| triton", triton.__version__,
      "| transformers", transformers.__version__, "| python", platform.python_version())
PY
paths=("$@")
[ ${#paths[@]} -eq 0 ] && paths=(tests/fla tests/test_project.py)
FLAME_FAILURE_LOG="$OUT/failures.log" timeout ${PYTEST_TIMEOUT:-420} python3 -m pytest -q --maxfail=25 -p no:cacheprovider -n ${NPROC:-8} --durations=15 "${paths[@]}" ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/pytest.log" | tail -60
rc=${PIPESTATUS[0]}
IFS=, read -ra groups <<< "${BENCH-modules}"
for g in "${groups[@]}"; do
    case "$g" in
        modules) timeout 300 python3 -m benchmarks.modules.run_all --out "$OUT/modules.md" 2>&1 | tail -60 ;;
        ops) timeout 400 python3 -m benchmarks.ops.bench_chunk ${FLA060_PATH:+--fla-path $FLA060_PATH} --out "$OUT/ops_chunk.md" 2>&1 | tail -40 ;;
        train)  # #8 (~6 min): GLA-340M twice in separate processes (the first process of a call measured slower), then
                # compile + linear CE, then the other families; one table, one row per run
            tt=(python3 benchmarks/train_throughput.py --batch-size 8 --seq-len 2048 --steps 8 --warmup 3)
            lce=(--set model.overrides=fuse_linear_cross_entropy=true)
            for run in "gla first:--impl flame" "gla again:--impl flame" "gla compile+lce:--impl flame --compile ${lce[*]}" \
                       "gla eager:--impl eager" "gdn:--impl flame ${lce[*]}" "transformer:--impl flame ${lce[*]}"; do
                name=${run%%:*}; read -ra extra <<< "${run#*:}"
                case "$name" in gdn) cfg=gated_deltanet_340M ;; transformer) cfg=transformer_340M ;; *) cfg=gla_340M ;; esac
                echo "== train $name" >> "$OUT/train.log"
                timeout 150 "${tt[@]}" --config "configs/$cfg.json" "${extra[@]}" --json "/tmp/train_row.json" >> "$OUT/train.log" 2>&1
                python3 -c "import json,sys; [print(sys.argv[1], json.dumps(r)) for r in json.load(open('/tmp/train_row.json'))]" \
                    "$name" >> "$OUT/train_rows.txt" 2>/dev/null
                rm -f /tmp/train_row.json
            done
            cat "$OUT/train_rows.txt" ;;
        "") ;;
        *) echo "unknown bench group $g" ;;
    esac
done
exit "$rc"
