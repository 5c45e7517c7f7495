#!/usr/bin/env python3
"""Compat check 2: a reward model exported by optimum (`--task text-classification`) scores
the same in tpo as in PyTorch, with no reward_config.json in the folder.

Runs in `.venv-compat-optimum` (optimum-onnx + transformers 4.57 + torch CPU, pinned in
models/compat/requirements-optimum.txt). Steps:

  1. model: `LlamaForSequenceClassification` (num_labels=1) from the SmolLM2 Hugging Face
     folder that models/compat/hf_smollm2.py wrote. The backbone is SmolLM2-135M-Instruct;
     the score head [1, 576] is drawn deterministically (torch.manual_seed(0), normal with
     std = config.initializer_range, as transformers initializes a new head) and the config
     gets pad_token_id = 2 (the tokenizer's pad token <|im_end|>), which the sequence
     classifier needs to find each row's last real token. Saved with save_pretrained (model
     and tokenizer) to target/compat/hf/smollm2-rm/. Skipped when it exists.
  2. export: `optimum-cli export onnx --model target/compat/hf/smollm2-rm --task
     text-classification target/compat/exports/optimum-smollm2-rm` (skipped when the
     folder holds model.onnx). No reward_config.json is written: tpo must infer it.
  3. records what the export wrote: config.json (pad_token_id, max_position_embeddings,
     architectures), tokenizer_config.json (model_max_length, pad_token, padding_side), the
     file list, the ONNX inputs and outputs with their shapes.
  4. PyTorch reference rewards of PAIRS: each (prompt, response) rendered through the chat
     template as [user: prompt, assistant: response] without a generation prompt (tpo's
     `input_format: chat`, src/reward/classifier.rs), tokenized without extra special
     tokens, scored one row at a time (no padding): logits[0, 0].
  5. the exported graph with onnxruntime directly, one row at a time: max |onnx - torch|
     (checks the export itself, independently of tpo).
  6. `tpo score --input pairs.jsonl --reward-model EXPORT_DIR`: pass when every row is
     scored and max |tpo - torch| <= 1e-4. A tpo that cannot load the folder without a
     reward_config.json yet is reported as "pending" with its message.
  7. `tpo models inspect EXPORT_DIR` (output saved; "pending" while tpo lacks the command).

Writes target/compat/optimum-rm.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HF_SMOLLM2, OUT, TPO, Result, onnx_io, run, versions  # noqa: E402

RM_DIR = OUT / "hf" / "smollm2-rm"
EXPORT = OUT / "exports" / "optimum-smollm2-rm"
TOLERANCE = 1e-4
PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of France?", "I think it is Berlin, but I am not sure."),
    ("What is 2 + 2?", "2 + 2 = 4."),
    ("Give me a tip for learning Rust.",
     "Read the compiler's error messages carefully: they usually tell you exactly what to change, "
     "and working through the ownership errors teaches you how borrowing works."),
    ("Write a haiku about rain.", "Soft rain on the roof,\nwhispers to the sleeping town,\nmorning smells of earth."),
    ("Translate 'good morning' into French.", "Bonjour."),
]


def build_rm(res: Result) -> None:
    """The sequence-classification model folder (step 1)."""
    if (RM_DIR / "config.json").is_file():
        res.step("build_rm", "pass", skipped_existing=True, out=str(RM_DIR))
        return
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(str(HF_SMOLLM2))
    model = LlamaForSequenceClassification.from_pretrained(str(HF_SMOLLM2), num_labels=1, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        model.score.weight.normal_(0.0, model.config.initializer_range)
    model.config.pad_token_id = tok.pad_token_id
    assert tok.pad_token_id == 2, tok.pad_token_id
    tmp = RM_DIR.with_name(RM_DIR.name + ".partial")
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    tmp.rename(RM_DIR)
    res.step("build_rm", "pass", out=str(RM_DIR), pad_token_id=tok.pad_token_id,
             head_norm=float(model.score.weight.detach().norm()))


def texts(tok) -> list[list[int]]:
    """Token ids of PAIRS as tpo's chat input format renders them."""
    out = []
    for p, r in PAIRS:
        text = tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                                       tokenize=False, add_generation_prompt=False)
        out.append(tok(text, add_special_tokens=False)["input_ids"])
    return out


def torch_rewards(ids: list[list[int]]) -> list[float]:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(RM_DIR), dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return [float(model(torch.tensor([x]), attention_mask=torch.ones(1, len(x), dtype=torch.long)).logits[0, 0])
                for x in ids]


def onnx_rewards(ids: list[list[int]]) -> list[float]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(str(EXPORT / "model.onnx"), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in s.get_inputs()}
    out = []
    for x in ids:
        feeds = {"input_ids": np.array([x], np.int64), "attention_mask": np.ones((1, len(x)), np.int64)}
        if "position_ids" in names:
            feeds["position_ids"] = np.arange(len(x), dtype=np.int64)[None]
        out.append(float(s.run(["logits"], feeds)[0][0, 0]))
    return out


def main() -> None:
    res = Result("optimum-rm")
    res.data["versions"] = versions("optimum", "optimum-onnx", "transformers", "torch", "onnx", "onnxruntime")
    res.data["tpo"] = run([TPO, "--version"])["stdout"].strip()
    if not (HF_SMOLLM2 / "config.json").is_file():
        res.step("hf_folder", "fail", error=f"{HF_SMOLLM2} missing (run models/compat/hf_smollm2.py)")
        return res.save()

    build_rm(res)

    if (EXPORT / "model.onnx").is_file():
        res.step("optimum_export", "pass", skipped_existing=True, out=str(EXPORT))
    else:
        r = run([Path(sys.executable).parent / "optimum-cli", "export", "onnx", "--model", RM_DIR,
                 "--task", "text-classification", EXPORT], log=OUT / "logs" / "optimum-export-rm.log")
        res.step("optimum_export", r["rc"] == 0 and (EXPORT / "model.onnx").is_file(), rc=r["rc"],
                 seconds=r["seconds"], stderr_tail=r["stderr"][-2000:])
        if r["rc"] != 0:
            return res.save()
    assert not (EXPORT / "reward_config.json").exists(), "the check needs a folder without reward_config.json"

    cfg = json.loads((EXPORT / "config.json").read_text())
    tcfg = json.loads((EXPORT / "tokenizer_config.json").read_text())
    res.data["export_files"] = sorted(p.name for p in EXPORT.iterdir())
    res.data["export_config"] = {k: cfg.get(k) for k in (
        "architectures", "model_type", "pad_token_id", "eos_token_id", "bos_token_id", "max_position_embeddings",
        "num_labels", "id2label", "problem_type", "hidden_size", "vocab_size", "torch_dtype", "dtype",
        "transformers_version")}
    res.data["export_tokenizer_config"] = {k: tcfg.get(k) for k in (
        "model_max_length", "pad_token", "eos_token", "bos_token", "padding_side", "truncation_side",
        "tokenizer_class", "add_bos_token", "add_eos_token")}
    res.data["export_tokenizer_config"]["chat_template_in_tokenizer_config"] = "chat_template" in tcfg
    res.data["onnx_io"] = onnx_io(EXPORT / "model.onnx")

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(EXPORT))
    ids = texts(tok)
    ref = torch_rewards(ids)
    ort_r = onnx_rewards(ids)
    d_ort = max(abs(a - b) for a, b in zip(ort_r, ref))
    res.data["torch_rewards"] = ref
    res.data["onnx_rewards"] = ort_r
    res.data["token_counts"] = [len(x) for x in ids]
    res.step("onnx_vs_torch", d_ort <= TOLERANCE, max_abs_diff=d_ort, tolerance=TOLERANCE)

    rows = OUT / "optimum-rm-pairs.jsonl"
    rows.write_text("".join(json.dumps({"id": f"r{i}", "prompt": p, "response": r}) + "\n"
                            for i, (p, r) in enumerate(PAIRS)))
    scored = OUT / "optimum-rm-scored.jsonl"
    s = run([TPO, "score", "--input", rows, "--output", scored, "--overwrite", "--reward-model", EXPORT],
            log=OUT / "logs" / "optimum-rm-tpo-score.log", timeout=900)
    got = {}
    if scored.is_file():
        for line in scored.read_text().splitlines():
            o = json.loads(line)
            got[o["id"]] = o.get("reward")
    tpo_r = [got.get(f"r{i}") for i in range(len(PAIRS))]
    res.data["tpo_rewards"] = tpo_r
    if s["rc"] == 0 and all(isinstance(x, (int, float)) for x in tpo_r):
        d = max(abs(a - b) for a, b in zip(tpo_r, ref))
        res.step("tpo_score_vs_torch", d <= TOLERANCE, max_abs_diff=d, tolerance=TOLERANCE, rc=s["rc"],
                 stderr_tail=s["stderr"][-1500:])
    else:
        msg = (s["stderr"] + s["stdout"])[-2000:]
        pending = "reward_config" in msg
        res.step("tpo_score_vs_torch", "pending" if pending else "fail", rc=s["rc"], output=msg,
                 note="tpo cannot infer the reward config of this folder yet" if pending else None)

    i = run([TPO, "models", "inspect", EXPORT], log=OUT / "logs" / "optimum-rm-tpo-inspect.log")
    (OUT / "optimum-rm-inspect.txt").write_text(i["stdout"] + i["stderr"])
    if i["rc"] == 0:
        res.step("tpo_models_inspect", "pass", output=i["stdout"][-3000:])
    else:
        missing = "unrecognized subcommand" in i["stderr"]
        res.step("tpo_models_inspect", "pending" if missing else "fail", rc=i["rc"],
                 output=(i["stderr"] + i["stdout"])[-2000:])
    res.save()


if __name__ == "__main__":
    main()
