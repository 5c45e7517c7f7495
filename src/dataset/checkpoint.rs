//! Crash-safe, resumable output of a long job.
//!
//! The output and errors files are append-only. After each chunk both are synced, then a
//! progress record (`OUTPUT.progress.json`: rows consumed, bytes of each file, the run's
//! identity) is written to a temporary file, synced and renamed over the old one. A run
//! killed at any moment (SIGKILL included) therefore leaves a record that describes a
//! prefix of its files; the next run truncates the files to that prefix and continues with
//! the next row, so the final output has every row once and equals an uninterrupted run.
//!
//! One writer at a time: opening a checkpoint takes an exclusive advisory lock on the output
//! file (`flock`, released when the checkpoint is dropped or its process dies) before
//! anything is read or cut, so a second job on the same output (a restarted pod while the
//! old one is still stopping) is refused instead of truncating and appending beside it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{DatasetError, ResumeRefusal};

const PROGRESS_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    version: u32,
    /// What makes a run the same run (input, models, options that change the output).
    run: Map<String, Value>,
    rows_done: usize,
    output_bytes: u64,
    errors_bytes: u64,
    finished: bool,
}

/// Where a job stands when it opens its checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Rows (scored or rejected) already in the files.
    pub rows_done: usize,
    pub finished: bool,
}

/// The open output, errors and progress files of one job.
pub struct Checkpoint {
    /// Holds the output's lock for as long as the checkpoint lives.
    output: File,
    errors: File,
    output_path: PathBuf,
    errors_path: PathBuf,
    progress_path: PathBuf,
    state: Progress,
}

/// `OUTPUT.progress.json`.
pub fn progress_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".progress.json");
    PathBuf::from(name)
}

impl Checkpoint {
    /// Opens the job's files: resumes the run described by `run` when its progress record
    /// is there, starts afresh when nothing is, and refuses to touch files of a different
    /// run (or an output without a record) unless `overwrite`, or while another job holds
    /// the output ([`DatasetError::Busy`]).
    pub fn open(
        output: &Path,
        errors: &Path,
        run: Map<String, Value>,
        overwrite: bool,
    ) -> Result<(Self, Resume), DatasetError> {
        let output_file = lock_output(output)?;
        let progress_path = progress_path(output);
        let existing = if overwrite {
            None
        } else {
            read_progress(&progress_path)?
        };
        let resume_err = |reason: ResumeRefusal| DatasetError::Resume {
            output: output.to_path_buf(),
            reason,
        };
        let state = match existing {
            Some(p) if p.run != run => {
                return Err(resume_err(ResumeRefusal::DifferentRun {
                    differs: differing_keys(&p.run, &run),
                }));
            }
            Some(p) => p,
            None => {
                let has_output = std::fs::metadata(output)
                    .map(|m| m.len() > 0)
                    .unwrap_or(false);
                if has_output && !overwrite {
                    return Err(resume_err(ResumeRefusal::Unrecorded));
                }
                Progress {
                    version: PROGRESS_VERSION,
                    run,
                    rows_done: 0,
                    output_bytes: 0,
                    errors_bytes: 0,
                    finished: false,
                }
            }
        };
        let output_file = cut_to(output_file, output, state.output_bytes)?;
        let errors_file = cut_to(open_rw(errors)?, errors, state.errors_bytes)?;
        let checkpoint = Self {
            output: output_file,
            errors: errors_file,
            output_path: output.to_path_buf(),
            errors_path: errors.to_path_buf(),
            progress_path,
            state,
        };
        checkpoint.write_progress()?;
        let resume = Resume {
            rows_done: checkpoint.state.rows_done,
            finished: checkpoint.state.finished,
        };
        Ok((checkpoint, resume))
    }

    /// Appends one chunk's lines and records that `rows` more rows are done.
    pub fn commit(
        &mut self,
        output: &[u8],
        errors: &[u8],
        rows: usize,
    ) -> Result<(), DatasetError> {
        append(&mut self.output, &self.output_path, output)?;
        append(&mut self.errors, &self.errors_path, errors)?;
        self.state.output_bytes += output.len() as u64;
        self.state.errors_bytes += errors.len() as u64;
        self.state.rows_done += rows;
        self.write_progress()
    }

    /// Marks the job complete (a rerun of the same command then changes nothing).
    pub fn finish(&mut self) -> Result<(), DatasetError> {
        self.state.finished = true;
        self.write_progress()
    }

    fn write_progress(&self) -> Result<(), DatasetError> {
        let io = |source| DatasetError::Io {
            path: self.progress_path.clone(),
            source,
        };
        let mut tmp = self.progress_path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let text = serde_json::to_vec_pretty(&self.state)
            .map_err(|e| DatasetError::Internal(e.to_string()))?;
        let mut file = File::create(&tmp).map_err(io)?;
        file.write_all(&text).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.progress_path).map_err(io)?;
        Ok(())
    }
}

fn read_progress(path: &Path) -> Result<Option<Progress>, DatasetError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DatasetError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let progress: Progress =
        serde_json::from_str(&text).map_err(|e| DatasetError::BadProgress {
            path: path.to_path_buf(),
            reason: format!("not a progress record ({e})"),
        })?;
    if progress.version != PROGRESS_VERSION {
        return Err(DatasetError::BadProgress {
            path: path.to_path_buf(),
            reason: format!(
                "progress record version {} (this tpo writes {PROGRESS_VERSION})",
                progress.version
            ),
        });
    }
    Ok(Some(progress))
}

/// Opens `path` for reading and writing, created if missing, never truncated.
fn open_rw(path: &Path) -> Result<File, DatasetError> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(|source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// How long [`lock_output`] keeps trying before it says another job holds the output.
///
/// A lock is released when the last descriptor of its open file goes, and a child process
/// forked by any thread of ours holds a copy of every descriptor until it execs (Rust opens
/// files close-on-exec, so the copy goes then). A job that has just finished can therefore
/// still hold its lock for that moment; a writer that is really running holds it for good.
const LOCK_GRACE: Duration = Duration::from_secs(2);

/// Opens the output and takes its exclusive lock, or says another job holds it (after
/// trying for [`LOCK_GRACE`]).
fn lock_output(path: &Path) -> Result<File, DatasetError> {
    let file = open_rw(path)?;
    let until = Instant::now() + LOCK_GRACE;
    loop {
        // Named in full: from Rust 1.89 std's inherent `File::try_lock` would shadow it.
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => return Ok(file),
            Err(fs4::TryLockError::WouldBlock) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(fs4::TryLockError::WouldBlock) => {
                return Err(DatasetError::Busy {
                    path: path.to_path_buf(),
                })
            }
            Err(fs4::TryLockError::Error(source)) => {
                return Err(DatasetError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// `file` (at `path`) cut back to `len` bytes (what the last commit recorded), positioned
/// at its end for appending.
fn cut_to(mut file: File, path: &Path, len: u64) -> Result<File, DatasetError> {
    let io = |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    };
    let actual = file.metadata().map_err(io)?.len();
    if actual < len {
        return Err(DatasetError::Resume {
            output: path.to_path_buf(),
            reason: ResumeRefusal::ChangedOutside {
                actual,
                recorded: len,
            },
        });
    }
    file.set_len(len).map_err(io)?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(io)?;
    Ok(file)
}

fn append(file: &mut File, path: &Path, bytes: &[u8]) -> Result<(), DatasetError> {
    let io = |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    };
    if bytes.is_empty() {
        return Ok(());
    }
    file.write_all(bytes).map_err(io)?;
    file.sync_data().map_err(io)
}

/// Keys whose values differ between two run descriptions, each once, sorted.
fn differing_keys(a: &Map<String, Value>, b: &Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tpo-ckpt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn resume_cuts_an_uncommitted_tail_and_continues() {
        let dir = tmp("resume");
        let (out, err) = (dir.join("o.jsonl"), dir.join("e.jsonl"));
        let key = run(json!({"input": "x"}));
        let (mut c, r) = Checkpoint::open(&out, &err, key.clone(), false).unwrap();
        assert_eq!(r.rows_done, 0);
        c.commit(b"a\n", b"", 1).unwrap();
        drop(c);
        // a crash after writing but before committing
        std::fs::OpenOptions::new()
            .append(true)
            .open(&out)
            .unwrap()
            .write_all(b"partial")
            .unwrap();
        let (mut c, r) = Checkpoint::open(&out, &err, key.clone(), false).unwrap();
        assert_eq!(
            r,
            Resume {
                rows_done: 1,
                finished: false
            }
        );
        c.commit(b"b\n", b"x\n", 2).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "a\nb\n");
        assert_eq!(std::fs::read_to_string(&err).unwrap(), "x\n");
    }

    #[test]
    fn a_different_run_is_refused_naming_each_key_once() {
        let dir = tmp("refuse");
        let (out, err) = (dir.join("o.jsonl"), dir.join("e.jsonl"));
        let (mut c, _) =
            Checkpoint::open(&out, &err, run(json!({"a": 1, "b": 2, "c": 3})), false).unwrap();
        c.commit(b"a\n", b"", 1).unwrap();
        drop(c);
        let e = Checkpoint::open(&out, &err, run(json!({"a": 1, "b": 5, "d": 3})), false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("(differs in: b, c, d)"), "{e}");
        // A fact: the CLI adds "pass --overwrite" (cli::advice), the library names no flag.
        assert!(!e.contains("--"), "{e}");
        // --overwrite starts again
        let (_, r) = Checkpoint::open(&out, &err, run(json!({"a": 9})), true).unwrap();
        assert_eq!(r.rows_done, 0);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "");
    }

    #[test]
    fn an_output_without_a_record_is_not_clobbered() {
        let dir = tmp("foreign");
        let (out, err) = (dir.join("o.jsonl"), dir.join("e.jsonl"));
        std::fs::write(&out, "precious\n").unwrap();
        assert!(Checkpoint::open(&out, &err, run(json!({})), false).is_err());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious\n");
    }

    #[test]
    fn a_second_checkpoint_on_an_output_in_use_is_refused_until_the_first_is_dropped() {
        let dir = tmp("busy");
        let (out, err) = (dir.join("o.jsonl"), dir.join("e.jsonl"));
        let key = run(json!({"input": "x"}));
        let (mut first, _) = Checkpoint::open(&out, &err, key.clone(), false).unwrap();
        first.commit(b"a\n", b"", 1).unwrap();
        for overwrite in [false, true] {
            let e = Checkpoint::open(&out, &err, key.clone(), overwrite)
                .err()
                .unwrap_or_else(|| panic!("a second writer was let in (overwrite {overwrite})"))
                .to_string();
            assert!(e.contains("another `tpo score` is writing"), "{e}");
        }
        first.commit(b"b\n", b"", 1).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "a\nb\n");
        drop(first);
        let (_, r) = Checkpoint::open(&out, &err, key, false).unwrap();
        assert_eq!(r.rows_done, 2);
    }

    #[test]
    fn a_lock_released_a_moment_later_is_waited_for() {
        // A lock held through a second open file, as a just-forked child holds its parent's
        // until it execs, and let go well inside the grace period.
        let dir = tmp("grace");
        let (out, err) = (dir.join("o.jsonl"), dir.join("e.jsonl"));
        let holder = open_rw(&out).unwrap();
        fs4::FileExt::try_lock(&holder).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(LOCK_GRACE / 10);
            drop(holder);
        });
        let opened = Checkpoint::open(&out, &err, run(json!({"input": "x"})), false);
        release.join().unwrap();
        assert!(opened.is_ok(), "{:?}", opened.err().map(|e| e.to_string()));
    }
}
