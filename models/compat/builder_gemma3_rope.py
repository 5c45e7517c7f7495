#!/usr/bin/env python3
"""onnxruntime-genai's model builder, unchanged, with one adapter for Gemma 3 configs read by
transformers 5 (compat check 4's fallback; check_builder.py records when it was needed).

Why: transformers 5 stores Gemma 3's RoPE settings per layer type,
    config.rope_parameters = {"full_attention": {"rope_theta": 1e6, "rope_type": "default"},
                              "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"}}
while the builder's Gemma3Model (onnxruntime-genai 0.18) reads the flat transformers-4 form:
`config.rope_parameters["rope_type"]` (base.make_rope_init raises KeyError 'rope_type' on the
nested dict) and `config.rope_local_base_freq` for the sliding layers' rotary cache. The
builder itself needs transformers 5 (it imports Qwen3_5ForConditionalGeneration), so neither
transformers version runs it on Gemma 3 as is.

What this does: wraps `transformers.AutoConfig.from_pretrained` so that a Gemma 3 text config
with nested rope_parameters comes back in the flat form (rope_parameters = the full-attention
entry, rope_theta from it, rope_local_base_freq = the sliding-attention entry's rope_theta),
which is exactly what transformers 4.57 gives for the same model, then runs the builder module
as `python -m onnxruntime_genai.models.builder` would, with the same arguments.

Usage: python models/compat/builder_gemma3_rope.py -i HF_DIR -o OUT -p fp32 -e cpu [...]
"""

from __future__ import annotations

import runpy
import sys

import transformers

_original = transformers.AutoConfig.from_pretrained.__func__


def _flat_gemma3(cls, *args, **kwargs):
    config = _original(cls, *args, **kwargs)
    targets = [config] + ([config.text_config] if hasattr(config, "text_config") else [])
    for c in targets:
        rope = getattr(c, "rope_parameters", None)
        if isinstance(rope, dict) and "full_attention" in rope and "sliding_attention" in rope:
            full, local = rope["full_attention"], rope["sliding_attention"]
            print(f"builder_gemma3_rope: flattening nested rope_parameters {rope} -> {full}, "
                  f"rope_local_base_freq={local['rope_theta']}", file=sys.stderr)
            c.rope_parameters = dict(full)
            c.rope_theta = full["rope_theta"]
            c.rope_local_base_freq = local["rope_theta"]
    return config


transformers.AutoConfig.from_pretrained = classmethod(_flat_gemma3)

if __name__ == "__main__":
    sys.argv[0] = "builder.py"
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)
