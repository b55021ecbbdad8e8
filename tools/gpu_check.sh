#!/usr/bin/env bash
# The CUDA check, in one command on a machine with an NVIDIA GPU (no Rust needed there):
#
#   bash tools/gpu_check.sh [DIR]        from the repository root; DIR defaults to gpu-check/
#
# DIR is what tools/gpu_build.sh made elsewhere (bundle.tar.xz, and cubecl-cache/ from earlier
# runs). Results go to $OUT (default DIR/out): summary.md, every command's output, and
# cubecl-cache.tgz, the kernel cache to unpack into DIR for the next run.
#
#   1. The parity tests through burn-cuda in f32: the same cases, goldens and tolerances as on
#      the CPU.
#   2. Half precision on the bundled models: `vicrop crop` in f32, f16 and bf16 for the three
#      methods; the largest map difference against f32 and whether boxes and greedy tokens agree.
#   3. A random-weight LLaVA-1.5-7B-shaped checkpoint built on the spot (tools/gpu_check.py,
#      from the committed tools/llava-7b-manifest.json), then `vicrop crop` in bf16 for the
#      three methods: load and run times, and peak GPU memory; rel-att once more with
#      VICROP_CUBE_KERNELS=0 (burn's operations instead of vicrop's cubecl kernels), to time both.
#
# Needs python3 with torch and safetensors (for step 3), nvidia-smi, and CUDA's libraries under
# $CUDA_PATH (default /usr/local/cuda). Each step has a time limit; the whole is meant to finish in
# under 8 minutes on an H100/H200 with a cold kernel cache.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
DIR=$(realpath -m "${1:-gpu-check}")
OUT=${OUT:-$DIR/out}

# shellcheck source=tools/gpu_env.sh
. tools/gpu_env.sh   # CUDA, fixtures, the kernel cache and cubecl.toml in DIR; unpacks the bundle
for f in vicrop suites; do
    if [ ! -x "$DIR/$f" ]; then
        echo "gpu_check: $DIR/$f is missing; build the folder with tools/gpu_build.sh" >&2
        exit 2
    fi
done
mkdir -p "$OUT" "$DIR/cubecl-cache"
SUMMARY=$OUT/summary.md
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
START=$(date +%s)
elapsed() { echo "$(( $(date +%s) - START )) s"; }
VICROP=$DIR/vicrop

say "# vicrop GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say '```'
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$SUMMARY"
say "kernel cache: $(du -sh "$DIR/cubecl-cache" | cut -f1) before the run"
say '```'

# ------------------------------------------------------------------ 1. parity in f32
say ""
say "## 1. Parity tests on burn-cuda, f32 (goldens and tolerances as on the CPU)"
say ""
FAILED=0
for t in llava_parity vicrop_parity instructblip_parity; do
    (cd "$DIR" && timeout 240 ./suites --test-threads 4 "$t::") > "$OUT/$t.txt" 2>&1
    rc=$?
    result=$(grep -E '^test result:' "$OUT/$t.txt" | tail -1)
    say "- $t: ${result:-no result} (exit $rc, $(elapsed) since start)"
    if [ $rc -ne 0 ]; then
        FAILED=1
        grep -E '^(---- |thread .* panicked|  left|  right)|max diff|tolerance' "$OUT/$t.txt" \
            | head -20 | sed 's/^/    /' | tee -a "$SUMMARY"
    fi
done

# ------------------------------------------------------------------ 2. half precision
say ""
say "## 2. f16 and bf16 against f32 (vicrop crop, bundled models)"
say ""
HALF=$OUT/half
mkdir -p "$HALF"
crop() { # name model image question method dtype
    (cd "$DIR" && timeout 120 "$VICROP" crop --model "$2" --image "$3" --question "$4" \
        --method "$5" --device cuda --dtype "$6" --max-new-tokens 8 --json) \
        > "$HALF/$1-$6-$5.json" 2> "$HALF/$1-$6-$5.err" || echo "  failed: $1 $6 $5 (see $HALF/$1-$6-$5.err)" | tee -a "$SUMMARY"
}
for dtype in f32 f16 bf16; do
    for method in rel-att grad-att pure-grad; do
        crop demo "$VICROP_FIXTURES/llava-demo" "$VICROP_FIXTURES/scenes/images/0015.png" \
            "What does the sign say?" "$method" "$dtype"
    done
    crop instructblip "$VICROP_FIXTURES/instructblip-tiny-a" "$VICROP_FIXTURES/images/chelsea.png" \
        "What is in the image?" rel-att "$dtype"
done
python3 tools/gpu_check.py compare "$HALF" | tee -a "$SUMMARY"
say ""
say "($(elapsed) since start)"

# ------------------------------------------------------------------ 3. 7B-shaped, bf16
say ""
say "## 3. LLaVA-1.5-7B-shaped checkpoint (random weights), bf16"
say ""
MODEL=${GPU_CHECK_MODEL_DIR:-/tmp/vicrop-llava-7b}
if [ ! -f "$MODEL/model.safetensors.index.json" ]; then
    timeout 300 python3 tools/gpu_check.py make-model tools/llava-7b-manifest.json "$MODEL" --layers 32 \
        > "$OUT/make-model.txt" 2>&1 || say "building the checkpoint failed: $(tail -3 "$OUT/make-model.txt")"
fi
say "$(tail -1 "$OUT/make-model.txt" 2>/dev/null) ($(elapsed) since start)"
say ""
say "| method | load s | run s | vision / prefill / decode / map / final answer ms | peak GPU memory MiB | answer tokens | box |"
say "|---|---:|---:|---|---:|---|---|"
for run in rel-att grad-att pure-grad rel-att:burn-ops; do
    method=${run%%:*}
    kernels=1
    [ "$run" = "$method" ] || kernels=0
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/7b-$run.mem" 2>/dev/null &
    SMI=$!
    (cd "$DIR" && VICROP_CUBE_KERNELS=$kernels timeout 180 "$VICROP" crop --model "$MODEL" --image "$VICROP_FIXTURES/images/chelsea.png" \
        --question "What is the animal in the image?" --method "$method" --device cuda --dtype bf16 \
        --max-new-tokens 10 --json) > "$OUT/7b-$run.json" 2> "$OUT/7b-$run.err"
    rc=$?
    kill "$SMI" 2>/dev/null; wait "$SMI" 2>/dev/null
    peak=$(sort -n "$OUT/7b-$run.mem" | tail -1)
    row=$(python3 -c '
import json, sys
path, peak, rc = sys.argv[1:4]
try:
    d = json.load(open(path))
    t = d["timing"]
    ms = d.get("timings_ms", {})
    stages = " / ".join("%.0f" % ms.get(k, float("nan")) for k in ("vision", "prefill", "decode", "map", "final_answer"))
    tokens = "%d+%d" % (len(d["answer_token_ids"]), len(d["crop_answer_token_ids"]))
    print("%.1f | %.1f | %s | %s | %s | %s" % (t["load_s"], t["run_s"], stages, peak, tokens, d["bbox"]))
except Exception:
    print("failed (exit %s) | | | %s | | " % (rc, peak))
' "$OUT/7b-$run.json" "${peak:-?}" "$rc")
    say "| $run | $row |"
done
say ""
say "($(elapsed) since start)"

# ------------------------------------------------------------------ the kernel cache, brought back
tar -C "$DIR" -czf "$OUT/cubecl-cache.tgz" cubecl-cache
say "kernel cache: $(du -sh "$DIR/cubecl-cache" | cut -f1) after the run, in $OUT/cubecl-cache.tgz"
say "total: $(elapsed)"
exit $FAILED
