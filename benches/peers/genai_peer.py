#!/usr/bin/env python3
"""onnxruntime-genai as a `tpo bench peers` worker.

Usage: genai_peer.py --model FOLDER --threads N

The same JSON-lines protocol as llama_cpp_peer.py (see benches/peers/README.md): loads the
folder once (intra_op_num_threads overlaid through og.Config, so its genai_config.json stays
as exported), prints a ready line, then answers

    {"op": "generate", "prompt_ids": [...], "batch": B, "tokens": T}

with B copies of the prompt as one batch (batch_size B), greedy, exactly T new tokens
(min_length keeps EOS from ending a row early), timing the prefill (append_tokens) apart.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime_genai as og


def reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("model.onnx"))


def generate(model, ids: list[int], batch: int, tokens: int) -> dict:
    if batch < 1 or tokens < 1 or not ids:
        raise ValueError("batch, tokens and the prompt must be positive")
    params = og.GeneratorParams(model)
    total = len(ids) + tokens
    params.set_search_options(batch_size=batch, max_length=total, min_length=total, do_sample=False)
    generator = og.Generator(model, params)
    prompt = np.array([ids] * batch, dtype=np.int32)
    started = time.perf_counter()
    generator.append_tokens(prompt)
    prefilled = time.perf_counter()
    produced = 0
    while not generator.is_done():
        generator.generate_next_token()
        produced += 1
    done = time.perf_counter()
    sequence = list(generator.get_sequence(0))
    return {"ok": True, "batch": batch, "tokens": produced, "prompt_tokens": len(ids),
            "prefill_seconds": prefilled - started, "total_seconds": done - started,
            "first_ids": [int(t) for t in sequence[len(ids):]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    try:
        config = og.Config(str(args.model))
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": args.threads, "inter_op_num_threads": 1}}}}))
        model = og.Model(config)
    except Exception as e:  # noqa: BLE001 - reported to the bench, which names the peer
        reply({"ready": False, "error": f"{type(e).__name__}: {e}"})
        sys.exit(1)
    reply({"ready": True, "peer": "onnxruntime-genai", "version": f"onnxruntime-genai {og.__version__}",
           "model": str(args.model), "weights_bytes": weights_bytes(args.model), "threads": args.threads})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            if req.get("op") == "quit":
                break
            if req.get("op") != "generate":
                raise ValueError(f"unknown op {req.get('op')!r}")
            reply(generate(model, list(req["prompt_ids"]), int(req["batch"]), int(req["tokens"])))
        except Exception as e:  # noqa: BLE001 - a bad request is an answer, not a crash
            reply({"ok": False, "error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
