#!/usr/bin/env python3
"""Batch-1 decode speed of exported folders under onnxruntime-genai (docs/int4.md).

Usage: python models/bench_genai.py DIR [DIR ...] [--rounds 5] [--tokens 128] [--threads 2]

Loads every folder once (session_options.intra_op_num_threads overlaid through og.Config,
so the folders' genai_config.json stay as exported), then runs the rounds interleaved
(A, B, ..., A, B, ...): each run appends the same chat prompt (the prefill, timed apart)
and generates exactly --tokens greedy tokens (min_length keeps EOS from ending it early).
Prints per-round decode tokens/s and the median per folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import onnxruntime_genai as og

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def load(path: Path, threads: int):
    config = og.Config(str(path))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)
    text = tokenizer.apply_chat_template(json.dumps([{"role": "user", "content": PROMPT}]), add_generation_prompt=True)
    return model, tokenizer.encode(text)


def run_once(model, prompt_ids, tokens: int) -> tuple[float, float]:
    """(prefill seconds, decode tokens/s) of one generation of `tokens` tokens."""
    params = og.GeneratorParams(model)
    total = len(prompt_ids) + tokens
    params.set_search_options(max_length=total, min_length=total, do_sample=False)
    generator = og.Generator(model, params)
    t0 = time.perf_counter()
    generator.append_tokens(prompt_ids)
    t1 = time.perf_counter()
    n = 0
    while not generator.is_done():
        generator.generate_next_token()
        n += 1
    t2 = time.perf_counter()
    # the first generate_next_token only samples from the prefill's logits; the other n-1 run the model
    return t1 - t0, (n - 1) / (t2 - t1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", type=Path, nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    models = [load(d, args.threads) for d in args.dirs]
    for model, ids in models:  # warm-up (allocations, prepacking)
        run_once(model, ids, 8)
    results: dict[Path, list[tuple[float, float]]] = {d: [] for d in args.dirs}
    for r in range(args.rounds):
        for d, (model, ids) in zip(args.dirs, models):
            prefill, tps = run_once(model, ids, args.tokens)
            results[d].append((prefill, tps))
            print(f"round {r + 1} {d}: decode {tps:6.1f} tok/s, prefill {1000 * prefill:6.1f} ms ({len(ids)} tokens)",
                  flush=True)
    print(f"onnxruntime-genai {og.__version__}, {args.threads} threads, batch 1, {args.tokens} new tokens, "
          f"{args.rounds} interleaved rounds; medians:")
    for d, runs in results.items():
        print(f"  {d}: decode {statistics.median(t for _, t in runs):6.1f} tok/s, "
              f"prefill {1000 * statistics.median(p for p, _ in runs):6.1f} ms")


if __name__ == "__main__":
    main()
