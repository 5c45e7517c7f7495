#!/usr/bin/env python3
"""Merge the `make compat` check results into target/compat/report.json and print a summary.

Reads target/compat/<check>.json (written by check_builder.py, check_optimum.py,
check_similarity.py through common.Result), adds the machine (lscpu model name, cores),
the tpo version and each venv's `pip freeze` (target/compat/freeze-*.txt, written by
run.sh), and prints one line per step: PASS / FAIL / PENDING with its main numbers.

Exit status: 1 when any check failed, else 0 (pending = waits on a tpo feature, not a failure).
Standard library only (runs with any python3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = ROOT / "target" / "compat"
CHECKS = ["builder-smollm2", "optimum-rm", "optimum-similarity", "builder-gemma3"]
# the numbers worth a glance, per step
SHOWN = ("answer", "max_abs_diff", "max_abs_diff_all", "max_abs_diff_last", "vs_ours_max_abs_diff_all",
         "argmax_last_agrees", "ragged_decode_matches_torch", "padded_prefill_right", "padded_prefill_left",
         "seconds", "via", "tpo", "torch", "rc")


def machine() -> dict:
    model = None
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count()}


def main() -> int:
    tpo = Path(os.environ.get("TPO", ROOT / "target" / "release" / "tpo"))
    version = subprocess.run([str(tpo), "--version"], capture_output=True, text=True).stdout.strip() if tpo.exists() else None
    report = {"generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(), "tpo": version,
              "checks": {}, "freeze": {}}
    for f in sorted(OUT.glob("freeze-*.txt")):
        report["freeze"][f.stem.removeprefix("freeze-")] = f.read_text().split()
    failed = False
    print(f"\n== make compat: {report['machine']['cpu']} ({report['machine']['cores']} cores), {version}")
    for name in CHECKS:
        path = OUT / f"{name}.json"
        if not path.is_file():
            print(f"{name:20s} NOT RUN")
            report["checks"][name] = {"status": "not run"}
            continue
        data = json.loads(path.read_text())
        report["checks"][name] = data
        failed |= data.get("status") == "fail"
        print(f"{name:20s} {data.get('status', '?').upper()}")
        for step, info in data.get("steps", {}).items():
            nums = ", ".join(f"{k}={info[k]!r}" if isinstance(info[k], str) else f"{k}={info[k]:.3g}"
                             if isinstance(info[k], float) else f"{k}={info[k]}"
                             for k in SHOWN if k in info and info[k] is not None)
            print(f"  {info['status'].upper():8s} {step}: {nums[:300]}")
            if info["status"] in ("fail", "pending"):
                msg = info.get("output") or info.get("stderr_tail") or info.get("error") or ""
                last = [x for x in str(msg).strip().splitlines() if x.strip()][-1:] or [""]
                print(f"           {last[0][:400]}")
    (OUT / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {OUT / 'report.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
