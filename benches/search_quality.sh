#!/usr/bin/env bash
# The step-4 quality study: greedy, Best-of-N (N = 5 and 19), TPO D2-N5 and DARWIN on the
# first 50 AlpacaEval instructions, each guided by the embedded judge RM and by the
# similarity RM against the GPT-4-Turbo answers; then `tpo bench quality` writes the
# tables and best-reward-vs-step plots into docs/, and scores every run's final answers with
# the OTHER reward model (a held-out check: does optimizing one RM give answers the other
# also prefers?) into docs/search-quality-heldout.md.
#
#   bash benches/search_quality.sh [OUT_DIR]      (after `make setup`; hours on 2 CPU cores)
#
# Every policy call is capped at $TOKENS new tokens (128 by default: the study's budget on a
# 2-core CPU). BoN N=5 is read from the N=19 traces: sample i is seeded seed + i, so the first
# five of N=19 are exactly N=5's samples. A run whose trace already has 50 lines is skipped,
# so the script resumes where it stopped; REPORT_ONLY=1 skips the searches and only writes the
# reports from the traces already in OUT_DIR (a shorter trace is reported over its queries).
# RUNS=tpo (a subset of "greedy bon19 tpo darwin") reruns only those strategies, RMS=judge
# (a subset of "judge similarity") only those guiding reward models: their held-out table
# goes to OUT_DIR/search-quality-heldout.md and docs/ is left alone. QUERIES=N (default 50)
# runs only the first N instructions (a shorter study on a busy machine: a rerun that compares
# two builds must give both the same N).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/search-quality}
TOKENS=${TOKENS:-128}
TPO=${TPO:-target/release/tpo}
QUERIES=${QUERIES:-50}
mkdir -p "$OUT"
[ -n "${REPORT_ONLY:-}" ] || head -n "$QUERIES" data/alpaca_eval/pairs.jsonl > "$OUT/prompts50.jsonl"

run() { # name, then tpo search flags
  local name=$1; shift
  local trace="$OUT/$name.trace.jsonl"
  if [ -n "${REPORT_ONLY:-}" ] || { [ -s "$trace" ] && [ "$(wc -l < "$trace")" -eq "$QUERIES" ]; }; then
    return
  fi
  echo "$(date +%T) $name"
  "$TPO" search --max-new-tokens "$TOKENS" --file "$OUT/prompts50.jsonl" --concurrency "$QUERIES" \
    --output "$OUT/$name.jsonl" --trace "$trace" "$@" 2> "$OUT/$name.log"
}

ALL_RUNS="greedy bon19 tpo darwin"
RUNS=${RUNS:-$ALL_RUNS}
RMS=${RMS:-judge similarity}   # the guiding reward models to run (a subset for a rerun)
wanted() { [[ " $RUNS " == *" $1 "* ]]; }
for rm in $RMS; do
  wanted greedy && run "greedy-$rm" --strategy greedy --reward-model "$rm"
  wanted bon19 && run "bon19-$rm" --strategy bon --width 19 --reward-model "$rm"
  wanted tpo && run "tpo-$rm" --strategy tpo --width 5 --depth 2 --reward-model "$rm"
  wanted darwin && run "darwin-$rm" --strategy darwin --reward-model "$rm"
done
REPORTS=docs
if [ "$RUNS" != "$ALL_RUNS" ] || [ "$RMS" != "judge similarity" ]; then
  REPORTS=$OUT
fi

for rm in judge similarity; do
  [ "$REPORTS" = docs ] || continue
  "$TPO" bench quality \
    --title "Best reward so far, first $QUERIES AlpacaEval instructions ($rm RM, $TOKENS tokens)" \
    --run "greedy=$OUT/greedy-$rm.trace.jsonl" \
    --run "BoN N=5=$OUT/bon19-$rm.trace.jsonl@5" \
    --run "BoN N=19=$OUT/bon19-$rm.trace.jsonl" \
    --run "TPO D2-N5=$OUT/tpo-$rm.trace.jsonl" \
    --run "DARWIN M5 m40 k3 x3=$OUT/darwin-$rm.trace.jsonl" \
    --markdown "docs/search-quality-$rm.md" --json "docs/search-quality-$rm.json" \
    --plot "docs/search-quality-$rm.png"
done

# Held-out: each run's final answers scored by the other reward model (`tpo score`, single
# responses with the GPT-4-Turbo reference). BoN N=5 is the best of each N=19 trace's first 5.
VPY=.venv/bin/python
{
  echo "| guided by | run | held-out RM | answers | mean held-out reward |"
  echo "| --- | --- | --- | ---: | ---: |"
  for rm in $RMS; do
    other=similarity; [ "$rm" = similarity ] && other=judge
    for run in greedy bon19@5 bon19 tpo darwin; do
      name=${run%@*}; first=${run#*@}; [ "$first" = "$run" ] && first=0
      wanted "$name" || continue
      answers="$OUT/$run-$rm.answers.jsonl"
      "$VPY" - "$OUT/$name-$rm.trace.jsonl" "$first" "$OUT/prompts50.jsonl" "$answers" <<'PY'
import json, sys
trace_path, first, prompts_path, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
refs = {}
for line in open(prompts_path):
    row = json.loads(line)
    refs[row["prompt"]] = row["reference"]
with open(out_path, "w") as out:
    for i, line in enumerate(open(trace_path)):
        t = json.loads(line)
        answer = t["final_answer"]
        if first:
            scored = [c for c in t["candidates"] if c["id"] < first and c["score"] is not None]
            answer = max(scored, key=lambda c: (c["score"], -c["id"]))["text"]
        out.write(json.dumps({"id": i, "prompt": t["query"], "response": answer or " ",
                              "reference": refs[t["query"]]}) + "\n")
PY
      "$TPO" score --reward-model "$other" --input "$answers" \
        --output "$OUT/$run-$rm.by-$other.jsonl" --overwrite > /dev/null 2>&1
      "$VPY" - "$OUT/$run-$rm.by-$other.jsonl" "$rm" "$run" "$other" <<'PY'
import json, sys
rewards = [json.loads(l)["reward"] for l in open(sys.argv[1])]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {len(rewards)} | {sum(rewards) / len(rewards):.4f} |")
PY
    done
  done
} > "$REPORTS/search-quality-heldout.md"
cat "$REPORTS/search-quality-heldout.md"
