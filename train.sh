#!/usr/bin/env bash
# flame launcher: torchrun over `python -m flame.train`, then export the last checkpoint to HF.
#
#   bash train.sh                                    offline default: make data/sample if missing,
#                                                    train configs/tiny_cpu.toml, export <dump>/hf
#   bash train.sh --training.steps 10 [...]          the offline default with these overrides
#   bash train.sh --job.config_file configs/gla_340M.toml [--section.key value ...]
#
# Before launching, the config, the model config, TP, the tokenizer and the dataset are checked
# (a bad one: one line, exit 2). SIGINT / SIGTERM / SIGHUP stop the whole job (one line naming the
# newest complete checkpoint); the workers die with this script, also when it is SIGKILLed.
# A worker's error ends the output as one line (exit 2 for bad input).
#
# Environment (all optional):
#   NGPU         processes on this node (default: the visible CUDA GPUs, 1 on CPU)
#   NNODE        nodes in the job (default 1)
#   NODE_RANK    this node's rank, 0..NNODE-1 (default 0; node 0 exports the HF model; with
#                RDZV_ENDPOINT only a node started with NODE_RANK=0 set explicitly exports)
#   MASTER_ADDR  node 0's address (default 127.0.0.1)
#   MASTER_PORT  node 0's port (default 29500; one node without MASTER_PORT: a free port)
#   RDZV_ENDPOINT, RDZV_ID  host:port and job id for torchrun's c10d rendezvous instead of
#                MASTER_ADDR/PORT + NODE_RANK (ranks are then assigned by the rendezvous)
#   LOG_DIR      per-rank stdout/stderr logs (default <dump_folder>/logs)
#   LOG_RANK     local ranks shown on the console (default 0; "0,1" or "" for all)
#   EXPORT_HF    1 (default) exports the latest checkpoint to <dump_folder>/hf after a
#                successful run on node 0; 0 skips it
#   PYTHON       the interpreter (default python)
set -euo pipefail

PYTHON=${PYTHON:-python}
NNODE=${NNODE:-1}
EXPORT_NODE=${NODE_RANK:+yes}  # rdzv assigns ranks itself: export only where NODE_RANK was given
NODE_RANK=${NODE_RANK:-0}
EXPORT_HF=${EXPORT_HF:-1}
LOG_RANK=${LOG_RANK-0}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's fla/flame, installed or not

count_gpus() {
  if [[ -n ${CUDA_VISIBLE_DEVICES+x} ]]; then
    local devices=${CUDA_VISIBLE_DEVICES//[[:space:]]/}
    if [[ -z $devices || $devices == -1 ]]; then echo 1; else echo $(($(tr -cd , <<<"$devices" | wc -c) + 1)); fi
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    local n
    n=$(nvidia-smi -L | grep -c '^GPU' || true)
    echo $((n > 0 ? n : 1))
  else
    echo 1
  fi
}
NGPU=${NGPU:-$(count_gpus)}

bad_env() {
  echo "train.sh: $1=${!1}: $2" >&2
  exit 2
}
[[ $NGPU =~ ^[1-9][0-9]*$ ]] || bad_env NGPU "expected the number of processes on this node (a positive integer)"
[[ $NNODE =~ ^[1-9][0-9]*$ ]] || bad_env NNODE "expected the number of nodes (a positive integer)"
[[ $NODE_RANK =~ ^[0-9]+$ ]] && ((NODE_RANK < NNODE)) || bad_env NODE_RANK "expected 0..$((NNODE - 1)) (NNODE=$NNODE)"

sample_data() {  # the offline sample corpus + tokenizer the default config reads
  if [[ ! -d $REPO/data/sample/data || ! -d $REPO/data/sample/tokenizer ]]; then
    echo "train.sh: writing the offline sample corpus + tokenizer to $REPO/data/sample"
    "$PYTHON" -m flame.tools.sample_data --out "$REPO/data/sample"
  fi
}
has_config=
for arg in "$@"; do
  if [[ $arg == --job.config_file || $arg == --job.config_file=* ]]; then has_config=1; fi
done
if [[ $# -eq 0 ]]; then
  # The offline default: relative paths in configs/tiny_cpu.toml are relative to the repository.
  cd "$REPO"
  sample_data
  set -- --job.config_file configs/tiny_cpu.toml
elif [[ -z $has_config && " $* " != *" --help "* && " $* " != *" -h "* ]]; then
  # Overrides without a config file apply to the offline default; its paths are made absolute (the
  # overrides' own relative paths stay relative to the current folder).
  sample_data
  set -- --job.config_file "$REPO/configs/tiny_cpu.toml" --job.dump_folder "$REPO/outputs/tiny_cpu" \
    --model.config "$REPO/configs/transformer_cpu.json" --model.tokenizer_path "$REPO/data/sample/tokenizer" \
    --data.dataset "$REPO/data/sample/data" "$@"
fi

for arg in "$@"; do
  if [[ $arg == --help || $arg == -h ]]; then exec "$PYTHON" -m flame.train "$@"; fi
done

# The resolved config (the same parse and validation as the trainer, plus model config, TP, tokenizer
# and dataset: what needs no process group; errors stop here, exit 2).
query=$("$PYTHON" -m flame.launch --world-size $((NNODE * NGPU)) --check \
  --get job.dump_folder checkpoint.enable checkpoint.folder model.config model.tokenizer_path model.custom_module \
  -- "$@")
mapfile -t cfg <<<"$query"  # one value per line; $(...) drops trailing empty lines, hence the defaults
DUMP_FOLDER=${cfg[0]:-} CKPT_ENABLE=${cfg[1]:-} CKPT_FOLDER=${cfg[2]:-}
MODEL_CONFIG=${cfg[3]:-} TOKENIZER=${cfg[4]:-} CUSTOM_MODULE=${cfg[5]:-}
LOG_DIR=${LOG_DIR:-$DUMP_FOLDER/logs}
mkdir -p "$LOG_DIR"

if [[ -n ${RDZV_ENDPOINT:-} ]]; then
  rendezvous=(--nnodes "$NNODE" --rdzv-backend c10d --rdzv-endpoint "$RDZV_ENDPOINT" --rdzv-id "${RDZV_ID:-flame}")
elif [[ $NNODE -eq 1 && -z ${MASTER_PORT:-} ]]; then
  rendezvous=(--standalone)
else
  rendezvous=(--nnodes "$NNODE" --node-rank "$NODE_RANK" --master-addr "${MASTER_ADDR:-127.0.0.1}"
    --master-port "${MASTER_PORT:-29500}")
fi
console=(--tee 3)
if [[ -n $LOG_RANK ]]; then console+=(--local-ranks-filter "$LOG_RANK"); fi

echo "train.sh: node $NODE_RANK of $NNODE, $NGPU process(es) per node; logs in $LOG_DIR"
# torchrun runs inside flame.launch: it dies with this script (even on SIGKILL), the workers die with
# it, and a failure or a stop ends with one line. A signal to this script is forwarded to it; bash
# runs a trap only between commands, hence the background job and the wait loop.
"$PYTHON" -m flame.launch --run --parent-pid $$ --checkpoint-folder "$DUMP_FOLDER/$CKPT_FOLDER" -- \
  "${rendezvous[@]}" --nproc-per-node "$NGPU" --log-dir "$LOG_DIR" "${console[@]}" -m flame.train "$@" &
job=$!
trap 'kill -TERM "$job" 2>/dev/null || true' INT TERM HUP
while kill -0 "$job" 2>/dev/null; do
  wait "$job" || true # returns early when a trapped signal arrives
done
status=0
wait "$job" || status=$?
trap - INT TERM HUP
if [[ $status != 0 ]]; then exit "$status"; fi

if [[ $NODE_RANK == 0 ]] && "$PYTHON" -c "import matplotlib" 2>/dev/null; then  # <dump>/metrics.png
  "$PYTHON" -m flame.tools.plot_run "$DUMP_FOLDER" || echo "train.sh: the run plot failed (the run itself is fine)"
fi
if [[ $EXPORT_HF != 1 || $NODE_RANK != 0 ]]; then exit 0; fi
if [[ -n ${RDZV_ENDPOINT:-} && $NNODE != 1 && -z $EXPORT_NODE ]]; then
  echo "train.sh: rendezvous job without NODE_RANK=0 on this node: the HF export is left to that node"
  exit 0
fi
if [[ $CKPT_ENABLE != true ]]; then
  echo "train.sh: checkpoint.enable is false: no checkpoint to export to HF"
  exit 0
fi
export_args=(--path "$DUMP_FOLDER" --checkpoint-folder "$CKPT_FOLDER" --config "$MODEL_CONFIG"
  --out "$DUMP_FOLDER/hf")
if [[ -n $TOKENIZER ]]; then export_args+=(--tokenizer "$TOKENIZER"); fi
if [[ -n $CUSTOM_MODULE ]]; then export_args+=(--custom-module "$CUSTOM_MODULE"); fi
"$PYTHON" -m flame.convert.dcp_to_hf "${export_args[@]}"
