//! A peer engine as a long-lived worker process speaking JSON lines (the scripts in
//! `benches/peers/`), so a bench can interleave its runs with ours in one process's
//! timeline: A, B, A, B …
//!
//! Protocol (one JSON object per line): the worker first prints
//! `{"ready": true, "peer", "version", "model", "weights_bytes"}` (or `{"ready": false,
//! "error"}`), then answers each `{"op": "generate", "prompt_ids", "batch", "tokens"}` with
//! `{"ok": true, "batch", "tokens", "prompt_tokens", "prefill_seconds", "total_seconds",
//! "first_ids"}` or `{"ok": false, "error"}`; `{"op": "quit"}` or closing its input ends
//! it. Every engine gets the same token ids, greedy, EOS ignored, so the work is the same.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::BenchError;

/// What a worker says once its model is loaded.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PeerInfo {
    pub peer: String,
    pub version: String,
    pub model: String,
    /// Bytes of the weights file(s): what batch-1 decode reads per token.
    pub weights_bytes: u64,
}

/// One timed generation: `batch` copies of the prompt, `tokens` new tokens each.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DecodeRun {
    pub batch: usize,
    pub tokens: usize,
    pub prompt_tokens: usize,
    pub prefill_seconds: f64,
    pub total_seconds: f64,
    /// The first sequence's generated ids (for the greedy cross-check between engines).
    pub first_ids: Vec<u32>,
}

impl DecodeRun {
    /// Generated tokens per wall second, prefill included: batch × tokens ÷ total.
    pub fn tokens_per_second(&self) -> f64 {
        (self.batch * self.tokens) as f64 / self.total_seconds.max(1e-9)
    }
}

#[derive(Deserialize)]
struct Ready {
    ready: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(flatten)]
    info: Option<PeerInfo>,
}

#[derive(Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(flatten)]
    run: Option<DecodeRun>,
}

/// A running worker. Dropping it asks it to quit, then kills it if it has not.
pub struct PeerWorker {
    name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    info: PeerInfo,
}

impl PeerWorker {
    /// Starts `program args…` (stderr to `stderr_log` when given, else discarded) and waits
    /// for its ready line.
    pub fn spawn(
        name: &str,
        program: &std::path::Path,
        args: &[String],
        stderr_log: Option<&std::path::Path>,
    ) -> Result<PeerWorker, BenchError> {
        let command = format!("{} {}", program.display(), args.join(" "));
        let spawn_error = |source| BenchError::Spawn {
            peer: name.to_string(),
            command: command.clone(),
            source,
        };
        let stderr = match stderr_log {
            Some(path) => Stdio::from(std::fs::File::create(path).map_err(spawn_error)?),
            None => Stdio::null(),
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(spawn_error)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(peer_error(name, "its pipes could not be opened"));
        };
        let mut stdout = BufReader::new(stdout);
        let line = read_line(name, &mut stdout, &mut child)?;
        let ready: Ready = serde_json::from_str(&line)
            .map_err(|e| peer_error(name, format!("bad ready line {line:?}: {e}")))?;
        let info = match (ready.ready, ready.info) {
            (true, Some(info)) => info,
            _ => {
                let _ = child.kill();
                let reason = ready.error.unwrap_or_else(|| format!("not ready: {line}"));
                return Err(peer_error(name, reason));
            }
        };
        Ok(PeerWorker {
            name: name.to_string(),
            child,
            stdin,
            stdout,
            info,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn info(&self) -> &PeerInfo {
        &self.info
    }

    /// One generation of `tokens` greedy tokens for each of `batch` copies of `prompt_ids`.
    pub fn generate(
        &mut self,
        prompt_ids: &[u32],
        batch: usize,
        tokens: usize,
    ) -> Result<DecodeRun, BenchError> {
        let request =
            json!({"op": "generate", "prompt_ids": prompt_ids, "batch": batch, "tokens": tokens});
        writeln!(self.stdin, "{request}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| peer_error(&self.name, format!("writing a request: {e}")))?;
        let line = read_line(&self.name, &mut self.stdout, &mut self.child)?;
        let answer: Answer = serde_json::from_str(&line)
            .map_err(|e| peer_error(&self.name, format!("bad answer {line:?}: {e}")))?;
        match (answer.ok, answer.run) {
            (true, Some(run)) if run.batch == batch && run.tokens == tokens => Ok(run),
            (true, Some(run)) => Err(peer_error(
                &self.name,
                format!(
                    "asked for batch {batch} × {tokens} tokens, got {} × {}",
                    run.batch, run.tokens
                ),
            )),
            _ => Err(peer_error(
                &self.name,
                answer.error.unwrap_or_else(|| format!("failed: {line}")),
            )),
        }
    }
}

impl Drop for PeerWorker {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "quit"}));
        let _ = self.stdin.flush();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peer_error(name: &str, reason: impl Into<String>) -> BenchError {
    BenchError::Peer {
        peer: name.to_string(),
        reason: reason.into(),
    }
}

/// The next line of the peer's answers; a peer that closed its output is reported with how
/// it ended (its exit code, or the signal that killed it: a llama.cpp built for an
/// instruction the CPU lacks dies of SIGILL, a bad build often of SIGSEGV).
fn read_line(
    name: &str,
    reader: &mut impl BufRead,
    child: &mut Child,
) -> Result<String, BenchError> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err(peer_error(
            name,
            format!(
                "{} without answering (its stderr log says why)",
                how_it_ended(child)
            ),
        )),
        Ok(_) => Ok(line.trim_end().to_string()),
        Err(e) => Err(peer_error(name, format!("reading its answer: {e}"))),
    }
}

/// How a child that closed its output ended, waiting up to a second for it to exit.
fn how_it_ended(child: &mut Child) -> String {
    for _ in 0..50 {
        if let Ok(Some(status)) = child.try_wait() {
            return describe_exit(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    "closed its output".into()
}

/// `exited with code 1`, `was killed by signal 11 (SIGSEGV)`.
fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => {
            let name = match signal {
                4 => "SIGILL: an instruction this CPU does not have",
                6 => "SIGABRT",
                7 => "SIGBUS",
                8 => "SIGFPE",
                9 => "SIGKILL, e.g. out of memory",
                11 => "SIGSEGV",
                15 => "SIGTERM",
                _ => "",
            };
            if name.is_empty() {
                format!("was killed by signal {signal}")
            } else {
                format!("was killed by signal {signal} ({name})")
            }
        }
        (None, None) => "exited".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in worker (a shell script, not a real engine) checks the protocol handling:
    /// the ready line, an answer, a refused request and a worker that dies.
    #[test]
    fn speaks_the_protocol_and_names_failures() {
        let dir = std::env::temp_dir().join(format!("tpo-peer-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("peer.sh");
        // Starts the stand-in worker whose script is `text`.
        let spawn = |text: &str| {
            std::fs::write(&script, text).unwrap();
            let sh = std::path::Path::new("/bin/sh");
            PeerWorker::spawn("fake", sh, &[script.display().to_string()], None)
        };
        let spawn_error = |text: &str| spawn(text).err().unwrap().to_string();
        let ready =
            r#"echo '{"ready":true,"peer":"fake","version":"0","model":"m","weights_bytes":10}'"#;

        let mut w = spawn(&format!(
            r#"{ready}
read line
echo '{{"ok":true,"batch":2,"tokens":3,"prompt_tokens":4,"prefill_seconds":0.5,"total_seconds":2.0,"first_ids":[1,2,3]}}'
read line
echo '{{"ok":false,"error":"batch too large"}}'
"#
        ))
        .unwrap();
        assert_eq!(w.info().weights_bytes, 10);
        let run = w.generate(&[1, 2, 3, 4], 2, 3).unwrap();
        assert_eq!(run.tokens_per_second(), 3.0);
        let err = w.generate(&[1], 99, 3).unwrap_err().to_string();
        assert!(err.contains("batch too large"), "{err}");
        // The script has ended: writing or reading fails, either way naming the peer.
        let err = w.generate(&[1], 2, 3).unwrap_err().to_string();
        assert!(err.starts_with("peer fake:"), "{err}");

        // A peer that dies of a signal mid-run is reported with the signal.
        let mut w = spawn(&format!("{ready}\nread line\nkill -SEGV $$\n")).unwrap();
        let err = w.generate(&[1], 2, 3).unwrap_err().to_string();
        assert!(
            err.contains("was killed by signal 11 (SIGSEGV) without answering"),
            "{err}"
        );
        // One that exits with a code, before its ready line, is reported with the code.
        let err = spawn_error("exit 3\n");
        assert!(
            err.contains("exited with code 3 without answering"),
            "{err}"
        );

        let err = spawn_error("echo '{\"ready\":false,\"error\":\"no model\"}'\n");
        assert!(err.contains("no model"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
