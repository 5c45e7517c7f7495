//! `tpo score` end to end on the real models and the real AlpacaEval pairs: resume after
//! SIGKILL, shards, bad rows, Parquet, implicit rewards, exit codes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn pairs_file() -> PathBuf {
    let path = common::project_root().join("data/alpaca_eval/pairs.jsonl");
    assert!(
        path.is_file(),
        "{} is missing: run `make setup`",
        path.display()
    );
    path
}

/// A fresh folder for one test.
fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tpo-score-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The first `n` real pairs as a JSONL file.
fn first_pairs(dir: &Path, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(pairs_file()).unwrap();
    let rows: Vec<&str> = text.lines().take(n).collect();
    let path = dir.join("pairs.jsonl");
    std::fs::write(&path, rows.join("\n") + "\n").unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn rows_of(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn progress_rows(output: &Path) -> usize {
    let mut p = output.as_os_str().to_owned();
    p.push(".progress.json");
    std::fs::read_to_string(PathBuf::from(p))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["rows_done"].as_u64())
        .unwrap_or(0) as usize
}

/// Starts `tpo score` and SIGKILLs it once its progress record shows `at_least` rows.
fn kill_after(args: &[&str], output: &Path, at_least: usize) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tpo"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    while progress_rows(output) < at_least {
        assert!(
            child.try_wait().unwrap().is_none(),
            "tpo score exited before {at_least} rows were committed"
        );
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "tpo score finished before it could be killed"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn a_run_killed_twice_resumes_to_exactly_the_uninterrupted_output() {
    let dir = workdir("resume");
    let input = first_pairs(&dir, 24);
    let (whole, resumed) = (dir.join("whole.jsonl"), dir.join("resumed.jsonl"));
    let args = |out: &Path| {
        vec![
            "score".to_string(),
            "--input".into(),
            s(&input).into(),
            "--output".into(),
            s(out).into(),
            "--chunk-rows".into(),
            "3".into(),
        ]
    };
    let run = |out: &Path| {
        let a = args(out);
        common::tpo(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let first = run(&whole);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );

    let a = args(&resumed);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    kill_after(&a, &resumed, 3);
    let after_first_kill = progress_rows(&resumed);
    kill_after(&a, &resumed, 12);
    assert!(progress_rows(&resumed) > after_first_kill);
    let last = common::tpo(&a);
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    assert!(String::from_utf8_lossy(&last.stderr).contains("resumed after"));

    let (w, r) = (
        std::fs::read(&whole).unwrap(),
        std::fs::read(&resumed).unwrap(),
    );
    assert_eq!(
        w, r,
        "the resumed output differs from the uninterrupted one"
    );
    let ids: Vec<String> = rows_of(&resumed)
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..24).map(|i| format!("alpaca_eval-{i:04}")).collect();
    assert_eq!(ids, expected, "every row once, in order");

    // A finished job rerun changes nothing.
    let again = common::tpo(&a);
    assert!(again.status.success());
    assert_eq!(std::fs::read(&resumed).unwrap(), w);

    // A different run into the same output is refused, naming the way out.
    let mut other = a.clone();
    other.extend(["--shard", "0/2"]);
    let refused = common::tpo(&other);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("shard") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(std::fs::read(&resumed).unwrap(), w);
}

#[test]
fn shards_concatenated_in_order_equal_the_whole_run() {
    let dir = workdir("shards");
    let input = first_pairs(&dir, 24);
    let whole = dir.join("whole.jsonl");
    let base = [
        "score",
        "--reward-model",
        "similarity",
        "--input",
        s(&input),
    ];
    let out = common::tpo(&[&base[..], &["--output", s(&whole)]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut merged = Vec::new();
    for i in 0..3 {
        let path = dir.join(format!("shard{i}.jsonl"));
        let shard = format!("{i}/3");
        let out = common::tpo(&[&base[..], &["--output", s(&path), "--shard", &shard]].concat());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows = rows_of(&path);
        assert_eq!(rows.len(), 8, "shard {i}");
        merged.extend(rows);
    }
    let whole = rows_of(&whole);
    assert_eq!(merged.len(), whole.len());
    for (m, w) in merged.iter().zip(&whole) {
        assert_eq!(m["id"], w["id"]);
        assert_eq!(m["line"], w["line"]);
        let d = (m["margin"].as_f64().unwrap() - w["margin"].as_f64().unwrap()).abs();
        assert!(d < 1e-4, "{m} vs {w}");
    }
}

#[test]
fn bad_rows_go_to_the_errors_file_with_line_and_reason_and_the_run_goes_on() {
    let dir = workdir("bad");
    let input = dir.join("rows.jsonl");
    let long = "word ".repeat(3000);
    let lines = [
        r#"{"id": "good1", "prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"}"#
            .to_string(),
        r#"{"id": "badjson", "prompt": "#.to_string(),
        r#"{"id": "missing", "prompt": "Hi", "chosen": "Hello"}"#.to_string(),
        String::new(),
        r#"{"id": "wrongtype", "prompt": "Hi", "chosen": 7, "rejected": "x"}"#.to_string(),
        serde_json::json!({"id": "toolong", "prompt": "Talk", "chosen": long, "rejected": "ok"})
            .to_string(),
        r#"{"id": "good2", "prompt": "Name a color.", "chosen": "Blue.", "rejected": "Seven."}"#
            .to_string(),
    ];
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let output = dir.join("out.jsonl");
    let out = common::tpo(&["score", "--input", s(&input), "--output", s(&output)]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scored: Vec<String> = rows_of(&output)
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(scored, ["good1", "good2"]);
    let errors = rows_of(&dir.join("out.jsonl.errors.jsonl"));
    let by_line: Vec<(u64, String)> = errors
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        by_line.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        [2, 3, 5, 6]
    );
    assert!(by_line[0].1.contains("invalid JSON"), "{by_line:?}");
    assert!(
        by_line[1].1.contains("`rejected` is missing"),
        "{by_line:?}"
    );
    assert!(
        by_line[2].1.contains("`chosen` must be a string"),
        "{by_line:?}"
    );
    assert!(by_line[3].1.contains("at most 2048"), "{by_line:?}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out.jsonl.summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["rows_scored"], 2);
    assert_eq!(summary["rows_rejected"], 4);
}

#[test]
fn parquet_conversations_score_like_the_same_rows_as_jsonl_strings() {
    let dir = workdir("parquet");
    let jsonl = first_pairs(&dir, 6);
    let parquet = dir.join("pairs.parquet");
    common::run_python(
        "tests/reference/write_parquet.py",
        &[s(&parquet).to_string()],
        &std::fs::read_to_string(&jsonl).unwrap(),
    );
    let score = |input: &Path, out: &Path| {
        let o = common::tpo(&[
            "score",
            "--reward-model",
            "similarity",
            "--input",
            s(input),
            "--output",
            s(out),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        rows_of(out)
    };
    let a = score(&jsonl, &dir.join("a.jsonl"));
    let b = score(&parquet, &dir.join("b.jsonl"));
    assert_eq!(a.len(), 6);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["id"], y["id"]);
        for k in ["chosen_reward", "rejected_reward"] {
            let d = (x[k].as_f64().unwrap() - y[k].as_f64().unwrap()).abs();
            assert!(d < 1e-6, "{k}: {x} vs {y}");
        }
    }
}

#[test]
fn implicit_rewards_of_the_policy_against_itself_are_zero_with_dpo_and_mrpo() {
    let dir = workdir("implicit");
    let input = dir.join("rows.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"What is 2 + 2?\", \"chosen\": \"4\", \"rejected\": \"5\"}\n\
         {\"prompt\": \"Name a color.\", \"response\": \"Blue.\"}\n",
    )
    .unwrap();
    let policy = common::policy_dir();
    let output = dir.join("out.jsonl");
    let out = common::tpo(&[
        "score",
        "--input",
        s(&input),
        "--output",
        s(&output),
        "--reward-model",
        "none",
        "--reference-model",
        s(&policy),
        "--reference-model",
        s(&policy),
        "--mrpo",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = rows_of(&output);
    let pair = &rows[0];
    let lp = pair["implicit"]["policy"]["chosen_logprob"]
        .as_f64()
        .unwrap();
    assert!(lp < 0.0, "{pair}");
    let reference = &pair["implicit"]["references"][0];
    assert_eq!(reference["chosen_logprob"].as_f64().unwrap(), lp);
    assert_eq!(pair["implicit"]["mrpo"]["alpha"], 0.5);
    assert_eq!(pair["margin"], 0.0, "{pair}");
    assert_eq!(pair["chosen_reward"], 0.0);
    let single = &rows[1];
    assert_eq!(single["id"], 2);
    assert_eq!(single["reward"], 0.0, "{single}");
}

#[test]
fn usage_errors_exit_1_with_the_reason() {
    let dir = workdir("usage");
    let input = first_pairs(&dir, 2);
    let out = dir.join("o.jsonl");
    let policy = common::policy_dir();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--mrpo", "--reference-model", s(&policy)],
            "exactly two",
        ),
        (
            vec!["--reward-model", "none"],
            "needs at least one --reference-model",
        ),
        (vec!["--shard", "3/3"], "0 <= i < n"),
        (
            vec!["--reward-model", "/nonexistent/rm"],
            "not a folder or a known name",
        ),
        (
            vec![
                "--chunk-rows",
                "2049",
                "--reward-model",
                "none",
                "--reference-model",
                s(&policy),
            ],
            "2049 is not in 1..=1024",
        ),
    ];
    for (extra, reason) in cases {
        let mut args = vec!["score", "--input", s(&input), "--output", s(&out)];
        args.extend(extra);
        let o = common::tpo(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(reason), "{args:?}: {err}");
    }
    let o = common::tpo(&[
        "score",
        "--input",
        "/nonexistent.jsonl",
        "--output",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a file"));
}

#[test]
fn a_second_tpo_score_on_the_same_output_is_refused_and_the_first_writes_every_row_once() {
    let dir = workdir("lock");
    let n = 320;
    let input = first_pairs(&dir, n);
    let output = dir.join("out.jsonl");
    let args = [
        "score",
        "--reward-model",
        "similarity",
        "--input",
        s(&input),
        "--output",
        s(&output),
        "--chunk-rows",
        "8",
    ];
    let first = Command::new(env!("CARGO_BIN_EXE_tpo"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    while progress_rows(&output) < 8 {
        assert!(Instant::now() < deadline, "the first run made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    // A restarted pod while the old one is still stopping: the same command, then with
    // --overwrite; neither may write.
    let with_overwrite: Vec<&str> = args.iter().copied().chain(["--overwrite"]).collect();
    for second in [&args[..], &with_overwrite] {
        let refused = common::tpo(second);
        let err = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{second:?}: {err}");
        assert!(
            err.contains(s(&output)) && err.contains("another `tpo score` is writing"),
            "{second:?}: {err}"
        );
    }
    assert!(
        progress_rows(&output) < n,
        "the first run ended before the second started: give it a bigger input"
    );
    let first = first.wait_with_output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let ids: Vec<String> = rows_of(&output)
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..n).map(|i| format!("alpaca_eval-{i:04}")).collect();
    assert_eq!(ids, expected, "every row once, in order");
}

#[test]
fn an_output_errors_or_summary_path_that_is_the_input_is_refused_and_the_input_kept() {
    let dir = workdir("same-file");
    let input = first_pairs(&dir, 3);
    let before = std::fs::read(&input).unwrap();
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let link = dir.join("link.jsonl");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    let dotted = dir.join("sub/../pairs.jsonl");
    let dot = PathBuf::from(format!("{}/./pairs.jsonl", dir.display()));
    let out = dir.join("out.jsonl");
    let cases: Vec<Vec<&str>> = vec![
        vec!["--output", s(&input)],
        vec!["--output", s(&dotted)],
        vec!["--output", s(&link)],
        vec!["--output", s(&out), "--errors", s(&dot)],
        vec!["--output", s(&out), "--errors", s(&link)],
        vec!["--output", s(&out), "--summary", s(&dotted)],
    ];
    for extra in cases {
        let mut args = vec![
            "score",
            "--reward-model",
            "similarity",
            "--overwrite",
            "--input",
            s(&input),
        ];
        args.extend(extra);
        let o = common::tpo(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("is the input"), "{args:?}: {err}");
        assert_eq!(std::fs::read(&input).unwrap(), before, "{args:?}");
    }
}

#[test]
fn an_invalid_utf8_line_is_a_row_error_and_a_killed_run_resumes_past_it() {
    let dir = workdir("utf8");
    let text = std::fs::read_to_string(pairs_file()).unwrap();
    let mut input_bytes = Vec::new();
    for (i, line) in text.lines().take(48).enumerate() {
        if i == 1 {
            input_bytes.extend_from_slice(b"{\"id\": \"bad\xff\", \"prompt\": \"q\", ");
            input_bytes.extend_from_slice(b"\"chosen\": \"a\", \"rejected\": \"b\"}\n");
        }
        input_bytes.extend_from_slice(line.as_bytes());
        input_bytes.push(b'\n');
    }
    let input = dir.join("rows.jsonl");
    std::fs::write(&input, input_bytes).unwrap();
    let (whole, resumed) = (dir.join("whole.jsonl"), dir.join("resumed.jsonl"));
    let args = |out: &Path| {
        [
            "score",
            "--reward-model",
            "similarity",
            "--input",
            s(&input),
            "--output",
            s(out),
            "--chunk-rows",
            "3",
        ]
        .map(String::from)
        .to_vec()
    };
    let a = args(&whole);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let first = common::tpo(&a);
    assert_eq!(
        first.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(rows_of(&whole).len(), 48);
    let errors = rows_of(&dir.join("whole.jsonl.errors.jsonl"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["line"], 2);
    let reason = errors[0]["error"].as_str().unwrap();
    assert!(reason.contains("not valid UTF-8"), "{reason}");

    let a = args(&resumed);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    kill_after(&a, &resumed, 3);
    let last = common::tpo(&a);
    assert_eq!(
        last.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    assert!(String::from_utf8_lossy(&last.stderr).contains("resumed after"));
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&resumed).unwrap()
    );
    assert_eq!(
        std::fs::read(dir.join("whole.jsonl.errors.jsonl")).unwrap(),
        std::fs::read(dir.join("resumed.jsonl.errors.jsonl")).unwrap()
    );
}
