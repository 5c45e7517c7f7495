//! Helpers shared by the integration tests: where the real models and the project's Python
//! environment are, and how to run the Python references and the `tpo` binary.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The repo root: `TPO_HOME` when set (a test binary run on another machine, as
/// `scripts/gpu/run-all.sh` does), else the source tree it was built from.
pub fn project_root() -> PathBuf {
    match std::env::var("TPO_HOME") {
        Ok(home) if !home.is_empty() => PathBuf::from(home),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    }
}

/// Loads ONNX Runtime from the project's venv (once; what the CLI does at start).
pub fn init_runtime() {
    if let Err(e) = tpo_engine::paths::init_runtime() {
        panic!("ONNX Runtime (run `make setup`): {e}");
    }
}

/// The embedded reward model `name` (`judge`, `similarity`), with ONNX Runtime loaded.
pub fn reward_source(name: &str) -> tpo_engine::reward::RewardSource {
    init_runtime();
    tpo_engine::paths::reward_source(name)
}

/// The exported embedded policy, with ONNX Runtime loaded; tests fail (they do not skip)
/// when it is missing.
pub fn policy_dir() -> PathBuf {
    init_runtime();
    let dir = project_root().join("models").join("smollm2-135m-instruct");
    assert!(
        dir.join("genai_config.json").is_file(),
        "{} is missing: run `make setup` (or `make test`) first",
        dir.display()
    );
    dir
}

/// The float16 export of the policy (`make f16-model`, which `make test` runs).
pub fn policy_f16_dir() -> PathBuf {
    init_runtime();
    let dir = project_root()
        .join("models")
        .join("smollm2-135m-instruct-f16");
    assert!(
        dir.join("genai_config.json").is_file(),
        "{} is missing: run `make f16-model` (or `make test`) first",
        dir.display()
    );
    dir
}

pub fn python() -> PathBuf {
    let py = project_root().join(".venv").join("bin").join("python");
    assert!(
        py.is_file(),
        "{} is missing: run `make setup` first",
        py.display()
    );
    py
}

/// Runs a Python reference script with `stdin`, returning its stdout; panics with its stderr.
pub fn run_python(script: &str, args: &[String], stdin: &str) -> Vec<u8> {
    let mut child = Command::new(python())
        .arg(project_root().join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("python output");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs the `tpo` binary built for this test run.
pub fn tpo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tpo"))
        .args(args)
        .output()
        .expect("run tpo")
}

pub fn tpo_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tpo"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run tpo")
}

/// Largest |a[i] - b[i]| of two equally long vectors.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// (prompt, response) pairs the reward-model tests score: a right and a wrong answer to one
/// question, and two longer answers, so a batch pads every row but one.
pub const PAIRS: &[(&str, &str)] = &[
    ("What is 2 + 2?", "2 + 2 = 4."),
    ("What is 2 + 2?", "It is 5."),
    (
        "Name a primary color.",
        "Red is a primary color, along with blue and yellow in the traditional model.",
    ),
    (
        "How do I boil an egg?",
        "Place the egg in boiling water for about nine minutes, then cool it in cold water \
         before peeling.",
    ),
];
