#!/usr/bin/env python3
"""llama.cpp (through llama-cpp-python's low-level API) as a `tpo bench peers` worker.

Usage: llama_cpp_peer.py --model FILE.gguf --threads N [--max-batch 16]

A long-lived worker speaking JSON lines on stdin/stdout (the protocol in benches/peers/README.md):
it loads the GGUF once, prints a ready line, then answers one request per line:

    {"op": "generate", "prompt_ids": [...], "batch": B, "tokens": T}
    -> {"ok": true, "batch": B, "tokens": T, "prompt_tokens": P,
        "prefill_seconds": s, "total_seconds": s, "first_ids": [...]}

B copies of the prompt go into one llama_batch as B sequences (prefilled together), then
T greedy steps decode all B sequences in one llama_decode each; EOS is ignored so every
engine does the same work. The KV memory is cleared before each request. Greedy is an
argmax over each sequence's logits with numpy (a sampler chain would add the same small
cost to every step). `{"op": "quit"}` or end of input exits; a bad request gets
{"ok": false, "error": "..."} and the worker goes on.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time

import numpy as np

import llama_cpp


def reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Worker:
    def __init__(self, path: str, threads: int, max_batch: int, ctx_per_seq: int) -> None:
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        self.model = llama_cpp.llama_model_load_from_file(path.encode(), mparams)
        if not self.model:
            raise RuntimeError(f"cannot load {path}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.max_batch = max_batch
        self.ctx_per_seq = ctx_per_seq
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = max_batch * ctx_per_seq
        cparams.n_batch = max_batch * ctx_per_seq
        cparams.n_ubatch = 512
        cparams.n_seq_max = max_batch
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise RuntimeError("cannot create a llama_context")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(max_batch * ctx_per_seq, 0, max_batch)

    def _fill(self, entries: list[tuple[int, int, int, bool]]) -> None:
        b = self.batch
        b.n_tokens = len(entries)
        for i, (token, pos, seq, want) in enumerate(entries):
            b.token[i] = token
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = want

    def _argmax(self, i: int) -> int:
        ptr = llama_cpp.llama_get_logits_ith(self.ctx, i)
        row = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,))
        return int(row.argmax())

    def generate(self, ids: list[int], batch: int, tokens: int) -> dict:
        if batch < 1 or batch > self.max_batch:
            raise ValueError(f"batch {batch} is outside 1..{self.max_batch} (--max-batch)")
        if tokens < 1 or len(ids) == 0 or len(ids) + tokens > self.ctx_per_seq:
            raise ValueError(f"prompt {len(ids)} + tokens {tokens} must be positive and fit {self.ctx_per_seq}")
        if any(not isinstance(t, int) or t < 0 or t >= self.n_vocab for t in ids):
            raise ValueError("prompt_ids must be token ids of this vocabulary")
        llama_cpp.llama_memory_clear(self.memory, True)
        p = len(ids)
        started = time.perf_counter()
        self._fill([(t, pos, s, pos == p - 1) for s in range(batch) for pos, t in enumerate(ids)])
        if llama_cpp.llama_decode(self.ctx, self.batch) != 0:
            raise RuntimeError("llama_decode failed in prefill")
        last = [self._argmax(s * p + p - 1) for s in range(batch)]
        prefilled = time.perf_counter()
        first = [last[0]]
        for step in range(1, tokens):
            self._fill([(last[s], p + step - 1, s, True) for s in range(batch)])
            if llama_cpp.llama_decode(self.ctx, self.batch) != 0:
                raise RuntimeError("llama_decode failed in decode")
            last = [self._argmax(s) for s in range(batch)]
            first.append(last[0])
        done = time.perf_counter()
        return {"ok": True, "batch": batch, "tokens": tokens, "prompt_tokens": p,
                "prefill_seconds": prefilled - started, "total_seconds": done - started,
                "first_ids": first}


def built_for() -> str:
    """The CPU features this llama.cpp build uses, from its system info line
    ("CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | ..."): what `make bench-setup` compiled in."""
    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    on = [part.split("=")[0].strip() for part in info.split("|") if part.strip().endswith("= 1")]
    return " ".join(name.split(":")[-1].strip() for name in on) or "no CPU features reported"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--ctx-per-seq", type=int, default=1024)
    args = parser.parse_args()
    try:
        worker = Worker(args.model, args.threads, args.max_batch, args.ctx_per_seq)
    except Exception as e:  # noqa: BLE001 - reported to the bench, which names the peer
        reply({"ready": False, "error": f"{type(e).__name__}: {e}"})
        sys.exit(1)
    reply({"ready": True, "peer": "llama.cpp", "version": f"llama-cpp-python {llama_cpp.__version__} ({built_for()})",
           "model": args.model, "weights_bytes": os.path.getsize(args.model), "threads": args.threads})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            if req.get("op") == "quit":
                break
            if req.get("op") != "generate":
                raise ValueError(f"unknown op {req.get('op')!r}")
            reply(worker.generate(list(req["prompt_ids"]), int(req["batch"]), int(req["tokens"])))
        except Exception as e:  # noqa: BLE001 - a bad request is an answer, not a crash
            reply({"ok": False, "error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
