#!/usr/bin/env python3
"""Check that onnxruntime-genai (our benchmark peer) loads and runs the exported folder.

Usage: python models/check_genai.py [MODEL_DIR]
Prints the greedy answer to "What is the capital of France?" and exits non-zero
when genai cannot load the folder or the answer does not name Paris.
"""
import sys
from pathlib import Path

import onnxruntime_genai as og

model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent / "smollm2-135m-instruct")
model = og.Model(str(model_dir))
tokenizer = og.Tokenizer(model)
prompt = tokenizer.apply_chat_template('[{"role": "user", "content": "What is the capital of France?"}]', add_generation_prompt=True)
params = og.GeneratorParams(model)
params.set_search_options(max_length=128, do_sample=False)
generator = og.Generator(model, params)
generator.append_tokens(tokenizer.encode(prompt))
out = []
while not generator.is_done():
    generator.generate_next_token()
    out.append(generator.get_next_tokens()[0])
answer = tokenizer.decode(out)
print(f"onnxruntime-genai {og.__version__}: {answer!r}")
sys.exit(0 if "Paris" in answer else 1)
