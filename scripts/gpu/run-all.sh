#!/usr/bin/env bash
# The GPU checks on a lent machine, run from the repo root there, fed the parts that
# scripts/gpu/pack.sh made here (docs/gpu.md has the exact calls).
#
#   scripts/gpu/run-all.sh PART|- [kernels] [engine] [search]
#
# PART (00, 01, ...; - for none) is received first: target/gpu-pack/part-PART is checked against
# target/gpu-pack/SHA256SUMS and kept in $STAGE outside the repo (the machine keeps it only
# while it stays in use, so send the parts back to back). Then the phases, cheapest first:
#
#   kernels  needs part 00 only: nvidia-smi, every kernel parity case (none may be ignored),
#            `tpo bench kernels` (top-p and pooling against device-to-device copy bandwidth).
#   engine   needs every part: exports the float32 and float16 policy and judge from the
#            GGUF with the machine's Python, runs tests/gpu_engine.rs and `tpo bench engine`
#            on CUDA with device KV (decode tokens/s at 1/32/128 and the share of step time
#            outside ONNX Runtime).
#   search   (a separate call, `run-all.sh - search`, so each call stays within the device
#            tool's 10 minutes): `tpo bench search` (TPO depth 2, width 5 at 32 and 128
#            concurrent; 128 again with --sample-on-host, and float16 end to end), and what
#            `--device tensorrt` says.
#
# Everything lands in $OUT (the folder the device tool returns): one .txt per step, JSON
# where the command writes it, and summary.txt with each step's exit status.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
STAGE=${STAGE:-/tmp/tpo-gpu}
OUT=${OUT:-$STAGE/out}
PACK=target/gpu-pack
mkdir -p "$STAGE" "$OUT"

die() { echo "error: $*" | tee -a "$OUT/summary.txt" >&2; exit 1; }

# step NAME TIMEOUT CMD...: runs CMD with a time limit, output to $OUT/NAME.txt and the
# console; its status goes to summary.txt and never stops the script.
step() {
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > >(tee "$OUT/$name.txt") 2>&1
  local rc=$?
  echo "$name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
  return $rc
}

receive() {
  [[ $1 == - ]] && return 0  # nothing carried with this call
  local part="part-$1"
  [[ -f "$PACK/$part" && -f "$PACK/SHA256SUMS" ]] \
    || die "$PACK/$part and $PACK/SHA256SUMS were not carried with this call"
  cp "$PACK/SHA256SUMS" "$STAGE/"
  cp "$PACK/$part" "$STAGE/"
  (cd "$STAGE" && grep " $part\$" SHA256SUMS | sha256sum -c --quiet) || die "$part is damaged in transit"
  local have missing
  have=$(cd "$STAGE" && ls part-* | tr '\n' ' ')
  missing=$(cd "$STAGE" && awk '{print $2}' SHA256SUMS | while read -r p; do [[ -f $p ]] || printf '%s ' "$p"; done)
  echo "received $part; in $STAGE: $have; still to send: ${missing:-none}"
}

unpack_core() {
  [[ -x "$STAGE/core/bin/tpo" ]] && return 0
  [[ -f "$STAGE/part-00" ]] || die "part-00 (the core) has not been received"
  zstd -q -dc "$STAGE/part-00" | tar -C "$STAGE" -xf - || die "part-00 does not unpack"
}

unpack_bulk() {
  [[ -f "$STAGE/bulk/ort/libonnxruntime.so.1.31.1" ]] && return 0
  local missing
  missing=$(cd "$STAGE" && awk '{print $2}' SHA256SUMS | while read -r p; do [[ -f $p ]] || printf '%s ' "$p"; done)
  [[ -z "$missing" ]] || die "parts not received (the machine may have been given back between calls): $missing"
  (cd "$STAGE" && sha256sum -c --quiet SHA256SUMS) || die "a part is damaged"
  cat "$STAGE"/part-0[1-9] "$STAGE"/part-[1-9][0-9] 2>/dev/null | zstd -q -d | tar -C "$STAGE" -xf - \
    || die "the bulk parts do not unpack"
}

gpu_env() {
  export PATH="$STAGE/core/bin:$PATH"
  export TPO_HOME=$REPO
  local nvrtc
  nvrtc=$(ls /usr/local/cuda/lib64/libnvrtc.so.13 /usr/local/cuda/lib64/libnvrtc.so 2>/dev/null | head -n 1)
  [[ -n "$nvrtc" ]] && export TPO_NVRTC_PATH=$nvrtc
}

kernels() {
  unpack_core
  gpu_env
  step nvidia-smi 30 nvidia-smi
  step doctor 60 tpo doctor
  step gpu_parity 300 gpu_parity --include-ignored
  grep -q " 0 ignored" "$OUT/gpu_parity.txt" || echo "gpu_parity: some cases did not run" | tee -a "$OUT/summary.txt"
  step bench-kernels 240 tpo bench kernels --json "$OUT/kernels.json"
}

# The GPU libraries on the library path and the models exported (idempotent: a later call
# finds them up to date while the machine stays warm).
engine_env() {
  unpack_core
  unpack_bulk
  gpu_env
  export ORT_DYLIB_PATH=$STAGE/bulk/ort/libonnxruntime.so.1.31.1
  # ONNX Runtime's CUDA EP needs cuBLAS 13, cudart 13, cuRAND 10 and cuDNN 9: on the lent
  # machines they are the NVIDIA wheels PyTorch installed.
  local libs
  libs=$(python3 - <<'EOF'
import glob, site
dirs = set()
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    dirs.update(glob.glob(sp + "/nvidia/**/lib", recursive=True))
print(":".join(sorted(dirs)))
EOF
)
  export LD_LIBRARY_PATH="$STAGE/bulk/ort:${libs}:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" > "$OUT/env.txt"

  if [[ ! -x "$STAGE/py/bin/python" ]]; then
    python3 -m venv --system-site-packages "$STAGE/py" || die "python3 -m venv failed"
    "$STAGE/py/bin/python" -m pip install --quiet --no-index --no-deps "$STAGE"/core/wheels/*.whl \
      || die "the carried wheels do not install"
  fi
  local py=$STAGE/py/bin/python gguf=$STAGE/bulk/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
  step export-f32 600 "$py" models/export_smollm2.py --gguf "$gguf" || die "float32 export failed"
  step export-f16 600 "$py" models/export_smollm2.py --gguf "$gguf" --weights f16
  step export-judge 600 "$py" models/export_judge.py --gguf "$gguf"
  step export-judge-f16 600 "$py" models/export_judge.py --gguf "$gguf" --weights f16
}

engine() {
  engine_env
  step doctor-cuda 60 tpo doctor --device cuda
  step gpu_engine 300 gpu_engine --include-ignored
  step bench-engine 600 tpo bench engine --device cuda --concurrency 1,32,128 --kv-slots 128 \
    --max-new-tokens 64 --json "$OUT/bench-engine.json"
  step bench-engine-f16 600 tpo bench engine --device cuda --model models/smollm2-135m-instruct-f16 \
    --concurrency 1,32,128 --kv-slots 128 --max-new-tokens 64 --json "$OUT/bench-engine-f16.json"
}

search() {
  engine_env
  for n in 32 128; do
    step "bench-search-$n" 600 tpo bench search --device cuda --kv-slots 128 --searches "$n" \
      --sequential-searches 4 --strategy tpo --depth 2 --width 5 --max-new-tokens 64 \
      --reward-model judge --input scripts/gpu/prompts.jsonl --json "$OUT/bench-search-$n.json"
  done
  # the same 128 searches with decode logits and judge hidden states brought to the host
  step bench-search-128-host 600 tpo bench search --device cuda --kv-slots 128 --searches 128 \
    --sample-on-host --sequential-searches 4 --strategy tpo --depth 2 --width 5 --max-new-tokens 64 \
    --reward-model judge --input scripts/gpu/prompts.jsonl --json "$OUT/bench-search-128-host.json"
  # float16 end to end: the float16 policy and the float16 judge
  step bench-search-128-f16 600 tpo bench search --device cuda --kv-slots 128 --searches 128 \
    --model models/smollm2-135m-instruct-f16 --sequential-searches 4 --strategy tpo --depth 2 \
    --width 5 --max-new-tokens 64 --reward-model models/smollm2-judge-f16 \
    --input scripts/gpu/prompts.jsonl --json "$OUT/bench-search-128-f16.json"
  # No TensorRT on the lent machines: record the error `--device tensorrt` gives.
  step tensorrt 120 tpo generate --device tensorrt --max-new-tokens 8 "What is 2+2?"
}

[[ $# -ge 1 ]] || { sed -n 2,20p "$0"; exit 2; }
receive "$1"
shift
for phase in "$@"; do
  case $phase in
    kernels) kernels ;;
    engine) engine ;;
    search) search ;;
    *) die "unknown phase $phase (kernels, engine, search)" ;;
  esac
done
echo "results in $OUT"
