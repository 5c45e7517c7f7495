#!/usr/bin/env python3
"""Judge rewards from a plain numpy forward pass of the dequantized GGUF (the POLICY's
weights and full unembedding), for the Rust parity test of the exported judge.

stdin: {"judge_dir": DIR, "pairs": [[question, answer], ...]}
stdout: {"scores": [...]}  score = mean over the judge's user templates of
        logits[last, "Yes"] - logits[last, "No"], the prompt rendered exactly as the judge
        folder's reward_config.json says (shared rendering code with models/export_judge.py).
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models"))
import export_judge  # noqa: E402
import export_smollm2 as export  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

request = json.load(sys.stdin)
judge_dir = Path(request["judge_dir"])
config = json.loads((judge_dir / "reward_config.json").read_text())
chat = export_judge.ChatTemplate(judge_dir)
tokenizer = Tokenizer.from_file(str(judge_dir / "tokenizer.json"))
yes, no = tokenizer.token_to_id("Yes"), tokenizer.token_to_id("No")
model = export.GgufModel(export.find_gguf())
scores = []
for question, answer in request["pairs"]:
    texts = export_judge.judge_texts(chat, config["judge"], question, answer)
    per_template = []
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        logits = export.numpy_forward(model, ids)[-1]
        per_template.append(float(logits[yes] - logits[no]))
    scores.append(sum(per_template) / len(per_template))
json.dump({"scores": scores}, sys.stdout)
