#!/usr/bin/env bash
# Put the fla/ and benchmarks/ trees of REV into .ab_base/ (ignored; carry it) for an A/B run on the GPU machine
# (scripts/gpu/ab_ops.sh). Run here, in the repository root:   bash scripts/gpu/ab_prepare.sh fdd6faf
set -euo pipefail
rev=${1:?usage: ab_prepare.sh REV}
rm -rf .ab_base && mkdir -p .ab_base
git archive "$rev" fla benchmarks | tar -x -C .ab_base
git rev-parse "$rev" > .ab_base/REV
grep -qx '/.ab_base/' .git/info/exclude 2>/dev/null || echo '/.ab_base/' >> .git/info/exclude
echo ".ab_base/ holds $(cat .ab_base/REV) (carry .whl and .ab_base)"
