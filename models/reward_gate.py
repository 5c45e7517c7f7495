#!/usr/bin/env python3
"""Quality gate of a quantized reward model against its float32 form, by the job it does.

Usage: python models/reward_gate.py FLOAT_SCORED.jsonl QUANT_SCORED.jsonl --json OUT.json

Both files are `tpo score` outputs over the same preference rows (AlpacaEval pairs: chosen =
GPT-4 Turbo's answer, rejected = a weaker one), one with the float32 model (`judge`,
`similarity`, ...), one with its quantized folder (`judge-int8`, `similarity-int8`, ...). A
pair counts as right when its chosen reward is above its rejected reward. The gate passes
when the quantized model's pairwise accuracy is within MAX_ACCURACY_DROP percentage points of
float32's (either direction: a reward model that changes its verdicts a lot is a different
reward model, better or not). Reported beside it: the largest reward difference, and the
pairs whose verdict flipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MAX_ACCURACY_DROP = 0.5  # percentage points


def read(path: Path) -> dict[str, dict]:
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["id"]] = row
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("float_scored", type=Path)
    parser.add_argument("quant_scored", type=Path)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    ref, quant = read(args.float_scored), read(args.quant_scored)
    ids = sorted(set(ref) & set(quant))
    if not ids or len(ids) != len(ref) or len(ids) != len(quant):
        sys.exit(f"error: the two files must score the same rows ({len(ref)} vs {len(quant)}, {len(ids)} shared)")

    def right(row: dict) -> bool:
        return row["chosen_reward"] > row["rejected_reward"]

    acc_ref = 100.0 * sum(right(ref[i]) for i in ids) / len(ids)
    acc_quant = 100.0 * sum(right(quant[i]) for i in ids) / len(ids)
    flips = [i for i in ids if right(ref[i]) != right(quant[i])]
    max_diff = max(max(abs(ref[i][k] - quant[i][k]) for k in ("chosen_reward", "rejected_reward")) for i in ids)
    diff = acc_quant - acc_ref
    report = {
        "pairs": len(ids),
        "accuracy_float_percent": acc_ref,
        "accuracy_quant_percent": acc_quant,
        "accuracy_diff_points": diff,
        "max_accuracy_diff_points": MAX_ACCURACY_DROP,
        "verdicts_flipped": len(flips),
        "flipped_ids": flips,
        "max_abs_reward_diff": max_diff,
        "pass": abs(diff) <= MAX_ACCURACY_DROP,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    verdict = "passed" if report["pass"] else "FAILED"
    print(f"reward gate {verdict}: accuracy {acc_quant:.2f} % vs float32 {acc_ref:.2f} % "
          f"({diff:+.2f} points, at most ±{MAX_ACCURACY_DROP}) on {len(ids)} pairs; "
          f"{len(flips)} verdicts flipped; max reward diff {max_diff:.3f}")
    if not report["pass"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
