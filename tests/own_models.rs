//! A user's own model folders, in the layouts exporters write. The embedded judge in
//! optimum's sequence-classification layout (`models/smollm2-judge-optimum`, written by
//! `models/export_judge_optimum.py` from the same weights: one `logits [B, 1]` output, the
//! reward read at the last token that is not the pad id, no reward_config.json) loads with an
//! inferred config and scores what the hidden-states judge scores; the same folder with a
//! wrong pad id is refused at load by the self-check; the policy checks itself and its
//! sliding window.

mod common;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tpo_engine::engine::{Engine, EngineError, EngineOptions};
use tpo_engine::model::ModelDir;
use tpo_engine::paths;
use tpo_engine::reward::{self, RewardError, RewardInput, RewardModel, RewardOptions, RowError};

use common::PAIRS;

fn models_dir(name: &str) -> PathBuf {
    common::init_runtime();
    let dir = common::project_root().join("models").join(name);
    assert!(
        dir.is_dir(),
        "{} is missing: run `make setup`",
        dir.display()
    );
    dir
}

/// A fresh folder of links to `src`'s files: those in `keep` (all when empty) except those in
/// `skip`.
fn links(src: &Path, name: &str, keep: &[&str], skip: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tpo-own-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let file = entry.unwrap().file_name();
        let file = file.to_str().unwrap();
        if !skip.contains(&file) && (keep.is_empty() || keep.contains(&file)) {
            std::os::unix::fs::symlink(src.join(file), dir.join(file)).unwrap();
        }
    }
    dir
}

/// A reward folder of links to `src`'s files (all but reward_config.json, or those in
/// `keep`), with `config` written as its reward_config.json when given.
fn linked(src: &Path, name: &str, keep: &[&str], config: Option<&Value>) -> PathBuf {
    let dir = links(src, name, keep, &["reward_config.json"]);
    if let Some(config) = config {
        std::fs::write(dir.join("reward_config.json"), config.to_string()).unwrap();
    }
    dir
}

fn judge_config() -> Value {
    let text =
        std::fs::read_to_string(models_dir(paths::JUDGE_DIR).join("reward_config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn scores(model: &dyn RewardModel) -> Vec<f32> {
    let inputs: Vec<RewardInput<'_>> = PAIRS
        .iter()
        .map(|&(prompt, response)| RewardInput {
            prompt,
            response,
            reference: None,
        })
        .collect();
    model
        .score(&inputs)
        .unwrap()
        .into_iter()
        .map(|s: Result<f32, RowError>| s.expect("row scored"))
        .collect()
}

fn load(dir: &Path) -> Result<Box<dyn RewardModel>, RewardError> {
    reward::load_dir(dir, None, RewardOptions::default())
}

#[test]
fn an_optimum_layout_rm_loads_with_an_inferred_config_and_scores_like_the_hidden_states_judge() {
    let optimum = models_dir("smollm2-judge-optimum");
    assert!(!optimum.join("reward_config.json").exists());
    let model = load(&optimum).unwrap();
    let report = model
        .load_report()
        .expect("a folder model has a load report");
    let inferred = |field: &str| {
        report
            .inferred
            .iter()
            .find(|i| i.field == field)
            .map(|i| (i.value.clone(), i.from.clone()))
    };
    assert_eq!(
        inferred("pad_token_id"),
        Some(("2".into(), "config.json \"pad_token_id\"".into()))
    );
    assert_eq!(inferred("layout").map(|v| v.0), Some("logits".into()));
    assert_eq!(inferred("input_format").map(|v| v.0), Some("chat".into()));
    assert_eq!(report.config.max_length, 8192);
    let check = report.self_check.as_ref().expect("the self-check ran");
    assert!(check.difference <= check.tolerance, "{check:?}");

    // The hidden-states judge, read as a chat-format RM: the same weights and head.
    let mut config = judge_config();
    config["input_format"] = json!("chat");
    config.as_object_mut().unwrap().remove("judge");
    let hidden = linked(
        &models_dir(paths::JUDGE_DIR),
        "judge-chat",
        &[],
        Some(&config),
    );
    let expected = scores(load(&hidden).unwrap().as_ref());
    let got = scores(model.as_ref());
    let diff = common::max_abs_diff(&got, &expected);
    assert!(
        diff < 1e-3,
        "optimum layout {got:?} vs hidden states {expected:?}"
    );
    assert!(
        (got[0] - got[1]).abs() > 1e-3,
        "the pairs score differently: {got:?}"
    );
    let _ = std::fs::remove_dir_all(&hidden);
}

#[test]
fn a_partial_reward_config_completes_the_inferred_one() {
    // Only the judging prompts are written; every other field is inferred.
    let full = judge_config();
    let partial = json!({"input_format": "judge", "judge": full["judge"]});
    let dir = linked(
        &models_dir("smollm2-judge-optimum"),
        "optimum-judge",
        &[],
        Some(&partial),
    );
    let model = load(&dir).unwrap();
    let judge = reward::load(&common::reward_source("judge"), RewardOptions::default()).unwrap();
    let (got, expected) = (scores(model.as_ref()), scores(judge.as_ref()));
    let diff = common::max_abs_diff(&got, &expected);
    assert!(
        diff < 1e-3,
        "partial {got:?} vs embedded judge {expected:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wrong_pad_id_is_refused_at_load_naming_the_right_one() {
    let dir = linked(
        &models_dir("smollm2-judge-optimum"),
        "wrong-pad",
        &[],
        Some(&json!({"pad_token_id": 0})),
    );
    match load(&dir) {
        Err(RewardError::SelfCheck { reason, .. }) => {
            assert!(
                reason.contains("\"pad_token_id\": 2")
                    && reason.contains("config.json \"pad_token_id\""),
                "{reason}"
            );
        }
        Err(other) => panic!("expected a self-check refusal, got {other}"),
        Ok(_) => panic!("a wrong pad id loaded"),
    }
    // Without the check the folder loads and scores padded rows wrong: what the check is for.
    let unchecked = reward::load_dir(
        &dir,
        None,
        RewardOptions {
            self_check: false,
            ..RewardOptions::default()
        },
    )
    .unwrap();
    let right = load(&models_dir("smollm2-judge-optimum")).unwrap();
    let diff = common::max_abs_diff(&scores(unchecked.as_ref()), &scores(right.as_ref()));
    assert!(diff > 0.05, "pad id 0 should change padded rows: {diff}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn what_cannot_be_inferred_is_named_all_at_once() {
    let dir = linked(
        &models_dir("smollm2-judge-optimum"),
        "bare",
        &["model.onnx", "model.onnx.data", "tokenizer.json"],
        None,
    );
    let err = match load(&dir) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a folder with nothing to infer from loaded"),
    };
    for field in ["\"kind\"", "\"max_length\"", "\"pad_token_id\""] {
        assert!(err.contains(field), "{field} not named: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn models_inspect_shows_the_inference_and_write_saves_a_config_that_loads_the_same() {
    let dir = linked(&models_dir("smollm2-judge-optimum"), "inspect", &[], None);
    let out = common::tpo(&["models", "inspect", dir.to_str().unwrap(), "--write"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("absent: every field inferred"), "{stdout}");
    assert!(
        stdout.contains("pad_token_id = 2 (config.json \"pad_token_id\")"),
        "{stdout}"
    );
    assert!(stdout.contains("self-check       passed"), "{stdout}");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reward_config.json")).unwrap())
            .unwrap();
    assert_eq!(written["layout"], "logits");
    assert_eq!(written["pad_token_id"], 2);
    let model = load(&dir).unwrap();
    assert!(model.load_report().unwrap().inferred.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The policy folder with `genai_config.json` edited by `edit`.
fn policy_with(name: &str, edit: impl Fn(&mut Value)) -> PathBuf {
    let src = common::policy_dir();
    let dir = links(&src, name, &[], &["genai_config.json"]);
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("genai_config.json")).unwrap())
            .unwrap();
    edit(&mut config);
    std::fs::write(dir.join("genai_config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn the_policy_checks_itself_and_its_sliding_window_at_start() {
    common::init_runtime();
    let options = |max_seq_len| EngineOptions {
        kv_slots: 4,
        max_seq_len,
        ..EngineOptions::default()
    };
    let engine = Engine::start(
        &ModelDir::open(&common::policy_dir()).unwrap(),
        options(256),
    )
    .unwrap();
    let check = engine.self_check();
    assert!(
        check.prefill_difference <= check.tolerance && check.decode_difference <= check.tolerance,
        "{check:?}"
    );
    drop(engine);
    // A declared window of 512 (as the model builder writes it for Gemma 3).
    let dir = policy_with("window", |c| {
        c["model"]["decoder"]["sliding_window"] = json!({
            "window_size": 512, "pad_value": 0, "alignment": "left",
            "slide_key_value_cache": false, "slide_inputs": false
        });
    });
    let model = ModelDir::open(&dir).unwrap();
    match Engine::start(&model, options(256)) {
        Err(e @ EngineError::BelowSlidingWindow { .. }) => {
            let text = e.to_string();
            assert!(text.contains("256") && text.contains("512"), "{text}");
        }
        Err(other) => panic!("expected the sliding-window refusal, got {other}"),
        Ok(_) => panic!("--max-seq-len 256 started below a 512 window"),
    }
    assert!(Engine::start(&model, options(512)).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_tokenizer_that_pads_and_truncates_by_itself_is_not_left_to() {
    // The upstream MiniLM tokenizer.json (what optimum copies into its export) pads every
    // text to 128 [PAD] ids and cuts it at 128; the engine pads and truncates itself.
    let src = models_dir(paths::ENCODER_DIR);
    let dir = linked(&src, "padding-tokenizer", &["model.onnx"], None);
    std::fs::copy(
        src.join("reward_config.json"),
        dir.join("reward_config.json"),
    )
    .unwrap();
    let mut tokenizer: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap())
            .unwrap();
    tokenizer["padding"] = json!({"strategy": {"Fixed": 128}, "direction": "Right",
        "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"});
    tokenizer["truncation"] = json!({"direction": "Right", "max_length": 128,
        "strategy": "LongestFirst", "stride": 0});
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let ids = tpo_engine::model::Tokenizer::load(&dir)
        .unwrap()
        .encode("A man is eating food.")
        .unwrap();
    assert!(ids.len() < 16, "{} ids: the tokenizer padded", ids.len());
    let rows = [
        ("", "A man is eating food."),
        ("", "A man is eating a piece of bread."),
    ];
    let inputs: Vec<RewardInput<'_>> = rows
        .iter()
        .map(|&(prompt, response)| RewardInput {
            prompt,
            response,
            reference: Some("Someone eats a meal."),
        })
        .collect();
    let score = |dir: &Path| -> Vec<f32> {
        load(dir)
            .unwrap()
            .score(&inputs)
            .unwrap()
            .into_iter()
            .map(|s| s.unwrap())
            .collect()
    };
    let diff = common::max_abs_diff(&score(&dir), &score(&src));
    assert!(diff < 1e-5, "padding tokenizer scores differ by {diff}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_policy_without_a_chat_template_runs_raw_prompts_and_names_the_file_for_chats() {
    common::init_runtime();
    let dir = links(
        &common::policy_dir(),
        "no-template",
        &[],
        &["chat_template.jinja", "tokenizer_config.json"],
    );
    let engine = Engine::start(
        &ModelDir::open(&dir).unwrap(),
        EngineOptions {
            kv_slots: 2,
            max_seq_len: 256,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let err = engine
        .chat()
        .question_prompt("Hello?")
        .unwrap_err()
        .to_string();
    assert!(err.contains("chat_template.jinja"), "{err}");
    let out = common::tpo(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--raw",
        "--max-new-tokens",
        "4",
        "The capital of France is",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tpo_search_takes_a_reward_folder_by_path_and_says_what_it_inferred() {
    // A folder path (not a keyword) names the model by its last component inside the app;
    // the search must find it by the path it was given.
    let rm = models_dir("smollm2-judge-optimum");
    let out = common::tpo(&[
        "search",
        "--reward-model",
        rm.to_str().unwrap(),
        "--strategy",
        "bon",
        "--width",
        "2",
        "--max-new-tokens",
        "8",
        "--seed",
        "1",
        "What is 2 + 2?",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
    assert!(
        stderr.contains("inferred from the folder") && stderr.contains("pad_token_id = 2"),
        "{stderr}"
    );
}
