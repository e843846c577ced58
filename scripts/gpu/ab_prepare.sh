#!/usr/bin/env bash
# Put the fla/ and benchmarks/ trees of REV into .ab_base/ (or DIR, named .ab_*; ignored: carry it) for an A/B run on
# the GPU machine (scripts/gpu/ab_ops.sh; more trees as its MIDS). Run here, in the repository root:
#     bash scripts/gpu/ab_prepare.sh fdd6faf            bash scripts/gpu/ab_prepare.sh dexp-next~2 .ab_mid
set -euo pipefail
rev=${1:?usage: ab_prepare.sh REV [DIR]}
dir=${2:-.ab_base}
[[ "$dir" == .ab_* && "$dir" != */* ]] || { echo "DIR must be named .ab_<name> (ignored by git), got $dir"; exit 1; }
rm -rf "$dir" && mkdir -p "$dir"
git archive "$rev" fla benchmarks | tar -x -C "$dir"
git rev-parse "$rev" > "$dir/REV"
exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.ab_\*/' "$exclude" 2>/dev/null || echo '/.ab_*/' >> "$exclude"
echo "$dir/ holds $(cat "$dir/REV") (carry .whl and $dir)"
