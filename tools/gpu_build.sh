#!/usr/bin/env bash
# Builds, on any Linux machine with Rust (no GPU needed), the folder that tools/gpu_check.sh runs
# on a machine with an NVIDIA GPU:
#
#   tools/gpu_build.sh [DEST]          (DEST defaults to gpu-check/, which git ignores)
#
# DEST/bundle.tar.xz holds, stripped and compressed (the whole folder stays well under 64 MiB):
#   vicrop                               the CLI, burn-cuda only
#   suites                               the model test binary (the parity suites), on burn-cuda
# and DEST/cubecl-cache/ (compiled kernels, autotune results) is kept from an earlier run: unpack
# the `cubecl-cache.tgz` that gpu_check.sh brings back into DEST before carrying it again.
#
# GPU_FEATURES overrides the cargo features (default `cuda`; `cuda,autotune` tunes the kernels
# on the GPU, which takes minutes on a cold cache).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-gpu-check}
FEATURES=${GPU_FEATURES:-cuda}
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$DEST/cubecl-cache"

echo "== vicrop (--features $FEATURES)"
cargo build --release -p vicrop-eval --no-default-features --features "$FEATURES"
cp target/release/vicrop "$STAGE/vicrop"

echo "== the model suites' test binary (--features $FEATURES)"
cargo test --release -p vicrop-models --no-default-features --features "$FEATURES" \
    --test suites --no-run \
    --message-format=json \
  | python3 -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["kind"] == ["test"]:
        print(msg["target"]["name"], msg["executable"])
' | while read -r name exe; do cp "$exe" "$STAGE/$name"; done

for f in vicrop suites; do
    [ -x "$STAGE/$f" ] || { echo "missing $f" >&2; exit 1; }
    strip "$STAGE/$f"
done
tar -C "$STAGE" -cJf "$DEST/bundle.tar.xz" vicrop suites
echo "$DEST: $(du -sh "$DEST" | cut -f1) (bundle $(du -h "$DEST/bundle.tar.xz" | cut -f1))"
echo "Run on the GPU machine, from the repository root: bash tools/gpu_check.sh $DEST"
