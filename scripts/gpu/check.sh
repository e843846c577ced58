#!/usr/bin/env bash
# The GPU check a maintainer runs on a CUDA machine (kernel changes, a release, a new torch/triton):
# dependencies, versions, the test suite on CUDA, the standard benchmarks; logs and tables under $OUT.
#
#   bash scripts/gpu/check.sh [pytest paths...]     in the repository root on the GPU machine
#   bash scripts/gpu/check.sh --wheels [--fla]      on a machine with network: fill .whl/ (and .whl_peer/)
#
# Dependencies: where `pip install -e '.[dev]'` works, do that first. A GPU machine without network that has
# torch + triton (tested: torch 2.11, triton 3.6, Python 3.12, transformers installed) gets the rest from .whl/:
# `--wheels` downloads them (Python 3.12 manylinux wheels: torchtitan, torchdata, tomli, tyro, datasets, ...,
# pytest-xdist), `--fla` adds flash-linear-attention 0.6.0 to .whl_peer/ (the reference for the fla 0.6.0 checkpoint
# tests and the benchmarks' fla column; it runs in its own process: both packages are named `fla`). Copy the
# repository with .whl/ (and .whl_peer/) to the GPU machine; this script installs them under /tmp and puts them on
# PYTHONPATH.
#
# Output ($OUT, default outputs/gpu_check): versions.txt (device, versions, commit), pytest.log (a line per test as it
# finishes: a run cut by PYTEST_TIMEOUT still says which passed), failures.log
# (each failure's traceback as it happens), and one table per benchmark: modules.md, ops_chunk.md, train_<model>.md
# (train_summary.md: one line per model, its row or its exception; train_<model>.log: its output).
# The tables carry their command; benchmarks/results/ keeps the current ones (add the device, versions and commit).
#
# Environment:
#   PYTEST=0             no tests; default paths: tests/fla tests/test_project.py (the fla tests build their tensors
#                        on CUDA there, so every test exercises the compiled kernels; `gpu`-marked ones add real sizes)
#   PYTEST_ARGS          extra pytest arguments (split on spaces), e.g. "-m gpu"
#   NPROC                pytest-xdist workers (default 8: Triton compiles dominate the test time)
#   PYTEST_TIMEOUT       seconds for the test run (default 1800)
#   FLA_TEST_ONE_CONFIG  1 (default): each Triton autotuner compiles one of its configs per key, in turn, instead
#                        of all; 0: full autotuning, as in training
#   BENCH                benchmark groups, comma-separated (default modules,ops,train; empty: none):
#                          modules  python -m benchmarks.modules.run_all (norms, gated norm, conv, rotary, MLP, CE)
#                          ops      python -m benchmarks.ops.bench_chunk (chunk ops fwd / fwd+bwd, decode; fla 0.6.0
#                                   and SDPA beside them when .whl_peer/ was carried)
#                          launch   python -m benchmarks.ops.launch_overhead (host cost of an op call)
#                          train    benchmarks/train_throughput.py, B=8 x 2048: flame (compile + fused linear CE)
#                                   and the eager HF loop, one process per model of TRAIN_MODELS
#   TRAIN_MODELS         default "gla_340M gated_deltanet_340M transformer_340M" (configs/<name>.json)
#   TRAIN_IMPL           the train rows' implementations (default flame,eager; e.g. flame for the family sweep)
#   TRAIN_WARM           N > 0: first compile every model of TRAIN_MODELS, N processes at a time (one step each, Triton
#                        autotuning cached on disk under /tmp/flame_warm), then time them one by one from the warm
#                        caches (a cold model costs 1-3 min of compiling; warm, ~35 s on an H100). The warm pass
#                        autotunes beside N-1 other processes: a config it picks may be slower than an undisturbed one
#   COMMIT               the commit to record in versions.txt (default: git's HEAD)
set -uo pipefail

if [ "${1:-}" = "--wheels" ]; then
    set -e
    get() {
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d "$@"
    }
    get .whl torchtitan==0.2.2 torchdata==0.11.0 tomli==2.5.0 tyro==1.0.17 docstring-parser==0.18.0 \
        typeguard==4.6.0 datasets==4.7.0 dill==0.4.0 multiprocess==0.70.18 pytest-xdist==3.8.0 execnet==2.1.2
    [ "${2:-}" = "--fla" ] && get .whl_peer fla-core==0.6.0 flash-linear-attention==0.6.0
    ls .whl ${2:+.whl_peer}
    exit 0
fi

OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
pip_target() {  # pip_target DIR WHEEL...: install wheels (no index, no dependencies) into DIR
    local dir=$1
    shift
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$dir" "$@"
}
if compgen -G ".whl/*.whl" >/dev/null; then
    pip_target /tmp/flame_site .whl/*.whl || { echo "check.sh: installing .whl/ failed"; exit 1; }
    export PYTHONPATH=/tmp/flame_site:$PYTHONPATH
fi
if compgen -G ".whl_peer/*.whl" >/dev/null; then  # fla 0.6.0 apart from ours: both packages are named `fla`
    pip_target /tmp/fla060 .whl_peer/*.whl || { echo "check.sh: installing .whl_peer/ failed"; exit 1; }
    export FLA060_PATH=/tmp/fla060
fi

# COMMIT=<hash> overrides git: a copied tree's .git can be older than its files (the device tool's copies are)
COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
COMMIT=$COMMIT python3 - <<'PY' | tee "$OUT/versions.txt"
import os, platform, torch, triton, transformers
name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"device: {name} | torch {torch.__version__} | triton {triton.__version__} | "
      f"transformers {transformers.__version__} | python {platform.python_version()} | commit {os.environ['COMMIT']}")
PY

rc=0
if [ "${PYTEST:-1}" != 0 ]; then
    paths=("$@")
    [ ${#paths[@]} -eq 0 ] && paths=(tests/fla tests/test_project.py)
    # shellcheck disable=SC2086  # PYTEST_ARGS is split on purpose
    FLA_TEST_ONE_CONFIG=${FLA_TEST_ONE_CONFIG:-1} FLAME_FAILURE_LOG="$OUT/failures.log" \
        timeout "${PYTEST_TIMEOUT:-1800}" python3 -m pytest -v -p no:cacheprovider -n "${NPROC:-8}" --durations=15 \
        "${paths[@]}" ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/pytest.log" | tail -60
    rc=${PIPESTATUS[0]}
fi

IFS=, read -ra groups <<<"${BENCH-modules,ops,train}"
for g in "${groups[@]}"; do
    case "$g" in
        modules) python3 -m benchmarks.modules.run_all --out "$OUT/modules.md" 2>&1 | tail -60 ;;
        ops) python3 -m benchmarks.ops.bench_chunk ${FLA060_PATH:+--fla-path $FLA060_PATH} --out "$OUT/ops_chunk.md" \
            2>&1 | tail -40 ;;
        launch) python3 -m benchmarks.ops.launch_overhead --out "$OUT/launch_overhead.md" 2>&1 | tail -25 ;;
        train)
            models=${TRAIN_MODELS:-gla_340M gated_deltanet_340M transformer_340M}
            train_run() {  # train_run MODEL STEPS WARMUP OUT
                python3 benchmarks/train_throughput.py --config "configs/$1.json" --batch-size 8 --seq-len 2048 \
                    --steps "$2" --warmup "$3" --impl "${TRAIN_IMPL:-flame,eager}" --compile \
                    --set model.overrides=fuse_linear_cross_entropy=true --out "$4"
            }
            if [ "${TRAIN_WARM:-0}" -gt 0 ]; then
                export -f train_run
                export TRITON_CACHE_AUTOTUNING=1 TRITON_CACHE_DIR=/tmp/flame_warm/triton \
                    TORCHINDUCTOR_CACHE_DIR=/tmp/flame_warm/inductor OUT
                # shellcheck disable=SC2016  # expanded by the child shell
                printf '%s\n' $models | xargs -P "$TRAIN_WARM" -I{} bash -c \
                    'train_run {} 1 1 /dev/null >>"$OUT/train_warm_{}.log" 2>&1 || echo "warm {} failed (see $OUT/train_warm_{}.log)"'
            fi
            for model in $models; do
                if train_run "$model" 8 3 "$OUT/train_$model.md" >"$OUT/train_$model.log" 2>&1; then
                    cat "$OUT/train_$model.md"
                    grep "^| $model " "$OUT/train_$model.md" >>"$OUT/train_summary.md"
                else
                    # the exception's own line (torchrun prefixes a rank), not the traceback's frames
                    why=$(grep -E '^(\[rank[0-9]+\]: )?[A-Za-z_.]*(Error|Exception)[A-Za-z_.]*: ' "$OUT/train_$model.log" \
                        | tail -1 | cut -c1-400)
                    echo "train $model failed: ${why:-see $OUT/train_$model.log}"
                    echo "| $model | failed: ${why:-see train_$model.log} |" >>"$OUT/train_summary.md"
                fi
                cat "$OUT/train_$model.log" >>"$OUT/train.log"
            done ;;
        "") ;;
        *) echo "check.sh: unknown benchmark group $g" ;;
    esac
done
echo "check.sh: logs and tables in $OUT"
exit "$rc"
