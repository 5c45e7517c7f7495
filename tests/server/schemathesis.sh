#!/usr/bin/env bash
# Schemathesis against the server's own /openapi.json: starts a small `tpo serve`, runs
# `st run` with the bearer key and a bounded number of examples per operation, stops it.
#   tests/server/schemathesis.sh [extra st args...]
# Env: TPO (binary), ST_EXAMPLES (examples per operation, default 50), ST_MAX_TIME.
#
# Every check runs except positive_data_acceptance ("a schema-valid request must not get
# 4xx"): some rules depend on the running server or on several fields at once and cannot
# be written in the document (the reward models and model ids loaded, stream_options only
# with stream, n and tpo.width at most the KV slots, max_tokens within the context left),
# and JSON Schema's "integer" admits 8.0, which serde refuses for u32 fields.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
TPO="${TPO:-target/release/tpo}"
ST="${ST:-.venv/bin/st}"
EXAMPLES="${ST_EXAMPLES:-50}"
LOGDIR=target/server-tests
mkdir -p "$LOGDIR"
LOG="$LOGDIR/schemathesis-server.log"
# Small limits: any request schemathesis makes up finishes in a second or two.
"$TPO" serve --port 0 --api-key test-key --kv-slots 4 --max-seq-len 256 \
    --default-max-tokens 8 --search-width 2 --search-depth 1 --search-max-new-tokens 8 \
    --max-concurrent-requests 4 --max-queue 64 --request-timeout 120 >"$LOG" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true' EXIT
URL=""
for _ in $(seq 1 900); do
    if ! kill -0 "$PID" 2>/dev/null; then echo "server exited:"; cat "$LOG"; exit 1; fi
    URL="$(sed -n 's/.*tpo serve: listening on \(http:[^ ]*\).*/\1/p' "$LOG" | head -1)"
    if [ -n "$URL" ] && curl -sf "$URL/health" >/dev/null; then break; fi
    sleep 0.2
done
[ -n "$URL" ] || { echo "server not ready"; cat "$LOG"; exit 1; }
echo "server at $URL (log: $LOG)"
status=0
"$ST" run "$URL/openapi.json" \
    -H "Authorization: Bearer test-key" \
    --checks all \
    --exclude-checks positive_data_acceptance \
    --max-examples "$EXAMPLES" \
    --seed 1 \
    --workers 2 \
    --request-timeout 60 \
    --max-response-time 60 \
    --generation-database none \
    --report junit --report-dir "$LOGDIR/schemathesis" \
    ${ST_MAX_TIME:+--max-time "$ST_MAX_TIME"} \
    --no-color "$@" || status=$?
if ! kill -0 "$PID" 2>/dev/null; then
    echo "the server died during the run:"; tail -50 "$LOG"; exit 1
fi
if grep -q "panicked" "$LOG"; then echo "the server panicked:"; grep -A5 panicked "$LOG"; status=1; fi
exit $status
