#!/usr/bin/env python3
"""Reference tokenization and chat rendering with the Python `tokenizers` and `jinja2`
packages, for the Rust parity tests.

stdin:  {"model_dir": DIR, "texts": [str], "conversations": [[{"role","content"}]]}
stdout: {"ids": [[int]], "chat": [str]}
"""
import json
import sys
from pathlib import Path

import jinja2
from tokenizers import Tokenizer

request = json.load(sys.stdin)
model_dir = Path(request["model_dir"])
tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
template = jinja2.Environment().from_string((model_dir / "chat_template.jinja").read_text())
json.dump({
    "ids": [tokenizer.encode(t, add_special_tokens=False).ids for t in request["texts"]],
    "chat": [template.render(messages=c, add_generation_prompt=True) for c in request["conversations"]],
}, sys.stdout)
