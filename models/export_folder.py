"""What every exporter in models/ does around its export: decide whether the folder is up to
date (its export_report.json carries the stamp of the inputs and export version that made
it), build into a fresh `<out>.partial`, and publish that folder atomically with its report,
so an interrupted or failing export never leaves a half folder where the engine looks.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def is_up_to_date(out: Path, stamp: dict, required_file: str) -> bool:
    """True when `out` holds `required_file` and a report whose stamp equals `stamp`."""
    report = out / "export_report.json"
    if not (report.is_file() and (out / required_file).is_file()):
        return False
    try:
        return json.loads(report.read_text()).get("stamp") == stamp
    except json.JSONDecodeError:
        return False


def fresh_partial(out: Path) -> Path:
    """An empty `<out>.partial` (a stale one is a previous interrupted or failed run)."""
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, out: Path, report: dict) -> None:
    """Writes the report into `tmp`, swaps it in as `out` and prints the report. The old
    folder is moved aside first, so a crash here leaves either the old or the new folder
    under the final name, never a mix."""
    (tmp / "export_report.json").write_text(json.dumps(report, indent=2) + "\n")
    old = out.with_name(out.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)
    print(json.dumps(report, indent=2))
