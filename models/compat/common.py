"""Helpers shared by the `make compat` checks (models/compat/check_*.py).

Every check runs in its own virtual environment (the exporters pin incompatible torch /
transformers versions), so this module uses only the standard library and numpy. A check
writes one JSON result file, `target/compat/<name>.json`, through `Result`; the driver
(`models/compat/run.sh` -> `summary.py`) merges them into `target/compat/report.json`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "target" / "compat"
TPO = Path(os.environ.get("TPO", ROOT / "target" / "release" / "tpo"))
HF_SMOLLM2 = OUT / "hf" / "smollm2-135m-instruct"
OUR_SMOLLM2 = ROOT / "models" / "smollm2-135m-instruct"
QUESTION = "What is the capital of France?"


def versions(*packages: str) -> dict:
    """Installed versions of `packages` in this venv (None when missing)."""
    out = {"python": sys.version.split()[0]}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = None
    return out


def run(cmd: list, log: Path | None = None, timeout: float = 3600, env: dict | None = None) -> dict:
    """Runs `cmd`, returns {cmd, rc, seconds, stdout, stderr} (the tails, for the report);
    the full output goes to `log` when given. Never raises on a non-zero exit."""
    cmd = [str(c) for c in cmd]
    print("$ " + " ".join(cmd), flush=True)
    t = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=None if env is None else {**os.environ, **env})
        rc, so, se = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, so, se = 124, (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), f"timed out after {timeout}s"
    secs = round(time.time() - t, 2)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {' '.join(cmd)}\nrc={rc} seconds={secs}\n--- stdout\n{so}\n--- stderr\n{se}\n")
    return {"cmd": " ".join(cmd), "rc": rc, "seconds": secs, "stdout": so[-4000:], "stderr": se[-4000:]}


class Result:
    """One check's result file. `step(name, ok, **numbers)` records a sub-check; `save()`
    writes target/compat/<name>.json with status pass / fail / pending / skipped."""

    def __init__(self, name: str):
        self.name = name
        self.path = OUT / f"{name}.json"
        self.data: dict = {"check": name, "steps": {}, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def step(self, name: str, status: str | bool, **info) -> None:
        if isinstance(status, bool):
            status = "pass" if status else "fail"
        self.data["steps"][name] = {"status": status, **info}
        shown = {k: v for k, v in info.items() if isinstance(v, (int, float, str)) and len(str(v)) < 120}
        print(f"[{self.name}] {name}: {status.upper()} {json.dumps(shown)}", flush=True)

    def save(self) -> None:
        states = [s["status"] for s in self.data["steps"].values()]
        if not states:
            overall = "skipped"
        elif "fail" in states:
            overall = "fail"
        elif "pending" in states:
            overall = "pending"
        elif all(s == "skipped" for s in states):
            overall = "skipped"
        else:
            overall = "pass"
        self.data["status"] = overall
        self.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        OUT.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2) + "\n")
        print(f"[{self.name}] => {overall.upper()} ({self.path})", flush=True)


def onnx_io(path: Path) -> dict:
    """Input/output names, element types and shapes (symbolic dims as strings) of an ONNX
    graph, read with onnxruntime (no weights are loaded into numpy)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    f = lambda a: {"name": a.name, "type": a.type, "shape": a.shape}  # noqa: E731
    return {"inputs": [f(a) for a in s.get_inputs()], "outputs": [f(a) for a in s.get_outputs()]}
