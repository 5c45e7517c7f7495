#!/usr/bin/env python3
"""Writes preference rows (JSONL on stdin, string prompt/chosen/rejected) to a Parquet file in
the conversational shape of Hugging Face datasets: chosen/rejected as whole chat-message
lists, no prompt column. Snappy-compressed, as `datasets` writes them.

Usage: write_parquet.py OUT.parquet < rows.jsonl
"""
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq

rows = [json.loads(line) for line in sys.stdin if line.strip()]


def conversation(prompt, answer):
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


table = pa.table({
    "id": [r["id"] for r in rows],
    "chosen": [conversation(r["prompt"], r["chosen"]) for r in rows],
    "rejected": [conversation(r["prompt"], r["rejected"]) for r in rows],
    "reference": [r["reference"] for r in rows],
})
pq.write_table(table, sys.argv[1], compression="snappy")
