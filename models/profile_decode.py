#!/usr/bin/env python3
"""Per-operator profile of the decode step of an exported policy folder under ONNX Runtime's
CPU provider (its built-in profiler), at batch B: where a decode step's time goes inside
the graph. `tpo bench engine` reports the other side, our own share of each step.

Usage: python models/profile_decode.py FOLDER [--batch 16] [--steps 32] [--threads 2]
Prints each operator type's share of the profiled decode steps' node time, and the
mean node time per step.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--prompt", type=int, default=46, help="prompt tokens (prefilled, not profiled)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kv-length", type=int, default=0,
                   help="KV buffer length per sequence (0: prompt + steps + 1; tpo's --max-seq-len is 2048)")
    args = p.parse_args()

    cfg = json.loads((args.folder / "genai_config.json").read_text())["model"]["decoder"]
    layers, kv_heads, head = cfg["num_hidden_layers"], cfg["num_key_value_heads"], cfg["head_size"]
    max_len = args.kv_length or args.prompt + args.steps + 1
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.enable_profiling = True
    so.profile_file_prefix = "/tmp/tpo-decode-profile"
    sess = ort.InferenceSession(str(args.folder / "model.onnx"), so, providers=["CPUExecutionProvider"])
    kv_type = {i.name: i.type for i in sess.get_inputs()}["past_key_values.0.key"]
    dtype = np.float16 if kv_type == "tensor(float16)" else np.float32
    b = args.batch
    cache = {f"past_key_values.{i}.{k}": np.zeros((b, kv_heads, max_len, head), dtype)
             for i in range(layers) for k in ("key", "value")}
    names = [o.name for o in sess.get_outputs()]
    has_keep = any(i.name == "num_logits_to_keep" for i in sess.get_inputs())

    # Past and present KV bound to the same buffers, as tpo's engine binds its arena: the
    # graph appends in place (past_present_share_buffer) and nothing is copied.
    kv = {name: ort.OrtValue.ortvalue_from_numpy(value) for name, value in cache.items()}

    def run(ids: np.ndarray, past: int) -> np.ndarray:
        binding = sess.io_binding()
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", np.ones((b, past + ids.shape[1]), np.int64))
        if has_keep:
            binding.bind_cpu_input("num_logits_to_keep", np.array(1, np.int64))
        binding.bind_output(names[0])  # the logits, first of the outputs copied back
        for name, value in kv.items():
            binding.bind_ortvalue_input(name, value)
            binding.bind_ortvalue_output(name.replace("past_key_values.", "present."), value)
        sess.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0][:, -1]

    rng = np.random.default_rng(0)
    prompt = rng.integers(100, 40000, size=(1, args.prompt)).repeat(b, 0).astype(np.int64)
    logits = run(prompt, 0)
    for step in range(args.steps):
        nxt = logits.argmax(-1).reshape(b, 1).astype(np.int64)
        logits = run(nxt, args.prompt + step)
    trace = json.loads(Path(sess.end_profiling()).read_text())

    runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    decode_runs = runs[1:]  # the first run is the prefill
    start = decode_runs[0]["ts"] if decode_runs else 0
    by_op: dict[str, float] = defaultdict(float)
    for e in trace:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            by_op[e["args"].get("op_name", "?")] += e["dur"]
    node_total = sum(by_op.values())
    run_total = sum(r["dur"] for r in decode_runs)
    print(f"{args.folder.name}: batch {b}, {len(decode_runs)} decode steps, {args.threads} threads, "
          f"KV buffer {max_len} per sequence")
    print(f"mean step {run_total / max(len(decode_runs), 1) / 1e3:.2f} ms (session run), "
          f"node time {node_total / max(len(decode_runs), 1) / 1e3:.2f} ms "
          f"({100 * node_total / max(run_total, 1):.0f} % of the run)")
    for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {op:28} {100 * us / node_total:5.1f} %  {us / max(len(decode_runs), 1) / 1e3:7.3f} ms/step")


if __name__ == "__main__":
    sys.exit(main())
