#!/usr/bin/env bash
# Kernel parity and compile check on a machine with an NVIDIA GPU (run from the repo root).
# Builds the parity harness if it is not built, then runs every case, the GPU ones included.
# NVRTC comes from TPO_NVRTC_PATH, the venv's nvidia-cuda-nvrtc wheel, or $CUDA_HOME/lib64.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${GPU_PARITY_BIN:-}
if [[ -z "$bin" ]]; then
  cargo test --release --locked --test gpu_parity --no-run
  bin=$(ls -t target/release/deps/gpu_parity-* | grep -v '\.d$' | head -n 1)
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$bin" --include-ignored "$@"
