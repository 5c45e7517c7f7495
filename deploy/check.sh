#!/usr/bin/env bash
# Static checks of deploy/: every Kubernetes manifest against the schemas of one fixed
# Kubernetes release (strict: unknown fields are errors), and the Dockerfile with hadolint
# (every rule, failing on any finding, info level included). Needs no Docker daemon and
# no cluster.
#
#   deploy/check.sh            # uses .venv/ (make setup creates it), installs the linters
#   K8S_VERSION=1.35.0 deploy/check.sh
#
# Exit 0 when everything passes, 1 on any finding.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# The release the manifests must be valid for (autoscaling/v2, Indexed Jobs and
# backoffLimitPerIndex are all GA there).
K8S_VERSION="${K8S_VERSION:-1.33.0}"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"

if [[ ! -x "$PY" ]]; then
    echo "error: $PY not found: run \`make setup\` (or \`make venv\`) first" >&2
    exit 1
fi
# Install the pinned linters when missing or at another version (quiet when up to date).
if ! "$PY" -m pip install --quiet --disable-pip-version-check -r deploy/requirements.txt; then
    echo "error: could not install deploy/requirements.txt into $VENV" >&2
    exit 1
fi

status=0

shopt -s nullglob
manifests=(deploy/k8s/*.yaml deploy/k8s/*.yml)
if [[ ${#manifests[@]} -eq 0 ]]; then
    echo "error: no manifests under deploy/k8s/" >&2
    exit 1
fi

echo "== kubernetes-validate --strict, Kubernetes $K8S_VERSION"
for manifest in "${manifests[@]}"; do
    # Warnings (deprecated APIs, unknown kinds) count as failures too.
    if ! out="$("$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$K8S_VERSION" "$manifest" 2>&1)"; then
        status=1
    elif grep -qv '^INFO ' <<<"$out"; then
        status=1
    fi
    printf '%s\n' "$out"
done

echo "== hadolint deploy/Dockerfile"
if "$VENV/bin/hadolint" --failure-threshold info deploy/Dockerfile; then
    echo "hadolint: no findings"
else
    status=1
fi

if [[ $status -eq 0 ]]; then
    echo "deploy check: PASS"
else
    echo "deploy check: FAIL" >&2
fi
exit "$status"
