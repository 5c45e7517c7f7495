#!/usr/bin/env python3
"""Python baseline for `tpo bench score`: score preference pairs with a batch-size-1 Python
ONNX Runtime loop over the same reward model and rows, the way the TPO reference scores
(one session.run per text, no padding, no batching).

Supported reward folders (their reward_config.json decides):
  kind "classifier"  layout hidden_states (head file) or logits; input_format "judge" (the
                     embedded SmolLM2 judge: one run per judging prompt, reward = mean of
                     head . h[last]) or "chat" ([user: prompt, assistant: response] through the
                     chat template); prompt rendering is imported from models/export_judge.py,
                     so this script and the exporter use the same template logic
  kind "similarity"  an encoder with token embeddings (e.g. models/all-minilm-l6-v2): the
                     reward of an answer is the cosine of the L2-normalized, mean-pooled token
                     embeddings of the answer and of the row's "reference" (metric cosine), or
                     BERTScore F1 without the [CLS]/[SEP] ends (metric bertscore); the reference
                     is run once per row

Input: jsonl rows with id, prompt, chosen, rejected (and reference for similarity).
Output: --output jsonl, one {"id", "chosen_reward", "rejected_reward"} per row (null and an
"error" for a row the model refuses, e.g. longer than max_length with truncation "reject"); the
last stdout line is {"pairs", "seconds", "pairs_per_s", ...}, seconds counting everything after
the session and tokenizer are loaded (rendering, tokenizing, runs, pooling).

    .venv/bin/python benches/score_python_baseline.py --model-dir models/smollm2-judge \\
        --input data/alpaca_eval/pairs.jsonl --limit 20 --output /tmp/py_scores.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models"))

from export_judge import ChatTemplate, chat_text, judge_texts  # noqa: E402


class RowRefused(Exception):
    pass


class Scorer:
    def __init__(self, model_dir: Path, threads: int):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.dir = model_dir
        self.config = json.loads((model_dir / "reward_config.json").read_text())
        self.kind = self.config["kind"]
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model_dir / self.config.get("onnx", "model.onnx")), opts,
                                            providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.output = self.config["output"]
        self.label = self.config.get("label", 0)
        self.add_special = self.config.get("add_special_tokens", False)
        self.max_length = self.config["max_length"]
        self.truncate = self.config.get("truncation", "reject") == "truncate"
        if self.kind == "classifier":
            self.format = self.config["input_format"]
            self.chat = ChatTemplate(model_dir)
            self.layout = self.config["layout"]
            if self.layout == "hidden_states":
                head = json.loads((model_dir / self.config["head"]).read_text())
                self.head_w = np.asarray(head["weight"][self.label], np.float32)
                bias = head.get("bias") or [0.0] * len(head["weight"])
                self.head_b = float(bias[self.label])
        elif self.kind == "similarity":
            self.metric = self.config.get("metric", "cosine")
        else:
            sys.exit(f"error: unsupported reward kind {self.kind!r}")

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=self.add_special).ids
        if not ids:
            raise RowRefused("empty input")
        if len(ids) > self.max_length:
            if not self.truncate:
                raise RowRefused(f"{len(ids)} tokens > max_length {self.max_length}")
            last = ids[-1]
            ids = ids[: self.max_length]
            if self.add_special:
                ids[-1] = last  # keep [SEP] last, as sentence-transformers does
        return ids

    def run(self, ids: list[int]) -> np.ndarray:
        """One session.run, batch size 1, no padding: output of row 0."""
        n = len(ids)
        feeds = {"input_ids": np.array([ids], np.int64)}
        optional = {
            "attention_mask": np.ones((1, n), np.int64),
            "position_ids": np.arange(n, dtype=np.int64)[None, :],
            "token_type_ids": np.zeros((1, n), np.int64),
        }
        feeds.update({k: v for k, v in optional.items() if k in self.input_names})
        return self.session.run([self.output], feeds)[0][0]

    def classifier_reward(self, prompt: str, response: str) -> float:
        if self.format == "judge":
            texts = judge_texts(self.chat, self.config["judge"], prompt, response)
        else:
            texts = [chat_text(self.chat, prompt, response)]
        values = []
        for ids in [self.encode(t) for t in texts]:
            out = self.run(ids)
            if self.layout == "hidden_states":
                values.append(float(out[-1] @ self.head_w) + self.head_b)
            elif out.ndim == 1:  # logits [labels]
                values.append(float(out[self.label]))
            else:  # logits [T, labels]
                values.append(float(out[-1, self.label]))
        return float(np.mean(values))

    def embed(self, text: str):
        tokens = self.run(self.encode(text)).astype(np.float32)
        if self.metric == "bertscore":
            inner = tokens[1:-1] if self.add_special and len(tokens) > 2 else tokens
            return inner / np.maximum(np.linalg.norm(inner, axis=-1, keepdims=True), 1e-30)
        mean = tokens.mean(0)
        return mean / max(float(np.linalg.norm(mean)), 1e-30)

    def similarity(self, a, r) -> float:
        if self.metric == "bertscore":
            sims = a @ r.T
            p, rc = float(sims.max(1).mean()), float(sims.max(0).mean())
            return 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)
        return float(a @ r)

    def score_row(self, row: dict) -> dict:
        out = {"id": row.get("id")}
        try:
            if self.kind == "classifier":
                out["chosen_reward"] = self.classifier_reward(row["prompt"], row["chosen"])
                out["rejected_reward"] = self.classifier_reward(row["prompt"], row["rejected"])
            else:
                if row.get("reference") is None:
                    raise RowRefused("row has no reference")
                emb_c, emb_r, ref = self.embed(row["chosen"]), self.embed(row["rejected"]), self.embed(row["reference"])
                out["chosen_reward"] = self.similarity(emb_c, ref)
                out["rejected_reward"] = self.similarity(emb_r, ref)
        except RowRefused as e:
            out.update({"chosen_reward": None, "rejected_reward": None, "error": str(e)})
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="folder with reward_config.json")
    parser.add_argument("--input", type=Path, required=True, help="pairs jsonl (id, prompt, chosen, rejected[, reference])")
    parser.add_argument("--limit", type=int, default=0, help="first N rows (0 = all)")
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0 = ORT default)")
    parser.add_argument("--output", type=Path, help="per-row scores jsonl")
    args = parser.parse_args()

    rows = [json.loads(line) for line in args.input.open() if line.strip()]
    if args.limit:
        rows = rows[: args.limit]
    scorer = Scorer(args.model_dir, args.threads)
    results = []
    t0 = time.perf_counter()
    for row in rows:
        results.append(scorer.score_row(row))
    seconds = time.perf_counter() - t0
    if args.output:
        with args.output.open("w") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
    scored = [r for r in results if r["chosen_reward"] is not None]
    summary = {
        "pairs": len(rows),
        "seconds": round(seconds, 3),
        "pairs_per_s": round(len(rows) / seconds, 4) if seconds > 0 else None,
        "errors": len(rows) - len(scored),
        "accuracy": round(float(np.mean([r["chosen_reward"] > r["rejected_reward"] for r in scored])), 4)
        if scored else None,
        "model_dir": str(args.model_dir),
        "kind": scorer.kind,
        "threads": args.threads,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
