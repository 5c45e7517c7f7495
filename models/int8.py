"""int8 linears on ONNX Runtime's integer GEMM, with calibrated outlier channels kept in float32.

Shared by export_smollm2.py (`--weights int8`, the policy), export_judge.py (`--weights int8`,
the judge) and export_minilm.py (`--weights int8`, the encoder). One linear y = x @ W.T becomes

    W  -> int8 codes, one symmetric scale per output channel      (stored, [K, N] for MatMulInteger)
    x  -> its outlier channels O (a few input channels that calibration saw peak) go apart;
          the rest quantized to uint8 per row on the fly: s = max|x_row| / 127, q = round(x / s) + 128
    y  =  (MatMulInteger(q, codes, zero point 128) as float) * s * w_scale  +  x[:, O] @ W[:, O].T

ONNX Runtime fuses the integer tail into MatMulIntegerToFloat and runs the GEMM on its u8 x s8
kernels (VNNI / AMX where the CPU has them). A per-row activation scale is what this graph form
allows (MatMulInteger takes one activation zero point, and a per-block scale would split the K
sum), so the few channels whose peaks would set that scale (LLM.int8()'s "outlier features",
Dettmers et al., 2022) take a small float32 MatMul instead, and the row's scale is set by the
rest. For the SmolLM2 policy and judge, RECIPE says which linears go int8 at all: the MLP's
down projection, whose outliers follow the token rather than the channel, stays float32, as do
the embedding and the unembedding (docs/quantization.md has the ablations behind each choice).
"""

from __future__ import annotations

import numpy as np

INT8_ZERO = 128


def int8_codes(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w [N, K] float -> (codes int8 [N, K] in -127..127, scales float32 [N]): w ~ codes * scale."""
    scale = (np.maximum(np.abs(w).max(1), 1e-30) / 127.0).astype(np.float32)
    codes = np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8)
    return codes, scale


def add_int8_linear(node, init, has_init, x: str, name: str, w: np.ndarray, out: str,
                    outliers: np.ndarray | None = None) -> int:
    """Appends `out = x @ w.T` (x [..., K], w [N, K]) in the form above through the exporter's
    `node(op, inputs, outputs, **attrs)` / `init(name, array)` helpers; `has_init(name)` says
    whether a shared constant is already stored. `outliers`: input channels kept in float32
    (none when None or empty). Returns the bytes it stored."""
    from onnx import TensorProto

    split = outliers is not None and len(outliers) > 0
    inliers = w
    if split:
        inliers = w.copy()
        inliers[:, outliers] = 0.0  # their codes are never used: x is zeroed there
    codes, w_scale = int8_codes(inliers)
    wq = init(name + ".qweight_t", np.ascontiguousarray(codes.T))
    ws = init(name + ".wscale", w_scale)
    stored = int(codes.nbytes + w_scale.nbytes)
    if not has_init("int8.zero"):
        init("int8.zero", np.array(INT8_ZERO, np.uint8))
        init("int8.zero_f", np.array(float(INT8_ZERO), np.float32))
        init("int8.inv127", np.array(1.0 / 127.0, np.float32))
        init("int8.tiny", np.array(1e-30, np.float32))  # an all-zero row: scale 1e-30, codes 128
        init("int8.axes_last", np.array([-1], np.int64))
    xin = x
    if split:
        mask = np.ones(w.shape[1], np.float32)
        mask[outliers] = 0.0
        xin = node("Mul", [x, init(name + ".inlier_mask", mask)], [out + ".xin"])[0]
        picked = node("Gather", [x, init(name + ".outlier_channels", outliers.astype(np.int64))],
                      [out + ".xout"], axis=-1)[0]
        w_out = np.ascontiguousarray(w[:, outliers].T)
        node("MatMul", [picked, init(name + ".outlier_weight_t", w_out)], [out + ".yout"])
        stored += int(mask.nbytes + outliers.size * 8 + w_out.nbytes)
    node("Abs", [xin], [out + ".xabs"])
    node("ReduceMax", [out + ".xabs", "int8.axes_last"], [out + ".xmax"], keepdims=1)
    node("Mul", [out + ".xmax", "int8.inv127"], [out + ".xscale0"])
    node("Max", [out + ".xscale0", "int8.tiny"], [out + ".xscale"])
    node("Div", [xin, out + ".xscale"], [out + ".xdiv"])
    node("Round", [out + ".xdiv"], [out + ".xround"])
    node("Add", [out + ".xround", "int8.zero_f"], [out + ".xshift"])
    node("Cast", [out + ".xshift"], [out + ".xq"], to=TensorProto.UINT8)
    node("MatMulInteger", [out + ".xq", wq, "int8.zero"], [out + ".acc"])
    node("Cast", [out + ".acc"], [out + ".accf"], to=TensorProto.FLOAT)
    node("Mul", [out + ".accf", out + ".xscale"], [out + ".rows"])
    node("Mul", [out + ".rows", ws], [out + ".yint" if split else out])
    if split:
        node("Add", [out + ".yint", out + ".yout"], [out])
    return stored


# Which of a SmolLM2 layer's linears go int8, and the fraction of each one's input channels kept
# in float32 as outliers (the highest calibration peaks). A role not listed stays float32: the
# MLP's down projection (int8 with 10 % outlier channels still cost KL 0.003 alone, most of the
# gate's budget), the embedding and the unembedding. docs/quantization.md has the ablation.
RECIPE = {"qkv": 0.03, "o": 0.0, "gate_up": 0.03}


def outlier_channels(peak: np.ndarray, fraction: float) -> np.ndarray:
    """The round(fraction * K) input channels with the highest calibration peaks, sorted."""
    count = int(round(fraction * peak.size))
    if count == 0:
        return np.zeros(0, np.int64)
    return np.sort(np.argsort(peak, kind="stable")[-count:]).astype(np.int64)


class Plan:
    """The int8 recipe applied to one model: `channels(layer, role)` is None where the linear
    stays float32, else its outlier channels (possibly none). Built from the per-channel input
    peaks `forward(m, ids, capture=peaks)` records over the calibration text."""

    def __init__(self, m, calibration_ids: list[list[int]], forward):
        self.peaks: dict = {}
        for ids in calibration_ids:
            forward(m, ids, capture=self.peaks)
        self.positions = int(sum(len(ids) for ids in calibration_ids))

    def channels(self, layer: int, role: str) -> np.ndarray | None:
        if role not in RECIPE:
            return None
        return outlier_channels(self.peaks[(layer, role)], RECIPE[role])

    def summary(self) -> dict:
        return {"method": "per-row int8 activations with calibrated float32 outlier channels",
                "int8_roles": {role: f"{fraction:.0%} outlier channels" for role, fraction in RECIPE.items()},
                "float32": "down projection, embedding, unembedding",
                "calibration_sequences": len(CALIBRATION_QUESTIONS), "calibration_positions": self.positions}


# Calibration text for the outlier channels: chat questions unlike models/parity.py's (a gate must not
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
