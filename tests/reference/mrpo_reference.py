#!/usr/bin/env python3
"""An independent numpy computation of DPO and MRPO implicit rewards (ALGORITHMS.md §4),
for the Rust formula test.

stdin: {"cases": [{"beta", "eta", "policy": [c, r], "ref1": [c, r], "ref2": [c, r]}, ...]}
stdout: {"results": [{"dpo1": [c, r], "dpo2": [c, r], "alpha", "mrpo": [c, r]}, ...]}

DPO: r = beta * (l_policy - l_ref).
MRPO: alpha = |D1| / (|D1| + |D2|) with D_k = l_k(chosen) - l_k(rejected) (1/2 if both 0);
      l2 is clipped into [l1 - eta*|l1|, l1 + eta*|l1|];
      l~ = l1 + l2 - log(alpha * e^l1 + (1 - alpha) * e^l2);  r = beta * (l_policy - l~).
"""
import json
import sys

import numpy as np

results = []
for case in json.load(sys.stdin)["cases"]:
    beta, eta = case["beta"], case["eta"]
    pol, r1, r2 = (np.array(case[k], dtype=np.float64) for k in ("policy", "ref1", "ref2"))
    d1, d2 = r1[0] - r1[1], r2[0] - r2[1]
    alpha = 0.5 if abs(d1) + abs(d2) == 0 else abs(d1) / (abs(d1) + abs(d2))
    r2c = np.clip(r2, r1 - eta * np.abs(r1), r1 + eta * np.abs(r1))
    with np.errstate(divide="ignore"):
        mix = np.logaddexp(np.log(alpha) + r1, np.log(1 - alpha) + r2c)
    combined = r1 + r2c - mix
    results.append({
        "dpo1": list(beta * (pol - r1)),
        "dpo2": list(beta * (pol - r2)),
        "alpha": alpha,
        "mrpo": list(beta * (pol - combined)),
    })
json.dump({"results": results}, sys.stdout)
