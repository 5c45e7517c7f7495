#!/usr/bin/env python3
"""Side-by-side timings behind docs/quantization.md: one linear layer's GEMM in each graph
form, and one prefill of whole policy folders, on ONNX Runtime's CPU provider.

Usage:
  python models/bench_int8.py gemm [--threads 2]          # M x K x N shapes of SmolLM2's linears
  python models/bench_int8.py prefill DIR [DIR ...]       # ratios against the first folder

`gemm` times y = x @ W.T (x [M, K] float32) as a float32 MatMul, as models/int8.py's form
(per-channel int8 W, per-row uint8 x on MatMulInteger, quantization included), and as 4- and
8-bit MatMulNBits at accuracy_level 4; rounds interleave, the median round is printed.
`prefill` runs one prompt of 512 tokens and 16 prompts of 46 (random ids, keep 1 logit row)
through each folder's model.onnx, interleaved, and prints tokens/s and the ratio to the first.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import int8  # noqa: E402

ort.set_default_logger_severity(3)
REPEATS = 5  # runs per round and form in `gemm` (each round's mean; the median over rounds)
SHAPES = [(512, 576, 960), (512, 576, 3072), (512, 1536, 576), (16, 576, 3072), (1, 576, 3072)]


def session(model, threads: int):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def gemm_graphs(k: int, n: int, w: np.ndarray) -> dict:
    from onnx import TensorProto, helper, numpy_helper

    def graph(build) -> object:
        nodes, inits = [], []

        def node(op, inputs, outputs, domain="", **attrs):
            nodes.append(helper.make_node(op, inputs, outputs, domain=domain, **attrs))

        def init(name, array):
            inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
            return name

        build(node, init, lambda name: any(t.name == name for t in inits))
        g = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
        model.ir_version = 10
        return model

    def nbits(bits: int):
        blocks = w.reshape(n, k // 32, 32)
        if bits == 8:
            scale = np.abs(blocks).max(2) / 127
            packed = (np.clip(np.round(blocks / scale[..., None]), -128, 127) + 128).astype(np.uint8)
        else:
            scale = np.abs(blocks).max(2) / 7
            q = np.clip(np.round(blocks / scale[..., None]) + 8, 0, 15).astype(np.uint8)
            packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
        return lambda node, init, _: node("MatMulNBits", ["x", init("b", packed), init("s", scale.astype(np.float32).reshape(-1))],
                                          ["y"], domain="com.microsoft", K=k, N=n, bits=bits, block_size=32, accuracy_level=4)

    return {
        "float32 MatMul": graph(lambda node, init, _: node("MatMul", ["x", init("w", w.T)], ["y"])),
        "int8 MatMulInteger (models/int8.py)": graph(lambda node, init, has: int8.add_int8_linear(node, init, has, "x", "w", w, "y")),
        "MatMulNBits 8-bit level 4": graph(nbits(8)),
        "MatMulNBits 4-bit level 4": graph(nbits(4)),
    }


def bench_gemm(threads: int, rounds: int) -> None:
    rng = np.random.default_rng(0)
    for m, k, n in SHAPES:
        w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
        x = rng.standard_normal((m, k)).astype(np.float32)
        sessions = {name: session(g, threads) for name, g in gemm_graphs(k, n, w).items()}
        times = {name: [] for name in sessions}
        for _ in range(rounds):
            for name, s in sessions.items():
                s.run(None, {"x": x})
                t = time.perf_counter()
                for _ in range(REPEATS):
                    s.run(None, {"x": x})
                times[name].append((time.perf_counter() - t) / REPEATS)
        base = float(np.median(times["float32 MatMul"]))
        print(f"M {m}, K {k}, N {n}:")
        for name, ts in times.items():
            t = float(np.median(ts))
            print(f"  {name:38s} {t * 1e3:8.3f} ms  {2 * m * k * n / t / 1e9:7.1f} GOP/s  {base / t:5.2f}x float32")


def bench_prefill(dirs: list[Path], threads: int, rounds: int) -> None:
    rng = np.random.default_rng(0)
    sessions = [session(str(d / "model.onnx"), threads) for d in dirs]
    for batch, length in ((1, 512), (16, 46)):
        times: list[list[float]] = [[] for _ in dirs]
        for _ in range(rounds):
            for i, s in enumerate(sessions):
                feeds = {"input_ids": rng.integers(100, 20000, (batch, length)).astype(np.int64),
                         "attention_mask": np.ones((batch, length), np.int64),
                         "num_logits_to_keep": np.array(1, np.int64)}
                for inp in s.get_inputs():
                    if inp.name.startswith("past_key_values"):
                        dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
                        feeds[inp.name] = np.zeros((batch, inp.shape[1], length, inp.shape[3]), dtype)
                t = time.perf_counter()
                s.run(["logits"], feeds)
                times[i].append(time.perf_counter() - t)
        base = float(np.median(times[0]))
        print(f"prefill {batch} x {length} tokens:")
        for d, ts in zip(dirs, times):
            t = float(np.median(ts))
            print(f"  {str(d):45s} {t * 1e3:8.1f} ms  {batch * length / t:7.0f} tokens/s  {base / t:5.2f}x first")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("gemm", "prefill"))
    parser.add_argument("dirs", nargs="*", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.what == "gemm":
        bench_gemm(args.threads, args.rounds)
    elif not args.dirs:
        sys.exit("error: prefill needs at least one model folder")
    else:
        bench_prefill(args.dirs, args.threads, args.rounds)


if __name__ == "__main__":
    main()
