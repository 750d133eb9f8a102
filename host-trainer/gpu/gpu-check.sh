#!/usr/bin/env bash
# One short CUDA training check on a GPU machine, run from a bundle made by
# `cargo xtask gpu-bundle` (this script + a stripped `strokeseg-train` linked against
# libtorch 2.11.0 with its CUDA backend). The GPU machine needs no Rust toolchain and no
# network: only python3 with torch 2.11.0 (CUDA build), whose libraries the binary runs on.
#
#   bash target/gpu-bundle/gpu-check.sh          # results in $OUT (or ./gpu-check-out)
#
# What it does (about 3-5 minutes on one H100):
#   1. `strokeseg-train info --device cuda`: libtorch sees the GPU (fails loudly if not).
#   2. a 40-case phantom set (seed 7), the one BENCHMARKS.md's CPU figures used.
#   3. the CPU benchmark's hybrid-loss run (fold 0 of 4, 16 epochs, 80 x 80 at 3 mm, base 8,
#      depth 3) on cuda:0, fp32 and --amp bf16: held-out Dice, wall time, slices/s.
#   4. the shipped default model's configuration (128 x 128 at 2 mm, base 16, depth 4), a few
#      epochs, fp32 and bf16: slices/s at the size that matters for real training.
# Everything lands in $OUT: logs, each run's evaluation.json and metrics, and summary.md.
#
# Dry run of the script itself on a CPU machine (what CI-less checking of this script
# looks like): DEVICE=cpu QUICK=1 STROKESEG_TRAIN=target/debug/strokeseg-train OUT=/tmp/g \
#   bash host-trainer/gpu/gpu-check.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
bin=${STROKESEG_TRAIN:-$here/strokeseg-train}
device=${DEVICE:-cuda}
python=${PYTHON:-python3}

if [[ ! -x $bin ]]; then
    echo "gpu-check: $bin is missing: run \`cargo xtask gpu-bundle\` on the build machine first" >&2
    exit 1
fi
if [[ $device == cpu ]]; then
    torch_version="(not used: DEVICE=cpu runs $bin with its own libtorch)"
    torch_lib=""
else
    torch_lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') || {
        echo "gpu-check: $python cannot import torch; install torch 2.11.0 (CUDA build) for it" >&2
        exit 1
    }
    torch_version=$("$python" -c 'import torch; print(torch.__version__)')
    site=$(dirname "$(dirname "$torch_lib")")
    nvidia_libs=$(find "$site/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | sort | paste -sd: -)
    export LD_LIBRARY_PATH="$torch_lib${nvidia_libs:+:$nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

{
    echo "# strokeseg GPU check"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- python torch: $torch_version ($torch_lib)"
    echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'nvidia-smi not available')"
    echo "- CPU cores: $(nproc)"
    echo
} > "$out/summary.md"

quick=${QUICK:-0}
cases=40
[[ $quick == 1 ]] && cases=8

echo "== libtorch devices"
"$bin" info --device "$device" | tee "$out/info.txt"

echo "== phantom set ($cases cases, seed 7)"
"$bin" phantom --out "$out/data" --cases "$cases" --seed 7 | tee "$out/phantom.txt"

# run NAME EXTRA-ARGS...: one training run on cuda:0, fold 0 of 4, timed.
run() {
    local name=$1
    shift
    local started ended
    started=$(date +%s.%N)
    "$bin" train --data "$out/data" --patients "$out/data/patients.csv" --out "$out/$name" \
        --fold 0 --folds 4 --loss hybrid --seed 2018 --device "$device" --quiet "$@" \
        > "$out/$name.log" 2>&1 || {
        echo "gpu-check: run $name failed; its log:" >&2
        tail -40 "$out/$name.log" >&2
        exit 1
    }
    ended=$(date +%s.%N)
    local wall slices dice
    wall=$(awk -v a="$started" -v b="$ended" 'BEGIN { printf "%.1f", b - a }')
    slices=$(grep -o '[0-9.]* slices/s' "$out/$name.log" | awk '{ s += $1; n += 1 } END { if (n) printf "%.1f", s / n; else print "?" }')
    dice=$(grep -o 'held-out mean case Dice [0-9.]*' "$out/$name.log" | tail -1 | awk '{ print $NF }')
    echo "| $name | $* | ${dice:-?} | $wall | $slices |" >> "$out/summary.md"
    echo "$name: Dice ${dice:-?}, ${wall} s, ${slices} slices/s (mean of epochs)"
}

echo "| run | arguments | held-out Dice (last) | wall s | slices/s |" >> "$out/summary.md"
echo "|---|---|---:|---:|---:|" >> "$out/summary.md"
small_epochs=16
default_epochs=6
if [[ $quick == 1 ]]; then
    small_epochs=1
    default_epochs=1
fi
small=(--epochs "$small_epochs" --batch-size 8 --input-size 80 --target-spacing-mm 3 --base-width 8 --depth 3)
default=(--epochs "$default_epochs" --batch-size 8 --input-size 128 --target-spacing-mm 2 --base-width 16 --depth 4 --val-every "$default_epochs")
echo "== CPU benchmark configuration on $device"
run small-fp32 "${small[@]}"
[[ $device == cpu ]] || run small-bf16 "${small[@]}" --amp bf16
echo "== default model configuration on $device"
run default-fp32 "${default[@]}"
[[ $device == cpu ]] || run default-bf16 "${default[@]}" --amp bf16
echo
cat "$out/summary.md"
