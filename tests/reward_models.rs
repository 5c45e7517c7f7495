//! Reward models on the real exported models, each against an independent Python
//! reference: the judge against a numpy forward pass of the policy's weights, MiniLM
//! embeddings/cosine/BERTScore against numpy, log-probs against numpy logits, DPO/MRPO
//! against an independent numpy implementation.

mod common;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tpo_engine::engine::{Engine, EngineOptions};
use tpo_engine::model::ModelDir;
use tpo_engine::paths;
use tpo_engine::reward::implicit::{self, ResponseLogprobs};
use tpo_engine::reward::similarity::SimilarityRm;
use tpo_engine::reward::{
    self, RewardConfig, RewardInput, RewardModel, RewardOptions, RowError, SimilarityMetric,
};

fn judge_dir() -> PathBuf {
    common::init_runtime();
    let dir = common::project_root().join("models").join(paths::JUDGE_DIR);
    assert!(
        dir.join("reward_config.json").is_file(),
        "{} is missing: run `make setup`",
        dir.display()
    );
    dir
}

fn encoder_dir() -> PathBuf {
    common::init_runtime();
    let dir = common::project_root()
        .join("models")
        .join(paths::ENCODER_DIR);
    assert!(
        dir.join("reward_config.json").is_file(),
        "{} is missing: run `make setup`",
        dir.display()
    );
    dir
}

fn python_json(script: &str, request: &Value) -> Value {
    let out = common::run_python(script, &[], &request.to_string());
    serde_json::from_slice(&out).expect("reference output is JSON")
}

use common::PAIRS;

fn inputs<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<RewardInput<'a>> {
    pairs
        .iter()
        .map(|&(prompt, response)| RewardInput {
            prompt,
            response,
            reference: None,
        })
        .collect()
}

fn ok(scores: Vec<Result<f32, RowError>>) -> Vec<f32> {
    scores.into_iter().map(|s| s.expect("row scored")).collect()
}

#[test]
fn judge_scores_equal_the_policy_logit_difference_from_numpy_batched_or_alone() {
    let dir = judge_dir();
    let judge = reward::load_dir(&dir, None, RewardOptions::default()).unwrap();
    let batched = ok(judge.score(&inputs(PAIRS)).unwrap());
    let reference = python_json(
        "tests/reference/judge_reference.py",
        &json!({"judge_dir": dir, "pairs": PAIRS}),
    );
    let expected: Vec<f32> = reference["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let diff = common::max_abs_diff(&batched, &expected);
    assert!(
        diff < 2e-3,
        "judge {batched:?} vs numpy {expected:?}: {diff}"
    );
    for (i, pair) in PAIRS.iter().enumerate() {
        let alone = ok(judge.score(&inputs(&[*pair])).unwrap());
        assert!(
            (alone[0] - batched[i]).abs() < 1e-4,
            "row {i}: alone {} vs batched {}",
            alone[0],
            batched[i]
        );
    }
}

#[test]
fn a_too_long_answer_is_rejected_while_the_rest_of_the_call_is_scored() {
    let judge = reward::load(&common::reward_source("judge"), RewardOptions::default()).unwrap();
    let long = "word ".repeat(3000);
    let rows = [PAIRS[0], ("Say a lot.", long.as_str()), PAIRS[2]];
    let scores = judge.score(&inputs(&rows)).unwrap();
    assert!(scores[0].is_ok() && scores[2].is_ok(), "{scores:?}");
    match &scores[1] {
        Err(RowError::TooLong { tokens, limit }) => {
            assert_eq!(*limit, 2048);
            assert!(*tokens > 3000);
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
}

#[test]
fn hidden_states_and_logits_layouts_of_the_same_judge_agree() {
    let dir = judge_dir();
    let variant = std::env::temp_dir().join(format!("tpo-judge-logits-{}", std::process::id()));
    common::run_python(
        "tests/reference/judge_logits_variant.py",
        &[dir.display().to_string(), variant.display().to_string()],
        "",
    );
    let config = RewardConfig::load(&variant).unwrap();
    assert_eq!(config.output, "logits");
    let hidden = reward::load_dir(&dir, None, RewardOptions::default()).unwrap();
    let logits = reward::load_dir(&variant, None, RewardOptions::default()).unwrap();
    let a = ok(hidden.score(&inputs(PAIRS)).unwrap());
    let b = ok(logits.score(&inputs(PAIRS)).unwrap());
    let diff = common::max_abs_diff(&a, &b);
    assert!(diff < 1e-4, "hidden-states {a:?} vs logits {b:?}");
    let _ = std::fs::remove_dir_all(&variant);
}

/// A copy of the encoder folder (files linked) whose config pads on the left.
fn left_padded_encoder() -> PathBuf {
    let src = encoder_dir();
    let dir = std::env::temp_dir().join(format!("tpo-minilm-left-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["model.onnx", "tokenizer.json"] {
        std::os::unix::fs::symlink(src.join(name), dir.join(name)).unwrap();
    }
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("reward_config.json")).unwrap())
            .unwrap();
    config["padding_side"] = json!("left");
    std::fs::write(dir.join("reward_config.json"), config.to_string()).unwrap();
    dir
}

fn similarity(dir: &Path, metric: SimilarityMetric) -> SimilarityRm {
    let config = RewardConfig::load(dir).unwrap();
    SimilarityRm::load(
        dir,
        &config,
        Default::default(),
        reward::DEFAULT_BATCH_TOKENS,
        Some(metric),
    )
    .unwrap()
}

const SENTENCES: &[&str] = &[
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Café 東京: the quick brown fox jumps over the lazy dog, again and again, while the \
     rain in Spain stays mainly in the plain.",
];

#[test]
fn minilm_sentence_embeddings_equal_a_numpy_forward_pass() {
    let rm = similarity(&encoder_dir(), SimilarityMetric::Cosine);
    let ours: Vec<Vec<f32>> = rm
        .sentence_embeddings(SENTENCES)
        .unwrap()
        .into_iter()
        .map(|e| e.unwrap())
        .collect();
    let reference = python_json(
        "tests/reference/minilm_reference.py",
        &json!({"texts": SENTENCES}),
    );
    let mut worst = 0f32;
    for (i, expected) in reference["sentence_embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let expected: Vec<f32> = serde_json::from_value(expected.clone()).unwrap();
        assert_eq!(expected.len(), 384);
        worst = worst.max(common::max_abs_diff(&ours[i], &expected));
    }
    eprintln!("MiniLM sentence embeddings, Rust vs numpy: max |diff| = {worst:.2e}");
    assert!(worst < 1e-4, "max diff {worst}");
}

#[test]
fn cosine_and_bertscore_equal_python_and_left_padding_equals_right() {
    let pairs: Vec<(&str, &str)> = vec![
        (SENTENCES[0], SENTENCES[1]),
        (SENTENCES[0], SENTENCES[2]),
        (SENTENCES[3], SENTENCES[1]),
    ];
    let reference = python_json(
        "tests/reference/minilm_reference.py",
        &json!({"pairs": pairs}),
    );
    let rows: Vec<RewardInput<'_>> = pairs
        .iter()
        .map(|&(answer, reference)| RewardInput {
            prompt: "",
            response: answer,
            reference: Some(reference),
        })
        .collect();
    for (metric, key) in [
        (SimilarityMetric::Cosine, "cosine"),
        (SimilarityMetric::Bertscore, "bertscore_f1"),
    ] {
        let expected: Vec<f32> = serde_json::from_value(reference[key].clone()).unwrap();
        let right = ok(similarity(&encoder_dir(), metric).score(&rows).unwrap());
        let left = ok(similarity(&left_padded_encoder(), metric)
            .score(&rows)
            .unwrap());
        assert!(
            common::max_abs_diff(&right, &expected) < 1e-4,
            "{key}: {right:?} vs {expected:?}"
        );
        assert!(
            common::max_abs_diff(&left, &right) < 1e-5,
            "{key}: left {left:?} vs right {right:?}"
        );
    }
    // A row without a reference is rejected, not scored.
    let rm = similarity(&encoder_dir(), SimilarityMetric::Cosine);
    let scores = rm
        .score(&[RewardInput {
            prompt: "",
            response: "x",
            reference: None,
        }])
        .unwrap();
    assert_eq!(scores[0], Err(RowError::MissingReference));
}

#[test]
fn response_logprobs_equal_the_log_softmax_of_numpy_logits() {
    let model = ModelDir::open(&common::policy_dir()).unwrap();
    let engine = Engine::start(
        &model,
        EngineOptions {
            kv_slots: 4,
            max_seq_len: 512,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let (prompt, response) = (
        "What is the capital of France?",
        "The capital of France is Paris.",
    );
    let got = implicit::response_logprobs(&engine, &[(prompt, response)]);
    let got = got[0].as_ref().unwrap();
    let prompt_ids = engine.chat().question_prompt(prompt).unwrap();
    let response_ids = engine.tokenizer().encode(response).unwrap();
    assert_eq!(got.tokens, response_ids.len());
    let all: Vec<u32> = prompt_ids.iter().chain(&response_ids).copied().collect();
    let out = std::env::temp_dir().join(format!("tpo-lp-{}.f32", std::process::id()));
    let mut args = vec![out.display().to_string()];
    args.extend(all.iter().map(|t| t.to_string()));
    common::run_python("tests/reference/logits_reference.py", &args, "");
    let bytes = std::fs::read(&out).unwrap();
    let logits: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let vocab = logits.len() / all.len();
    let mut expected = 0f64;
    for (k, &token) in response_ids.iter().enumerate() {
        // The token at position p is predicted by the logits at p - 1.
        let row = &logits[(prompt_ids.len() + k - 1) * vocab..(prompt_ids.len() + k) * vocab];
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        expected += row[token as usize] as f64 - lse;
    }
    assert!(
        (got.sum - expected).abs() < 1e-2,
        "engine {} vs numpy {expected}",
        got.sum
    );
    let _ = std::fs::remove_file(&out);
}

#[test]
fn dpo_and_mrpo_equal_an_independent_numpy_implementation() {
    // Deterministic cases: random-looking log-probs, plus the edges (equal references, both
    // margins 0, clipping on either side, long answers).
    let mut cases = Vec::new();
    let mut x = 12345u64;
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    for i in 0..36 {
        let scale = if i % 3 == 0 { 800.0 } else { 60.0 };
        let mut lp = || -(next() * scale + 1.0);
        let (beta, eta) = ([0.1, 0.5, 0.01][i % 3], [0.1, 0.3, 0.0][i % 3]);
        let (policy, ref1, ref2) = ([lp(), lp()], [lp(), lp()], [lp(), lp()]);
        cases.push(json!({
            "beta": beta, "eta": eta, "policy": policy, "ref1": ref1, "ref2": ref2,
        }));
    }
    cases.push(json!({"beta": 0.1, "eta": 0.1, "policy": [-10.0, -12.0], "ref1": [-11.0, -11.0], "ref2": [-11.0, -11.0]}));
    cases.push(json!({"beta": 0.1, "eta": 0.1, "policy": [-10.0, -12.0], "ref1": [-20.0, -30.0], "ref2": [-20.0, -30.0]}));
    cases.push(json!({"beta": 0.1, "eta": 0.1, "policy": [-10.0, -12.0], "ref1": [-100.0, -100.0], "ref2": [-300.0, -20.0]}));
    cases.push(json!({"beta": 0.1, "eta": 0.1, "policy": [-10.0, -12.0], "ref1": [-100.0, -90.0], "ref2": [-100.0, -90.0]}));
    cases.push(json!({"beta": 0.1, "eta": 0.2, "policy": [-1500.0, -1700.0], "ref1": [-1600.0, -1650.0], "ref2": [-1400.0, -2000.0]}));
    cases.push(json!({"beta": 1.0, "eta": 0.1, "policy": [-5.0, -5.0], "ref1": [-5.0, -6.0], "ref2": [-6.0, -6.0]}));
    let reference = python_json(
        "tests/reference/mrpo_reference.py",
        &json!({"cases": cases}),
    );
    let results = reference["results"].as_array().unwrap();
    assert_eq!(results.len(), cases.len());
    for (case, expected) in cases.iter().zip(results) {
        let v = |k: &str, i: usize| case[k][i].as_f64().unwrap();
        let (beta, eta) = (
            case["beta"].as_f64().unwrap(),
            case["eta"].as_f64().unwrap(),
        );
        let chosen = ResponseLogprobs {
            policy: v("policy", 0),
            references: vec![v("ref1", 0), v("ref2", 0)],
        };
        let rejected = ResponseLogprobs {
            policy: v("policy", 1),
            references: vec![v("ref1", 1), v("ref2", 1)],
        };
        let close = |a: f64, b: &Value, what: &str| {
            let b = b.as_f64().unwrap();
            assert!(
                (a - b).abs() <= 1e-9 * (1.0 + b.abs()),
                "{what}: {a} vs numpy {b} in {case}"
            );
        };
        for (i, l) in [&chosen, &rejected].into_iter().enumerate() {
            close(
                implicit::dpo_reward(beta, l.policy, l.references[0]),
                &expected["dpo1"][i],
                "dpo1",
            );
            close(
                implicit::dpo_reward(beta, l.policy, l.references[1]),
                &expected["dpo2"][i],
                "dpo2",
            );
        }
        let m = implicit::mrpo_rewards(beta, eta, &chosen, Some(&rejected)).unwrap();
        close(m.alpha, &expected["alpha"], "alpha");
        close(m.chosen, &expected["mrpo"][0], "mrpo chosen");
        close(m.rejected.unwrap(), &expected["mrpo"][1], "mrpo rejected");
    }
}

/// The first `n` AlpacaEval pairs as (prompt, chosen, rejected, reference).
fn alpaca_pairs(n: usize) -> Vec<[String; 4]> {
    let path = common::project_root().join("data/alpaca_eval/pairs.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make setup`)", path.display()));
    text.lines()
        .take(n)
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap();
            ["prompt", "chosen", "rejected", "reference"].map(|k| row[k].as_str().unwrap().into())
        })
        .collect()
}

/// Each pair's chosen then rejected answer as reward inputs, with the pair's reference answer
/// when `with_reference`.
fn chosen_and_rejected(pairs: &[[String; 4]], with_reference: bool) -> Vec<RewardInput<'_>> {
    pairs
        .iter()
        .flat_map(|[prompt, chosen, rejected, reference]| {
            [chosen, rejected].map(|response| RewardInput {
                prompt,
                response,
                reference: with_reference.then_some(reference.as_str()),
            })
        })
        .collect()
}

/// The folder `NAME-SUFFIX` next to the float32 folder `NAME`, checked to be exported
/// (`export` says how).
fn variant_dir(f32_dir: &Path, suffix: &str, export: &str) -> PathBuf {
    let name = format!(
        "{}-{suffix}",
        f32_dir.file_name().unwrap().to_string_lossy()
    );
    let dir = f32_dir.with_file_name(name);
    assert!(
        dir.join("reward_config.json").is_file(),
        "{} is missing: run {export}",
        dir.display()
    );
    dir
}

/// A float16 folder next to its float32 one (`make f16-reward-models`, which `make test` runs).
fn f16_dir(f32_dir: &Path) -> PathBuf {
    variant_dir(f32_dir, "f16", "`make f16-reward-models` (or `make test`)")
}

/// An int8 folder next to its float32 one (`make setup` exports them).
fn int8_dir(f32_dir: &Path) -> PathBuf {
    variant_dir(f32_dir, "int8", "`make setup`")
}

/// `variant`'s scores are within `tolerance` of float32's `full` (the difference printed).
fn assert_tracks(what: &str, full: &[f32], variant: &[f32], tolerance: f32) {
    let diff = common::max_abs_diff(full, variant);
    eprintln!("{what} on {} rows: max |diff| = {diff:.2e}", full.len());
    assert!(
        diff < tolerance,
        "{what}: float32 {full:?}\nvariant {variant:?}"
    );
}

/// Rows of chosen/rejected pairs: `variant` prefers the same answer as float32's `full` on
/// every pair whose float32 margin is wider than `wide`.
fn assert_same_verdicts(what: &str, full: &[f32], variant: &[f32], wide: f32) {
    for (pair, (f, v)) in full.chunks(2).zip(variant.chunks(2)).enumerate() {
        let (margin_full, margin_variant) = (f[0] - f[1], v[0] - v[1]);
        if margin_full.abs() > wide {
            assert_eq!(
                margin_full > 0.0,
                margin_variant > 0.0,
                "{what}, pair {pair}: float32 margin {margin_full}, variant margin {margin_variant}"
            );
        }
    }
}

/// `rm` gives each row, scored alone, what it gave in one batch (`batched`), within `tolerance`.
fn assert_alone_as_batched(
    what: &str,
    rm: &dyn RewardModel,
    rows: &[RewardInput<'_>],
    batched: &[f32],
    tolerance: f32,
) {
    let alone: Vec<f32> = rows
        .iter()
        .flat_map(|row| ok(rm.score(std::slice::from_ref(row)).unwrap()))
        .collect();
    let diff = common::max_abs_diff(batched, &alone);
    assert!(
        diff < tolerance,
        "{what}: rows scored in one batch vs alone differ by {diff:.2e}:\n{batched:?}\n{alone:?}"
    );
}

/// The float16 judge (the GPU layout) against the float32 one through the same Rust reward
/// service, on real preference pairs: scores within a stated tolerance, and the same
/// preference on every pair whose float32 margin is larger than that tolerance.
#[test]
fn float16_judge_tracks_the_float32_judge_on_real_preference_pairs() {
    const SCORE_TOLERANCE: f32 = 0.05;
    let pairs = alpaca_pairs(4);
    let rows = chosen_and_rejected(&pairs, false);
    let dir = judge_dir();
    let load = |dir: &Path| reward::load_dir(dir, None, RewardOptions::default()).unwrap();
    let full = ok(load(&dir).score(&rows).unwrap());
    let half = ok(load(&f16_dir(&dir)).score(&rows).unwrap());
    let what = "judge float16 vs float32";
    assert_tracks(what, &full, &half, SCORE_TOLERANCE);
    assert_same_verdicts(what, &full, &half, 2.0 * SCORE_TOLERANCE);
}

/// The int8 judge (`--reward-model judge-int8`: int8 linears on MatMulInteger with per-row
/// activation scales and float32 outlier channels, built by `make setup`) through the same Rust
/// reward service, on real preference pairs: scores near float32's (its AlpacaEval gate
/// measured at most 0.124 apart over 402 answers), the same verdict wherever float32's margin is wide, and, because its
/// activations are quantized row by row, a row's score that does not depend on its batch mates.
#[test]
fn int8_judge_tracks_the_float32_judge_and_scores_a_row_alike_alone_or_batched() {
    const SCORE_TOLERANCE: f32 = 0.5;
    let pairs = alpaca_pairs(4);
    let rows = chosen_and_rejected(&pairs, false);
    let dir = judge_dir();
    assert_eq!(int8_dir(&dir), dir.with_file_name(paths::JUDGE_INT8_DIR));
    let load = |dir: &Path| reward::load_dir(dir, None, RewardOptions::default()).unwrap();
    let full = ok(load(&dir).score(&rows).unwrap());
    let int8 = load(&int8_dir(&dir));
    let batched = ok(int8.score(&rows).unwrap());
    let what = "judge int8 vs float32";
    assert_tracks(what, &full, &batched, SCORE_TOLERANCE);
    assert_same_verdicts(what, &full, &batched, 2.0 * SCORE_TOLERANCE);
    assert_alone_as_batched("judge int8", int8.as_ref(), &rows, &batched, 1e-3);
}

/// The float16 MiniLM against the float32 one: cosine and BERTScore of real answers to their
/// reference answers.
#[test]
fn float16_minilm_tracks_the_float32_encoder_on_real_answers() {
    const TOLERANCE: f32 = 2e-3;
    let pairs = alpaca_pairs(12);
    let rows = chosen_and_rejected(&pairs, true);
    let dir = encoder_dir();
    for metric in [SimilarityMetric::Cosine, SimilarityMetric::Bertscore] {
        let full = ok(similarity(&dir, metric).score(&rows).unwrap());
        let half = ok(similarity(&f16_dir(&dir), metric).score(&rows).unwrap());
        let what = format!("MiniLM {metric:?} float16 vs float32");
        assert_tracks(&what, &full, &half, TOLERANCE);
    }
}

/// MiniLM's int8 form (`similarity-int8`, `bertscore-int8`: int8 linears with per-row
/// activation scales, built by `make setup`) against float32 on real answers and their
/// references: cosine and BERTScore within a stated tolerance (its gate measured at most 0.023
/// apart over all 805 AlpacaEval pairs), and each row scored alike alone or batched.
#[test]
fn int8_minilm_tracks_the_float32_encoder_and_scores_a_row_alike_alone_or_batched() {
    const TOLERANCE: f32 = 0.05;
    let pairs = alpaca_pairs(12);
    let rows = chosen_and_rejected(&pairs, true);
    let dir = encoder_dir();
    assert_eq!(int8_dir(&dir), dir.with_file_name(paths::ENCODER_INT8_DIR));
    for metric in [SimilarityMetric::Cosine, SimilarityMetric::Bertscore] {
        let full = ok(similarity(&dir, metric).score(&rows).unwrap());
        let int8 = similarity(&int8_dir(&dir), metric);
        let batched = ok(int8.score(&rows).unwrap());
        let what = format!("MiniLM {metric:?} int8 vs float32");
        assert_tracks(&what, &full, &batched, TOLERANCE);
        assert_alone_as_batched(&what, &int8, &rows, &batched, 1e-4);
    }
}
