"""Schemathesis against /openapi.json (tests/server/schemathesis.sh): every generated
request answered without a 5xx, in a status and shape the document declares. Slow, so it
runs only when selected: `pytest tests/server -m schemathesis` or `make schemathesis`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.schemathesis
def test_schemathesis():
    env = dict(os.environ)
    env.setdefault("ST", str(HERE.parents[1] / ".venv" / "bin" / "st"))
    r = subprocess.run([str(HERE / "schemathesis.sh")], env=env, capture_output=True, text=True,
                       timeout=900)
    print(r.stdout[-20000:])
    print(r.stderr[-5000:])
    assert r.returncode == 0, "schemathesis found problems (see the output above)"
