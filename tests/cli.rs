//! The `tpo` command line on the real model: answers on stdout, diagnostics on stderr,
//! and a clear error (never a panic) for each kind of bad input.

mod common;

use std::path::Path;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_clean_failure(out: &std::process::Output, needle: &str) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    assert!(
        err.contains(needle),
        "error does not mention {needle:?}: {err}"
    );
}

#[test]
fn generate_prints_the_answer_on_stdout_and_speed_on_stderr() {
    let out = common::tpo(&[
        "generate",
        "--max-new-tokens",
        "24",
        "What is the capital of France?",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(answer.contains("Paris"), "{answer}");
    assert!(stderr(&out).contains("tokens/s"));
}

/// `--model q4` is the int4 folder `make setup` exports, and `tpo models list` shows every
/// format with its folder and the quality gate it passed or failed.
#[test]
fn a_policy_format_is_chosen_by_its_short_name() {
    let out = common::tpo(&[
        "generate",
        "--model",
        "q4",
        "--max-new-tokens",
        "12",
        "What is the capital of France?",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
    let out = common::tpo(&["models", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    for needle in [
        "f32",
        "f16",
        "q4",
        "smollm2-135m-instruct-q4",
        "int8",
        "smollm2-135m-instruct-int8",
        "judge",
        "similarity",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from: {text}");
    }
    assert!(
        text.contains("gate passed") || text.contains("gate FAILED"),
        "{text}"
    );
    // A name that is no format is a folder, and a missing folder is named as such.
    let out = common::tpo(&["generate", "--model", "q5", "hi"]);
    assert_clean_failure(&out, "q5");
}

#[test]
fn doctor_exits_zero_on_a_usable_setup() {
    let out = common::tpo(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("1.31"), "{text}");
    assert!(text.contains("smollm2-135m-instruct"), "{text}");
}

#[test]
fn a_missing_model_folder_names_the_folder_and_the_fix() {
    let out = common::tpo(&["generate", "--model", "/nonexistent/model", "hi"]);
    assert_clean_failure(&out, "/nonexistent/model");
    assert!(stderr(&out).contains("make setup"));
}

/// A copy of the policy folder whose large files are symlinks and whose config is replaced.
fn folder_with_config(name: &str, config: &str) -> std::path::PathBuf {
    let src = common::policy_dir();
    let dst = std::env::temp_dir().join(format!("tpo_cli_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let target = dst.join(entry.file_name());
        std::os::unix::fs::symlink(entry.path(), &target).unwrap();
    }
    std::fs::remove_file(dst.join("genai_config.json")).unwrap();
    std::fs::write(dst.join("genai_config.json"), config).unwrap();
    dst
}

#[test]
fn a_corrupt_model_config_is_named() {
    let good = std::fs::read_to_string(common::policy_dir().join("genai_config.json")).unwrap();
    let dir = folder_with_config("truncated", &good[..good.len() / 2]);
    let out = common::tpo(&["generate", "--model", dir.to_str().unwrap(), "hi"]);
    assert_clean_failure(&out, "genai_config.json");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_graph_that_lacks_the_configured_inputs_is_named() {
    let good = std::fs::read_to_string(common::policy_dir().join("genai_config.json")).unwrap();
    let dir = folder_with_config(
        "renamed",
        &good.replace("past_key_values.%d.key", "past.%d.k"),
    );
    let out = common::tpo(&["generate", "--model", dir.to_str().unwrap(), "hi"]);
    assert_clean_failure(&out, "past.0.k");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_onnx_file_is_named() {
    let dir = folder_with_config(
        "noonnx",
        &std::fs::read_to_string(common::policy_dir().join("genai_config.json")).unwrap(),
    );
    std::fs::remove_file(dir.join("model.onnx")).unwrap();
    let out = common::tpo(&["generate", "--model", dir.to_str().unwrap(), "hi"]);
    assert_clean_failure(&out, "model.onnx");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_wrong_onnxruntime_library_is_a_clear_error() {
    let not_ort = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).is_file())
    .expect("libm for the test");
    let out = common::tpo_with_env(&["generate", "hi"], &[("ORT_DYLIB_PATH", not_ort)]);
    assert_clean_failure(&out, "OrtGetApiBase");
    let out = common::tpo_with_env(
        &["generate", "hi"],
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    assert_clean_failure(&out, "no such file");
}

#[test]
fn an_unknown_device_lists_the_valid_ones() {
    let out = common::tpo(&["generate", "--device", "tpu", "hi"]);
    assert_clean_failure(&out, "cpu, cuda[:N], tensorrt[:N]");
}

#[test]
fn a_missing_gpu_provider_is_an_error_not_a_cpu_fallback() {
    let out = common::tpo(&["generate", "--device", "cuda", "hi"]);
    if out.status.success() {
        // Only on a machine whose ONNX Runtime has CUDA; then it really ran there.
        return;
    }
    assert_clean_failure(&out, "CUDAExecutionProvider");
}

#[test]
fn invalid_sampling_parameters_are_named() {
    assert_clean_failure(&common::tpo(&["generate", "--top-p", "1.5", "hi"]), "top_p");
    assert_clean_failure(
        &common::tpo(&["generate", "--temperature=-1", "hi"]),
        "temperature",
    );
    assert_clean_failure(
        &common::tpo(&["generate", "--max-new-tokens", "0", "hi"]),
        "max_new_tokens",
    );
}

#[test]
fn a_prompt_longer_than_the_context_is_refused() {
    let out = common::tpo(&[
        "generate",
        "--max-seq-len",
        "16",
        "Tell me everything about the history of Rome.",
    ]);
    assert_clean_failure(&out, "context holds 16");
}

#[test]
fn onnxruntime_genai_runs_the_exported_folder() {
    let out = std::process::Command::new(common::python())
        .arg(common::project_root().join("models/check_genai.py"))
        .arg(common::policy_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("Paris"), "{text}");
}

/// A TPO search whose critique prompt (question + two answers) cannot fit the context is
/// refused before any work, naming the flag and the largest value that fits.
#[test]
fn a_search_that_cannot_fit_the_context_is_refused_before_any_work() {
    let out = common::tpo(&[
        "search",
        "--max-new-tokens",
        "1500",
        "--max-seq-len",
        "2048",
        "--reward-model",
        "judge",
        "How do I boil an egg?",
    ]);
    assert_clean_failure(&out, "does not fit the context");
    assert_clean_failure(&out, "lower --max-new-tokens to at most");
    // Nothing was generated: no step was reported.
    assert!(!stderr(&out).contains("best reward"), "{}", stderr(&out));
}
