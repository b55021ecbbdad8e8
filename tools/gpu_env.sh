# shellcheck shell=bash
# Sourced by tools/gpu_check.sh and tools/bench_gpu.sh on the GPU machine, after they set ROOT
# (the repository) and DIR (the folder tools/gpu_build.sh made): CUDA's libraries, the fixtures
# and one kernel cache for every binary, and the bundle unpacked.
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
export LD_LIBRARY_PATH=$CUDA_PATH/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export VICROP_FIXTURES=$ROOT/tests/fixtures
export VICROP_KERNEL_CACHE=$DIR/cubecl-cache
export RUST_LOG=${RUST_LOG:-warn}

if [ -f "$DIR/bundle.tar.xz" ]; then
    tar -C "$DIR" -xJf "$DIR/bundle.tar.xz"
fi
mkdir -p "$DIR/cubecl-cache"
# The test binaries read cubecl's own configuration file from their working directory; vicrop
# honours it too. All of them then share DIR/cubecl-cache (autotune results and compiled kernels).
cat > "$DIR/cubecl.toml" <<TOML
[autotune]
cache = { file = "$DIR/cubecl-cache" }

[compilation]
cache = { file = "$DIR/cubecl-cache" }
TOML
