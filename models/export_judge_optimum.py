#!/usr/bin/env python3
"""Write the embedded judge again in optimum's sequence-classification layout, from the same
weights: the folder a user gets from `optimum-cli export onnx --task text-classification`
on a `LlamaForSequenceClassification`, so `tpo`'s inference of a reward config and its
load-time self-check are tested on that layout in `make test` (torch and optimum are
gigabytes; `make compat` runs the real exporter).

What changes from models/smollm2-judge/ (whose graph and weights it reuses; the weights file
is hard-linked, not copied):
  - inputs are input_ids and attention_mask only: positions are numbered inside the graph
    (0..T-1, as transformers does without position_ids), so only right padding is right;
  - the head (unembedding("Yes") - unembedding("No")) is applied inside the graph and the
    reward is read at each row's last token that is NOT the pad id, found from input_ids as
    transformers' LlamaForSequenceClassification does (the rightmost non-pad position):
    one output `logits` float32 [batch, 1];
  - config.json says what optimum's export says (architectures, pad_token_id, labels,
    max_position_embeddings); there is no reward_config.json: `tpo` infers it.

A wrong pad id therefore changes the rewards of padded rows, exactly the failure the
self-check must catch. Usage: export_judge_optimum.py [--judge DIR] [--out DIR] [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_JUDGE = MODELS_DIR / "smollm2-judge"
DEFAULT_OUT = MODELS_DIR / "smollm2-judge-optimum"
EXPORT_VERSION = 1
# SmolLM2's context (its tokenizer_config.json model_max_length and the rotary tables' length)
MAX_POSITIONS = 8192
COPIED = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]


def up_to_date(judge: Path, out: Path) -> bool:
    stamp = out / "export_report.json"
    if not stamp.is_file() or not (out / "model.onnx").is_file():
        return False
    report = json.loads(stamp.read_text())
    return report.get("export_version") == EXPORT_VERSION and \
        report.get("judge_data_bytes") == (judge / "model.onnx.data").stat().st_size


def build(judge: Path, out: Path) -> dict:
    judge_config = json.loads((judge / "reward_config.json").read_text())
    pad_id = int(judge_config["pad_token_id"])
    head = json.loads((judge / "reward_head.json").read_text())
    weight = np.asarray(head["weight"][0], np.float32).reshape(-1, 1)  # [H, 1]
    bias = float(head["bias"][0])

    model = onnx.load(str(judge / "model.onnx"), load_external_data=False)
    g = model.graph
    # position_ids becomes an internal [1, T] arange: the rotary Gathers that read it
    # broadcast over the batch.
    kept = [i for i in g.input if i.name != "position_ids"]
    del g.input[:]
    g.input.extend(kept)
    g.initializer.extend([
        numpy_helper.from_array(np.array([0], np.int64), "optimum_axis0"),
        numpy_helper.from_array(np.array(pad_id, np.int64), "optimum_pad_id"),
        numpy_helper.from_array(weight, "score.weight"),
        numpy_helper.from_array(np.array([bias], np.float32), "score.bias"),
    ])
    new = [
        # positions 0..T-1 (the judge graph already computes `arange` from input_ids' shape)
        helper.make_node("Unsqueeze", ["arange", "optimum_axis0"], ["position_ids"], name="optimum_positions"),
        # score head on every position: [B, T, 1]
        helper.make_node("MatMul", ["last_hidden_state", "score.weight"], ["token_scores_nobias"], name="optimum_score"),
        helper.make_node("Add", ["token_scores_nobias", "score.bias"], ["token_scores"], name="optimum_score_bias"),
        # the rightmost position whose token is not the pad id: argmax(arange * (ids != pad))
        helper.make_node("Equal", ["input_ids", "optimum_pad_id"], ["is_pad"], name="optimum_is_pad"),
        helper.make_node("Not", ["is_pad"], ["not_pad"], name="optimum_not_pad"),
        helper.make_node("Cast", ["not_pad"], ["not_pad_i64"], to=TensorProto.INT64, name="optimum_not_pad_i64"),
        helper.make_node("Mul", ["not_pad_i64", "arange"], ["non_pad_index"], name="optimum_non_pad_index"),
        helper.make_node("ArgMax", ["non_pad_index"], ["last_non_pad"], axis=1, keepdims=1, name="optimum_last"),
        # logits[b] = token_scores[b, last_non_pad[b]]: [B, 1]
        helper.make_node("GatherND", ["token_scores", "last_non_pad"], ["logits"], batch_dims=1, name="optimum_pool"),
    ]
    g.node.extend(new)
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", 1]))

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    onnx.save(model, str(tmp / "model.onnx"))
    os.link(judge / "model.onnx.data", tmp / "model.onnx.data")
    for name in COPIED:
        shutil.copy(judge / name, tmp / name)
    config = {
        "architectures": ["LlamaForSequenceClassification"],
        "model_type": "llama",
        "hidden_size": int(weight.shape[0]),
        "id2label": {"0": "LABEL_0"},
        "label2id": {"LABEL_0": 0},
        "max_position_embeddings": MAX_POSITIONS,
        "pad_token_id": pad_id,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "problem_type": "regression",
        "_comment": "written by models/export_judge_optimum.py in the layout optimum exports",
    }
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    report = self_test(tmp, pad_id)
    report.update({"export_version": EXPORT_VERSION,
                   "judge_data_bytes": (judge / "model.onnx.data").stat().st_size})
    (tmp / "export_report.json").write_text(json.dumps(report, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return report


def self_test(folder: Path, pad_id: int) -> dict:
    """The pooled reward of right-padded rows equals the same rows alone, with the right pad
    id, and differs with pad id 0 (the failure the engine's self-check must catch)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    rows = [[1, 4093, 314, 253, 30], [1, 4093, 314, 253, 2, 198, 1, 520, 9531, 198, 30]]  # token ids
    alone = [float(session.run(None, {"input_ids": np.array([r]), "attention_mask": np.ones((1, len(r)), np.int64)})[0][0, 0])
             for r in rows]

    def padded(pad: int) -> list[float]:
        t = max(len(r) for r in rows)
        ids = np.full((len(rows), t), pad, np.int64)
        mask = np.zeros((len(rows), t), np.int64)
        for b, r in enumerate(rows):
            ids[b, :len(r)] = r
            mask[b, :len(r)] = 1
        return [float(x) for x in session.run(None, {"input_ids": ids, "attention_mask": mask})[0][:, 0]]

    right = padded(pad_id)
    wrong = padded(0)
    diff = max(abs(a - b) for a, b in zip(alone, right))
    wrong_diff = max(abs(a - b) for a, b in zip(alone, wrong))
    if diff > 1e-3 or wrong_diff < 0.1:
        sys.exit(f"error: optimum-layout judge self-test failed: padded vs alone {diff}, "
                 f"with pad id 0 {wrong_diff}")
    return {"alone": alone, "padded_with_pad_id": right, "padded_with_0": wrong,
            "padded_vs_alone_max_abs_diff": diff, "wrong_pad_max_abs_diff": wrong_diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", type=Path, default=DEFAULT_JUDGE, help="the exported judge folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    if not (args.judge / "reward_config.json").is_file():
        sys.exit(f"error: {args.judge} is not an exported judge (run models/export_judge.py)")
    if not args.force and up_to_date(args.judge, args.out):
        print(f"{args.out} is up to date (optimum-layout judge v{EXPORT_VERSION})")
        return
    report = build(args.judge, args.out)
    print(f"wrote {args.out}: padded vs alone {report['padded_vs_alone_max_abs_diff']:.2e}, "
          f"with pad id 0 {report['wrong_pad_max_abs_diff']:.3f}")


if __name__ == "__main__":
    main()
