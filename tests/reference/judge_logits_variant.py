#!/usr/bin/env python3
"""Writes a variant of the exported judge in the LOGITS layout (`logits [B, T, 1]` = the
hidden states through the head inside the graph), to test that both classification-head
layouts give the same rewards. The weights file is hard-linked, not copied.

Usage: judge_logits_variant.py JUDGE_DIR OUT_DIR
"""
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

src, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
model = onnx.load(str(src / "model.onnx"), load_external_data=False)
head = json.loads((src / "reward_head.json").read_text())
weight = np.asarray(head["weight"], dtype=np.float32).T.copy()  # [H, labels]
graph = model.graph
graph.initializer.append(numpy_helper.from_array(weight, "variant_head"))
graph.node.append(helper.make_node("MatMul", ["last_hidden_state", "variant_head"], ["logits"], name="variant_head_matmul"))
del graph.output[:]
graph.output.append(helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", "seq", weight.shape[1]]))
onnx.save(model, str(out / "model.onnx"))
data = out / "model.onnx.data"
if data.exists():
    data.unlink()
os.link(src / "model.onnx.data", data)
for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
    shutil.copy(src / name, out / name)
config = json.loads((src / "reward_config.json").read_text())
config.update({"output": "logits", "layout": "logits"})
config.pop("head")
(out / "reward_config.json").write_text(json.dumps(config, indent=2))
