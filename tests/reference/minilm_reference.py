#!/usr/bin/env python3
"""Reference all-MiniLM-L6-v2 embeddings and similarity scores from the plain numpy forward
pass that models/export_minilm.py validates its ONNX export against, for the Rust
similarity-reward tests.

stdin (one of):
  {"texts": [str, ...], "max_length": 256}
  {"pairs": [[answer, reference], ...], "max_length": 256}
("max_length" is optional, default 256 = sentence-transformers' max_seq_length.)

stdout:
  texts -> {"sentence_embeddings": [[float]], "token_embeddings": [[[float]]], "token_ids": [[int]]}
  pairs -> {"cosine": [float], "bertscore_f1": [float]}

Definitions (each text is encoded and run ALONE, so every token is a real token):
  tokenization   the model's tokenizer.json with its built-in truncation/padding disabled,
                 add_special_tokens=True ([CLS] ... [SEP]); if longer than max_length ids,
                 keep the first max_length-1 and then [SEP] (sentence-transformers'
                 truncation to max_length tokens, specials included).
  token_embeddings    the encoder's last hidden state, one row per token id.
  sentence embedding  mean of all token embeddings ([CLS] and [SEP] included), then
                      L2-normalized (sentence-transformers Pooling(mean) + Normalize).
  cosine         dot product of the two normalized sentence embeddings.
  bertscore_f1   greedy matching without idf weighting or baseline rescaling: drop the
                 first ([CLS]) and last ([SEP]) token of each side, L2-normalize every
                 remaining token embedding; S = A @ B.T with A the answer's tokens and B the
                 reference's; precision P = mean over answer tokens of max over reference
                 tokens of S; recall R = mean over reference tokens of max over answer
                 tokens of S; F1 = 2PR / (P + R), and 0 when P + R == 0 or when either side
                 has no token left (an empty text).
"""
import json
import sys
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models"))
import export_minilm as export  # noqa: E402


def bertscore_f1(answer: np.ndarray, reference: np.ndarray) -> float:
    a, b = answer[1:-1].astype(np.float64), reference[1:-1].astype(np.float64)
    if len(a) == 0 or len(b) == 0:
        return 0.0
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    sim = a @ b.T
    precision, recall = sim.max(axis=1).mean(), sim.max(axis=0).mean()
    total = precision + recall
    return 0.0 if total == 0 else float(2 * precision * recall / total)


def main() -> None:
    request = json.load(sys.stdin)
    max_length = int(request.get("max_length", 256))
    model_dir = export.find_model_dir()
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    # the upstream file truncates and pads to 128; the exported copy has both removed
    tokenizer.no_truncation()
    tokenizer.no_padding()
    model = export.MiniLM(model_dir)

    cache: dict[str, tuple[list[int], np.ndarray]] = {}

    def embed(text: str) -> tuple[list[int], np.ndarray]:
        if text not in cache:
            ids = export.encode(tokenizer, text, max_length)
            cache[text] = (ids, export.numpy_forward(model, ids))
        return cache[text]

    if "texts" in request:
        encoded = [embed(t) for t in request["texts"]]
        result = {
            "sentence_embeddings": [export.mean_pool_normalized(tokens).tolist() for _, tokens in encoded],
            "token_embeddings": [tokens.tolist() for _, tokens in encoded],
            "token_ids": [ids for ids, _ in encoded],
        }
    elif "pairs" in request:
        cosine, f1 = [], []
        for answer, reference in request["pairs"]:
            a, r = embed(answer)[1], embed(reference)[1]
            ea, er = export.mean_pool_normalized(a), export.mean_pool_normalized(r)
            cosine.append(float(ea.astype(np.float64) @ er.astype(np.float64)))
            f1.append(bertscore_f1(a, r))
        result = {"cosine": cosine, "bertscore_f1": f1}
    else:
        sys.exit('error: expected {"texts": [...]} or {"pairs": [[answer, reference], ...]} on stdin')
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
