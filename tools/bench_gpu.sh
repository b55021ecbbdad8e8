#!/usr/bin/env bash
# The GPU side-by-side benchmark, in one command on a machine with an NVIDIA GPU (no Rust needed there):
#
#   bash tools/bench_gpu.sh [DIR]        from the repository root; DIR defaults to gpu-check/
#
# DIR is what tools/gpu_build.sh made elsewhere (bundle.tar.xz with the `vicrop` binary built with
# --features cuda, and cubecl-cache/ from earlier runs), as for tools/gpu_check.sh. Results go to
# $OUT (default DIR/out): summary.md, bench.json, every command's output, and cubecl-cache.tgz,
# the kernel cache to unpack into DIR for the next run.
#
# On a random-weight LLaVA-1.5-7B-shaped checkpoint in bf16 (built on the spot from the committed
# tools/llava-7b-manifest.json by tools/gpu_check.py's make_model; kept in $MODEL for later runs),
# on the same images and questions (tools/bench_gpu.py prepare: $QUESTIONS questions on committed
# images, and a 2000x1500 image for high-res, each set after one warm-up item), it times per question:
#
#   - the reference pipeline in Python (tools/gen_vicrop_goldens.py's, through tools/bench_gpu.py
#     reference: transformers, eager attention, bf16, greedy, 20 new tokens), one process;
#   - `vicrop eval run --device cuda --dtype bf16 --max-new-tokens 20 --save-maps`, one process
#     per method (and one per high-res method), each item's `timings_ms.total`;
#
# for rel-att, grad-att and pure-grad (and high-res for $HIGH_RES_METHODS), and reports the median
# latencies and their ratio, peak GPU memory (nvidia-smi every 200 ms during each vicrop process,
# less the idle GPU's; torch.cuda.max_memory_allocated for the reference), the Pearson correlation
# of each question's map with the reference's, and whether boxes and answers agree. Start to first
# answer: one `vicrop crop --json` process timed from its start, first with the kernel cache as it
# came and, if that was empty, again at the end with the cache the runs filled.
#
# Environment (all optional):
#   QUESTIONS=4                  questions per method (each on its own image; the warm-up is extra)
#   METHODS="rel-att grad-att pure-grad"   HIGH_RES_METHODS="rel-att"
#   MODEL=/tmp/vicrop-llava-7b   the checkpoint folder (shared with gpu_check.sh's GPU_CHECK_MODEL_DIR)
#   BENCH_BUDGET_S=540           the whole run's time limit: each step's limit is cut to what is left,
#                                keeping the last 30 s for the report and the kernel cache
#   SKIP_REFERENCE=1, SKIP_VICROP=1   leave one side out (the report shows what there is)
#   PYTHON=python3               needs torch, transformers (4.47 or 5.x), safetensors, Pillow, numpy;
#                                torchvision, scipy and scikit-image are replaced if missing
#   VICROP_DEVICE=cuda VICROP_DTYPE=bf16 REF_DEVICE=cuda REF_DTYPE=bf16   (for testing elsewhere)
#
# Needs nvidia-smi and CUDA's libraries under $CUDA_PATH (default /usr/local/cuda). Meant to finish
# in under 9 minutes on an H100/H200 with a warm kernel cache; a step that fails or runs out of
# time is reported and the rest goes on.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
DIR=$(realpath -m "${1:-gpu-check}")
OUT=$(realpath -m "${OUT:-$DIR/out}")

# shellcheck source=tools/gpu_env.sh
. tools/gpu_env.sh   # CUDA, fixtures, the kernel cache and cubecl.toml in DIR; unpacks the bundle

QUESTIONS=${QUESTIONS:-4}
METHODS=${METHODS:-rel-att grad-att pure-grad}
HIGH_RES_METHODS=${HIGH_RES_METHODS-rel-att}
MODEL=$(realpath -m "${MODEL:-${GPU_CHECK_MODEL_DIR:-/tmp/vicrop-llava-7b}}")
BUDGET=${BENCH_BUDGET_S:-540}
RESERVE=30
PYTHON=${PYTHON:-python3}
VICROP_DEVICE=${VICROP_DEVICE:-cuda}
VICROP_DTYPE=${VICROP_DTYPE:-bf16}
REF_DEVICE=${REF_DEVICE:-cuda}
REF_DTYPE=${REF_DTYPE:-bf16}
START=$(date +%s)

mkdir -p "$OUT" "$DIR/cubecl-cache"
# This script's own outputs from an earlier run (a rerun must not resume old run folders).
rm -rf "$OUT"/vicrop-* "$OUT/mem" "$OUT/data" "$OUT"/first-answer-* "$OUT"/reference.* \
    "$OUT/bench.json" "$OUT/cubecl-cache.tgz"
mkdir -p "$OUT/mem"
DATA=$OUT/data
SUMMARY=$OUT/summary.md
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
elapsed() { echo "$(( $(date +%s) - START )) s"; }
# left CAP: the time limit for a step that may take CAP seconds, within what is left of the budget.
left() {
    local rest=$(( BUDGET - RESERVE - ($(date +%s) - START) ))
    echo $(( rest < $1 ? rest : $1 ))
}
# status RC LIMIT LOG: how a step ended, in words.
status() {
    case $1 in
        0) echo "done" ;;
        124|137) echo "**ran out of time** (limit $2 s; what it finished is kept)" ;;
        *) echo "**failed** (exit $1): $(tail -2 "$3" | tr '\n' ' ')" ;;
    esac
}
# nvidia-smi samples GPU 0's used memory (MiB) every 200 ms into mem/NAME.mem until mem_stop.
SMI=
mem_start() {
    nvidia-smi -i 0 --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/mem/$1.mem" 2>/dev/null &
    SMI=$!
}
mem_stop() { [ -n "$SMI" ] && { kill "$SMI" 2>/dev/null; wait "$SMI" 2>/dev/null; }; SMI=; }
trap 'mem_stop' EXIT

VICROP=$DIR/vicrop
VICROP_NOTE=
if [ -z "${SKIP_VICROP:-}" ] && [ ! -x "$VICROP" ]; then
    VICROP_NOTE="$VICROP is missing (build the folder with tools/gpu_build.sh): timing the reference only"
    echo "bench_gpu: $VICROP_NOTE" >&2
    SKIP_VICROP=1
fi
cache_state() { echo "$(find "$DIR/cubecl-cache" -type f | wc -l) $(du -sb "$DIR/cubecl-cache" | cut -f1)"; }
CACHE_AT_START=$(cache_state)

say "# vicrop GPU benchmark against the reference, $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say '```'
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$SUMMARY"
nvidia-smi -i 0 --query-gpu=memory.used --format=csv,noheader,nounits > "$OUT/mem/idle.txt" 2>/dev/null
IDLE=$(cat "$OUT/mem/idle.txt" 2>/dev/null)
say "idle GPU memory: ${IDLE:-?} MiB"
say "kernel cache: $(du -sh "$DIR/cubecl-cache" | cut -f1) ($(echo "$CACHE_AT_START" | cut -d' ' -f1) files) before the run"
say "python: $("$PYTHON" -c 'import sys, torch, transformers; print(sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__)' 2>&1 | tail -1)"
say "vicrop: $([ -x "$VICROP" ] && "$VICROP" --version 2>&1 | head -1) ${VICROP_NOTE}${SKIP_VICROP:+ (skipped)}"
say "questions: $QUESTIONS (+1 warm-up per process); methods: $METHODS; high-res: ${HIGH_RES_METHODS:-none}"
say '```'
say ""

# ------------------------------------------------------------------ 1. checkpoint and data
say "## Setup"
say ""
t=$(left 300)
timeout -k 10 "$t" "$PYTHON" tools/bench_gpu.py make-model "$MODEL" --layers 32 > "$OUT/make-model.txt" 2>&1
rc=$?
say "- checkpoint: $(status $rc "$t" "$OUT/make-model.txt"): $(tail -2 "$OUT/make-model.txt" | tr '\n' ' ') ($(elapsed) since start)"
"$PYTHON" tools/bench_gpu.py prepare "$DATA" --questions "$QUESTIONS" > "$OUT/prepare.txt" 2>&1 \
    || say "- preparing the data failed: $(tail -3 "$OUT/prepare.txt")"
say "- data: $(tail -1 "$OUT/prepare.txt")"
SAVE_MAPS=
if [ -z "${SKIP_VICROP:-}" ]; then
    if "$VICROP" eval run --help 2>/dev/null | grep -q -- '--save-maps'; then
        SAVE_MAPS=--save-maps
    else
        say "- this vicrop has no \`eval run --save-maps\`: no map comparison"
    fi
fi

# ------------------------------------------------------------------ 2. vicrop: start to first answer
# crop K: one `vicrop crop --json` (rel-att, the first question), timed from process start to exit.
FIRST_IMAGE=$DATA/images/$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))[1]["image_path"])' "$DATA/normal/data.json" 2>/dev/null)
FIRST_QUESTION=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))[1]["question"])' "$DATA/normal/data.json" 2>/dev/null)
crop() {
    local k=$1 cap=$2 t
    t=$(left "$cap")
    if [ "$t" -lt 15 ]; then say "- crop $k: skipped, out of time"; return; fi
    cache_state > "$OUT/first-answer-$k.cache"
    mem_start "first-answer-$k"
    local t0 t1
    t0=$(date +%s.%N)
    (cd "$DIR" && timeout -k 10 "$t" "$VICROP" crop --model "$MODEL" --image "$FIRST_IMAGE" \
        --question "$FIRST_QUESTION" --method rel-att --device "$VICROP_DEVICE" --dtype "$VICROP_DTYPE" \
        --max-new-tokens 20 --json) > "$OUT/first-answer-$k.json" 2> "$OUT/first-answer-$k.err"
    local rc=$?
    t1=$(date +%s.%N)
    mem_stop
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }' > "$OUT/first-answer-$k.wall"
    say "- crop $k: $(status $rc "$t" "$OUT/first-answer-$k.err"), $(cat "$OUT/first-answer-$k.wall") s from process start to exit ($(elapsed) since start)"
}
if [ -z "${SKIP_VICROP:-}" ]; then
    say ""
    say "## vicrop crop (start to first answer)"
    say ""
    crop 1 240
fi

# ------------------------------------------------------------------ 3. the reference
if [ -z "${SKIP_REFERENCE:-}" ]; then
    say ""
    say "## Reference (Python)"
    say ""
    t=$(left 300)
    if [ "$t" -lt 30 ]; then
        say "- skipped, out of time"
    else
        mem_start reference
        timeout -k 10 "$t" "$PYTHON" tools/bench_gpu.py reference --model "$MODEL" --data "$DATA" \
            --out "$OUT/reference.json" --device "$REF_DEVICE" --dtype "$REF_DTYPE" \
            --methods "$METHODS" --high-res-methods "$HIGH_RES_METHODS" > "$OUT/reference.txt" 2>&1
        rc=$?
        mem_stop
        say "- reference: $(status $rc "$t" "$OUT/reference.txt") ($(elapsed) since start)"
    fi
fi

# ------------------------------------------------------------------ 4. vicrop eval run, per method
# eval_run KEY METHOD SET CAP [--high-res]: one process over DATA/SET into OUT/vicrop-KEY.
eval_run() {
    local key=$1 method=$2 set=$3 cap=$4 t
    shift 4
    t=$(left "$cap")
    if [ "$t" -lt 20 ]; then say "- $key: skipped, out of time"; return; fi
    mem_start "vicrop-$key"
    (cd "$DIR" && timeout -k 10 "$t" "$VICROP" eval run --model "$MODEL" --task textvqa --format reference \
        --data "$DATA/$set" --images "$DATA/images" --method "$method" "$@" \
        --device "$VICROP_DEVICE" --dtype "$VICROP_DTYPE" --max-new-tokens 20 $SAVE_MAPS \
        --out "$OUT/vicrop-$key") > "$OUT/vicrop-$key.out" 2> "$OUT/vicrop-$key.err"
    local rc=$?
    mem_stop
    say "- $key: $(status $rc "$t" "$OUT/vicrop-$key.err") $(tail -1 "$OUT/vicrop-$key.out") ($(elapsed) since start)"
}
if [ -z "${SKIP_VICROP:-}" ]; then
    say ""
    say "## vicrop eval run"
    say ""
    for m in $METHODS; do
        eval_run "$m" "$m" normal 150
    done
    for m in $HIGH_RES_METHODS; do
        eval_run "$m-high-res" "$m" high-res 120 --high-res
    done
    # Warm start, when the first crop started from an empty cache.
    if [ "$(echo "$CACHE_AT_START" | cut -d' ' -f1)" = "0" ]; then
        crop 2 90
    fi
    # The kernel cache, brought back (before the report, in case that fails).
    tar -C "$DIR" -czf "$OUT/cubecl-cache.tgz" cubecl-cache
    say "- kernel cache: $(du -sh "$DIR/cubecl-cache" | cut -f1) after the run, in $OUT/cubecl-cache.tgz"
fi

# ------------------------------------------------------------------ 5. the comparison
say ""
timeout 60 "$PYTHON" tools/bench_gpu.py report "$OUT" > "$OUT/report.md" 2> "$OUT/report.err" \
    || say "the report failed: $(tail -3 "$OUT/report.err")"
cat "$OUT/report.md" >> "$SUMMARY"
cat "$OUT/report.md"
say ""
say "total: $(elapsed)"
exit 0
