#!/usr/bin/env bash
# Installs what the browser test needs: Debian's chromium (apt, when /usr/bin/chromium is
# missing) and playwright-core (npm, pinned by package-lock.json). Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
    echo "tests/ui: /usr/bin/chromium is missing and apt-get needs root: install Debian's chromium package" >&2
    exit 1
  fi
  echo "tests/ui: installing Debian's chromium (apt-get)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if ! command -v npm >/dev/null; then
  echo "tests/ui: npm is missing: install Node.js 18 or newer" >&2
  exit 1
fi
cd "$here"
npm ci --no-audit --no-fund --loglevel=error
