#!/usr/bin/env python3
"""Logits of a plain numpy forward pass of the dequantized GGUF weights (the same reference
models/export_smollm2.py validates against), for the Rust parity test.

Usage: logits_reference.py OUT_FILE ID [ID ...]
Writes float32 little-endian logits [len(ids), vocab] to OUT_FILE.
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models"))
import export_smollm2 as export  # noqa: E402

out, ids = sys.argv[1], [int(x) for x in sys.argv[2:]]
model = export.GgufModel(export.find_gguf())
export.numpy_forward(model, ids).astype("<f4").tofile(out)
