#!/usr/bin/env python3
"""Choose the SmolLM2 judge's prompt by measured pairwise accuracy.

For each candidate judging prompt (user template(s) + assistant prefix) this scores the first
--limit AlpacaEval pairs (data/alpaca_eval/pairs.jsonl: chosen = GPT-4-Turbo answer, rejected =
a short answer) with ONNX Runtime over the exported judge graph (models/smollm2-judge, batch
size 1, no truncation) and reports:

  accuracy  share of pairs with judge(chosen) > judge(rejected)
  margin    mean of judge(chosen) - judge(rejected)

A candidate with several user templates is the mean of their scores (what the engine does with
several `user_templates`). Caveat printed with the table: on this set the chosen answer is
almost always much longer, so a length-only rule already scores close to 1.0; accuracy on the
first rows shows that a prompt is not broken, not that the judge is good. `--select
chosen-not-longer` scores the few pairs (24 of 805) where the chosen answer is not longer:
the length-free check.

    .venv/bin/python models/judge_prompt_study.py --limit 60 --cache /tmp/judge_study_cache.jsonl
    .venv/bin/python models/judge_prompt_study.py --select chosen-not-longer --cache /tmp/judge_study_cache.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(MODELS_DIR))

from export_judge import DEFAULT_OUT, JudgeSession, render_judge_text  # noqa: E402

ROOT = MODELS_DIR.parent

# name -> (user template, assistant prefix): each is scored on its own.
SINGLE = {
    "naive_correct": (
        "{{ question }}\n\n{{ answer }}\n\nIs this answer correct? Answer Yes or No.", ""),
    "helpful_qa": (
        "Question: {{ question }}\n\nAnswer: {{ answer }}\n\n"
        "Is this answer helpful, accurate and well explained? Reply Yes or No.", ""),
    "helpful_qa_prefix": (
        "Question: {{ question }}\n\nAnswer: {{ answer }}\n\n"
        "Is this answer helpful, accurate and well explained? Reply Yes or No.", "Answer:"),
    "strict_grader": (
        "You are a strict teacher grading a student's answer.\n\n"
        "### Question\n{{ question }}\n\n### Student's answer\n{{ answer }}\n\n"
        "### Task\nIs the student's answer helpful, accurate and well explained? Reply with Yes or No only.", ""),
    "good_response": (
        "Here is a question and a response.\n\nQuestion: {{ question }}\n\nResponse: {{ answer }}\n\n"
        "Is this a good, complete response to the question? Yes or No?", ""),
    "answer_first": (
        "Read this answer:\n\n{{ answer }}\n\n"
        "Does it fully and correctly answer the question \"{{ question }}\"? Answer Yes or No.", ""),
}
# name -> members whose scores are averaged (all members share the assistant prefix "").
MEANS = {
    "mean(helpful_qa,strict_grader,good_response)": ["helpful_qa", "strict_grader", "good_response"],
    "mean(helpful_qa,strict_grader)": ["helpful_qa", "strict_grader"],
    "mean(all prefix-less)": ["naive_correct", "helpful_qa", "strict_grader", "good_response", "answer_first"],
}


def key(template: str, prefix: str) -> str:
    return hashlib.sha256(json.dumps([template, prefix]).encode()).hexdigest()[:12]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--input", type=Path, default=ROOT / "data/alpaca_eval/pairs.jsonl")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--select", choices=["first", "chosen-not-longer"], default="first",
                        help="first: the first --limit rows; chosen-not-longer: the rows (up to --limit) where the "
                             "chosen answer has no more characters than the rejected one, i.e. where the "
                             "length-only rule fails (the length-free check)")
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0 = ORT default)")
    parser.add_argument("--only", nargs="*", help="score only these single candidates (means need their members)")
    parser.add_argument("--cache", type=Path, help="jsonl of already computed scores (read and appended)")
    parser.add_argument("--output", type=Path, help="write the results table as JSON here")
    args = parser.parse_args()

    judge = JudgeSession(args.model_dir, args.threads)
    rows = [json.loads(line) for line in args.input.open()]
    if args.select == "chosen-not-longer":
        rows = [r for r in rows if len(r["chosen"]) <= len(r["rejected"]) and r["chosen"] != r["rejected"]]
    rows = rows[: args.limit]
    cache: dict[tuple, float] = {}
    if args.cache and args.cache.is_file():
        for line in args.cache.open():
            r = json.loads(line)
            cache[(r["key"], r["id"], r["which"])] = r["score"]
    cache_out = args.cache.open("a") if args.cache else None

    singles = {k: v for k, v in SINGLE.items() if not args.only or k in args.only}
    scores: dict[str, np.ndarray] = {}  # name -> [n, 2] (chosen, rejected)
    tokens: dict[str, np.ndarray] = {}
    for name, (template, prefix) in singles.items():
        ck = key(template, prefix)
        s = np.zeros((len(rows), 2))
        t = np.zeros((len(rows), 2), np.int64)
        t0, runs = time.time(), 0
        for i, row in enumerate(rows):
            for j, which in enumerate(("chosen", "rejected")):
                text = render_judge_text(judge.chat, template, row["prompt"], row[which], prefix)
                ids = judge.encode(text)
                t[i, j] = len(ids)
                if (ck, row["id"], which) in cache:
                    s[i, j] = cache[(ck, row["id"], which)]
                    continue
                s[i, j] = judge.score_ids(ids)
                runs += 1
                if cache_out:
                    cache_out.write(json.dumps({"key": ck, "id": row["id"], "which": which, "score": s[i, j]}) + "\n")
                    cache_out.flush()
        scores[name], tokens[name] = s, t
        print(f"  {name}: acc {np.mean(s[:, 0] > s[:, 1]):.3f}  ({runs} runs, {time.time() - t0:.0f}s)", file=sys.stderr)
    for name, members in MEANS.items():
        if all(m in scores for m in members):
            scores[name] = np.mean([scores[m] for m in members], axis=0)

    n = len(rows)
    chars = np.array([[len(r["chosen"]), len(r["rejected"])] for r in rows])
    length_acc = float(np.mean(chars[:, 0] > chars[:, 1]))
    baked = judge.config.get("judge", {})
    baked = (list(baked.get("user_templates", [])), baked.get("assistant_prefix", ""))
    results = []
    for name, s in scores.items():
        members = MEANS.get(name, [name])
        margin = s[:, 0] - s[:, 1]
        results.append({
            "candidate": name,
            "in_reward_config": ([SINGLE[m][0] for m in members], SINGLE[members[0]][1]) == baked,
            "accuracy": float(np.mean(margin > 0)),
            "mean_margin": float(margin.mean()),
            "mean_chosen": float(s[:, 0].mean()),
            "mean_rejected": float(s[:, 1].mean()),
            "share_chosen_yes": float(np.mean(s[:, 0] > 0)),
            "share_rejected_yes": float(np.mean(s[:, 1] > 0)),
            # how much of the score is answer length: correlation over all 2n answers
            "corr_with_chars": float(np.corrcoef(s.ravel(), chars.ravel())[0, 1]),
        })
    results.sort(key=lambda r: (r["accuracy"], r["mean_margin"]), reverse=True)

    print(f"\npairs: {n} ({args.select} rows of {args.input})")
    print(f"{'  candidate':48s} {'acc':>6s} {'margin':>7s} {'chosen':>7s} {'reject':>7s} {'ch>0':>5s} {'rj>0':>5s} {'r(len)':>6s}")
    for r in results:
        mark = "* " if r["in_reward_config"] else "  "
        print(f"{mark + r['candidate']:48s} {r['accuracy']:6.3f} {r['mean_margin']:7.3f} {r['mean_chosen']:7.3f} "
              f"{r['mean_rejected']:7.3f} {r['share_chosen_yes']:5.2f} {r['share_rejected_yes']:5.2f} {r['corr_with_chars']:6.2f}")
    print(f"{'  length-only rule (longer answer wins)':48s} {length_acc:6.3f}")
    print(f"(* = the prompt in {args.model_dir}/reward_config.json)")
    if args.select == "first":
        ratio = chars[:, 0].sum() / max(chars[:, 1].sum(), 1)
        print(f"caveat: the chosen answers are {ratio:.1f}x longer than the rejected ones here, so a length-only "
              f"rule already scores {length_acc:.3f}; this table tells broken prompts from working ones, not a "
              "good judge from a mediocre one (--select chosen-not-longer is the length-free check).")
    else:
        print("these are the pairs where the chosen answer is not longer (a length-only rule scores "
              f"{length_acc:.3f}): accuracy here is what the judge knows beyond length.")
    if args.output:
        args.output.write_text(json.dumps({
            "pairs": n, "select": args.select, "input": str(args.input), "length_rule_accuracy": length_acc,
            "candidates": {k: {"user_templates": [SINGLE[m][0] for m in MEANS.get(k, [k])],
                               "assistant_prefix": SINGLE[MEANS.get(k, [k])[0]][1]} for k in scores},
            "results": results,
        }, indent=2))


if __name__ == "__main__":
    main()
