"""int8 linears on ONNX Runtime's integer GEMM, and the SmoothQuant folding that prepares them.

Shared by export_smollm2.py (`--weights int8`, the policy) and export_judge.py (`--weights
int8`, the judge). One linear y = x @ W.T becomes

    W  -> int8 codes, one symmetric scale per output channel      (stored, [K, N] for MatMulInteger)
    x  -> uint8 per row on the fly: s = max|x_row| / 127, q = round(x / s) + 128
    y  =  (MatMulInteger(q, codes, zero point 128) as float) * s * w_scale

ONNX Runtime fuses the tail into MatMulIntegerToFloat and runs the GEMM on its u8 x s8 kernels
(VNNI / AMX where the CPU has them): 3-4x the float32 MatMul's throughput for prefill-sized
inputs on a 2-vCPU Sapphire Rapids (docs/quantization.md). A per-row activation scale is what
this graph form allows (MatMulInteger takes one activation zero point, and a per-block scale
would split the K sum); how much that costs in quality is the gate's job, per role.
"""

from __future__ import annotations

import numpy as np

INT8_ZERO = 128


def int8_codes(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w [N, K] float -> (codes int8 [N, K] in -127..127, scales float32 [N]): w ~ codes * scale."""
    scale = (np.maximum(np.abs(w).max(1), 1e-30) / 127.0).astype(np.float32)
    codes = np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8)
    return codes, scale


def add_int8_linear(node, init, has_init, x: str, name: str, w: np.ndarray, out: str) -> int:
    """Appends `out = x @ w.T` (x [..., K], w [N, K]) in the form above through the exporter's
    `node(op, inputs, outputs, **attrs)` / `init(name, array)` helpers; `has_init(name)` says
    whether a shared constant is already stored. Returns the bytes it stored."""
    from onnx import TensorProto

    codes, w_scale = int8_codes(w)
    wq = init(name + ".qweight_t", np.ascontiguousarray(codes.T))
    ws = init(name + ".wscale", w_scale)
    if not has_init("int8.zero"):
        init("int8.zero", np.array(INT8_ZERO, np.uint8))
        init("int8.zero_f", np.array(float(INT8_ZERO), np.float32))
        init("int8.inv127", np.array(1.0 / 127.0, np.float32))
        init("int8.tiny", np.array(1e-30, np.float32))  # an all-zero row: scale 1e-30, codes 128
        init("int8.axes_last", np.array([-1], np.int64))
    node("Abs", [x], [out + ".xabs"])
    node("ReduceMax", [out + ".xabs", "int8.axes_last"], [out + ".xmax"], keepdims=1)
    node("Mul", [out + ".xmax", "int8.inv127"], [out + ".xscale0"])
    node("Max", [out + ".xscale0", "int8.tiny"], [out + ".xscale"])
    node("Div", [x, out + ".xscale"], [out + ".xdiv"])
    node("Round", [out + ".xdiv"], [out + ".xround"])
    node("Add", [out + ".xround", "int8.zero_f"], [out + ".xshift"])
    node("Cast", [out + ".xshift"], [out + ".xq"], to=TensorProto.UINT8)
    node("MatMulInteger", [out + ".xq", wq, "int8.zero"], [out + ".acc"])
    node("Cast", [out + ".acc"], [out + ".accf"], to=TensorProto.FLOAT)
    node("Mul", [out + ".accf", out + ".xscale"], [out + ".rows"])
    node("Mul", [out + ".rows", ws], [out])
    return int(codes.nbytes + w_scale.nbytes)


# Calibration text for the smoothing: chat questions unlike models/parity.py's (a gate must not
# see its own data), each followed by one plain paragraph as the answer.
CALIBRATION_QUESTIONS = [
    "How do I make a good cup of coffee at home?",
    "Summarize the plot of a detective story in three sentences.",
    "What are the pros and cons of working from home?",
    "Write a short poem about autumn leaves.",
    "Explain what a hash table is to a beginner programmer.",
    "Give me a recipe for a simple vegetable soup.",
    "Why do cats purr? Give two possible reasons.",
    "Translate 'good morning, how are you?' into Spanish and German.",
]
CALIBRATION_ANSWER = (
    "Sure! Here is a clear and friendly answer. First, start with the basics and make sure you "
    "understand each step before moving on. Second, practice a little every day; small, steady "
    "progress adds up. Finally, ask for feedback, compare your results, and adjust. 1. Plan. "
    "2. Do. 3. Check. 4. Improve. Numbers like 42, 3.14 and 2024 appear too."
)


def _factor(act_peak: np.ndarray, w_peak: np.ndarray, alpha: float) -> np.ndarray:
    f = np.power(np.maximum(act_peak, 1e-5), alpha) / np.power(np.maximum(w_peak, 1e-5), 1.0 - alpha)
    return np.clip(f, 1e-2, 1e2).astype(np.float32)


def smooth(m, calibration_ids: list[list[int]], forward, alpha: float, head: bool) -> dict:
    """SmoothQuant (Xiao et al., 2023) folded into `m.weights` (GGUF names) before int8
    quantization: input channel j of each linear is divided by s_j = max|x_j|^alpha /
    max|W_:,j|^(1-alpha) and the weight's column j multiplied by it, moving activation outliers
    into the weights. The division is folded into what produces the input (the RMSNorm weights,
    V's rows for the output projection, up's rows for down), so the model computes the same
    function in exact arithmetic. `forward(m, ids, capture=stats)` records each linear input's
    per-channel peak. `head`: also smooth the unembedding (a separate `output.weight` copy;
    the tied embedding table itself is left alone). Each changed weight is replaced by a new
    array, never written into, so a copy of the `m.weights` dict taken before keeps the
    originals. Returns the calibration summary."""
    stats: dict = {}
    for ids in calibration_ids:
        forward(m, ids, capture=stats)
    w = m.weights
    group, hd = m.n_heads // m.n_kv_heads, m.head_dim
    for i in range(m.n_layers):
        p = f"blk.{i}."
        qkv = [p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"]
        f = _factor(stats[(i, "qkv")], np.abs(np.concatenate([w[t] for t in qkv], 0)).max(0), alpha)
        w[p + "attn_norm.weight"] = w[p + "attn_norm.weight"] / f
        for t in qkv:
            w[t] = w[t] * f[None, :]
        # the output projection's input channel h*hd+d is V's row g*hd+d for g = h // group:
        # one factor per V row, from the peaks over the group's heads
        o_peak = stats[(i, "o")].reshape(m.n_kv_heads, group, hd).max(1)
        wo = w[p + "attn_output.weight"].reshape(-1, m.n_kv_heads, group, hd)
        fv = _factor(o_peak, np.abs(wo).max(axis=(0, 2)), alpha)  # [kv, hd]
        w[p + "attn_v.weight"] = w[p + "attn_v.weight"] / fv.reshape(-1)[:, None]
        w[p + "attn_output.weight"] = (wo * fv[None, :, None, :]).reshape(w[p + "attn_output.weight"].shape)
        gate_up = [p + "ffn_gate.weight", p + "ffn_up.weight"]
        f = _factor(stats[(i, "gate_up")], np.abs(np.concatenate([w[t] for t in gate_up], 0)).max(0), alpha)
        w[p + "ffn_norm.weight"] = w[p + "ffn_norm.weight"] / f
        for t in gate_up:
            w[t] = w[t] * f[None, :]
        f = _factor(stats[(i, "down")], np.abs(w[p + "ffn_down.weight"]).max(0), alpha)
        w[p + "ffn_up.weight"] = w[p + "ffn_up.weight"] / f[:, None]
        w[p + "ffn_down.weight"] = w[p + "ffn_down.weight"] * f[None, :]
    if head:
        unembed = w.get("output.weight", w["token_embd.weight"])
        f = _factor(stats["head"], np.abs(unembed).max(0), alpha)
        w["output_norm.weight"] = w["output_norm.weight"] / f
        w["output.weight"] = unembed * f[None, :]
    return {"method": "SmoothQuant", "alpha": alpha, "calibration_sequences": len(calibration_ids),
            "calibration_positions": int(sum(len(ids) for ids in calibration_ids))}
