//! `tpo bench serve`: a load generator for any OpenAI-compatible server (ours or another),
//! measuring what a client sees over streamed `POST /v1/chat/completions`.
//!
//! Per request: TTFT, inter-token latency, TPOT and end-to-end latency, and the output
//! tokens from the usage chunk (see `measure`). Per level (a closed-loop concurrency, or an
//! open-loop Poisson rate, see `load`): requests ok, 429s, other failures by kind, req/s,
//! output tok/s, searches/s for search runs, and p50/p90/p99 of each latency (see `stats`),
//! printed as a Markdown table and written with `--json`. A 429 or a failed request never
//! stops the run; a server that cannot be reached at the start is an error naming the URL.
//!
//! Searches run through unmodified requests: `--search tpo|bon|darwin` appends the model
//! id suffix (`smollm2-135m-instruct:tpo`), so the server's search defaults apply.
//!
//! The client runs on one current-thread tokio runtime: a benchmark that shares the
//! server's machine should take as little CPU as it can, and one thread keeps hundreds of
//! streams going.
//!
//! Not here: the flags (`src/cli/bench_serve.rs`), printing the table, and the prompt
//! file's format ([`crate::dataset::prompts`]).

mod client;
mod load;
mod measure;
mod sse;
pub mod stats;

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use client::{ChatSettings, Client};
use load::Limit;
use stats::{Level, LevelReport, Outcome};

/// Requests per level when neither `--requests` nor `--duration` is given.
const DEFAULT_REQUESTS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    None,
    Tpo,
    Bon,
    Darwin,
}

impl SearchKind {
    /// The model id suffix that selects the search.
    fn suffix(self) -> Option<&'static str> {
        match self {
            SearchKind::None => None,
            SearchKind::Tpo => Some("tpo"),
            SearchKind::Bon => Some("bon"),
            SearchKind::Darwin => Some("darwin"),
        }
    }
}

/// What `tpo bench serve` runs (its flags, parsed; see the CLI for their meaning).
#[derive(Debug, Clone)]
pub struct ServeBenchOptions {
    /// The server's root URL (http only; a trailing /v1 is accepted).
    pub url: String,
    /// Bearer key sent with every request (none = no header).
    pub api_key: Option<String>,
    /// Model id [default: the first id of GET /v1/models].
    pub model: Option<String>,
    /// Closed loop: concurrency levels (used when `rate` is `None`).
    pub concurrency: Vec<usize>,
    /// Open loop instead: Poisson arrival rates in requests/s.
    pub rate: Option<Vec<f64>>,
    /// Requests per level [default: 64 when `duration` is not given].
    pub requests: Option<u64>,
    /// Seconds each level sends for.
    pub duration: Option<f64>,
    pub search: SearchKind,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// Prompts file (see [`crate::dataset::prompts`]); a relative path that does not exist
    /// is taken relative to the project.
    pub prompts: PathBuf,
    /// Untimed requests sent one at a time before the first level.
    pub warmup: usize,
    /// Seconds one request may take.
    pub timeout: f64,
    /// Seed of the open loop's arrival times.
    pub seed: u64,
}

/// What a run measured: the caller prints [`Self::table`] and writes [`Self::write_json`].
#[derive(Debug, Clone)]
pub struct ServeBenchReport {
    pub levels: Vec<LevelReport>,
    /// Whether the requests ran searches (the table then has searches/s).
    pub search: bool,
    /// The settings and the levels, as `--json` writes them.
    pub json: serde_json::Value,
}

impl ServeBenchReport {
    /// The Markdown table of the levels.
    pub fn table(&self) -> String {
        stats::table(&self.levels, self.search)
    }

    /// Writes [`Self::json`] (pretty, with a final newline) to `path`.
    pub fn write_json(&self, path: &std::path::Path) -> Result<(), super::BenchError> {
        super::write_json(path, &self.json)
    }
}

/// Why the bench could not run (a failed request is an outcome, never one of these).
#[derive(Debug, thiserror::Error)]
pub enum BenchServeError {
    #[error("--url {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot reach the server at {url}: {reason} (is it running?)")]
    Unreachable { url: String, reason: String },
    #[error("{url}: {reason}")]
    Models { url: String, reason: String },
    #[error("building the HTTP client: {0}")]
    Client(String),
    #[error("{0}")]
    Options(String),
    #[error("prompts {path}: {reason}")]
    Prompts { path: PathBuf, reason: String },
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// One server under load from [`Target::level`]: its client and the request settings.
pub struct Target {
    client: Client,
    settings: ChatSettings,
}

impl Target {
    /// Waits up to `wait` for the server at `url` to list its models (it may still be
    /// loading), then settles the model id (its first) and the settings.
    pub async fn connect(
        url: &str,
        max_tokens: u32,
        temperature: f32,
        wait: Duration,
    ) -> Result<Target, BenchServeError> {
        let client = Client::new(url, None, Duration::from_secs(600))?;
        let deadline = std::time::Instant::now() + wait;
        let listed = loop {
            match client.models().await {
                Ok(listed) => break listed,
                Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        let model = listed
            .first()
            .cloned()
            .ok_or_else(|| BenchServeError::Models {
                url: format!("{}/v1/models", client.base()),
                reason: "lists no model".into(),
            })?;
        Ok(Target {
            client,
            settings: ChatSettings {
                model,
                max_tokens: Some(max_tokens),
                temperature: Some(temperature),
            },
        })
    }

    /// `warmup` untimed requests one at a time.
    pub async fn warm_up(&self, prompts: &[String], warmup: usize) {
        for i in 0..warmup {
            let _ = self
                .client
                .chat(&self.settings, &prompts[i % prompts.len()])
                .await;
        }
    }

    /// One closed-loop level: `concurrency` requests in flight, `requests` in all.
    pub async fn level(
        &self,
        prompts: &[String],
        concurrency: usize,
        requests: usize,
    ) -> LevelReport {
        let limit = Limit {
            requests: Some(requests),
            duration: None,
        };
        run_level(
            &self.client,
            &self.settings,
            prompts,
            Level::Closed(concurrency),
            limit,
            0,
            false,
        )
        .await
    }
}

/// The prompts of a file (one per line, or JSONL with "instruction"/"prompt").
pub fn load_prompts(path: &std::path::Path) -> Result<Vec<String>, BenchServeError> {
    read_prompts(path)
}

/// The levels of the run, checked.
fn levels(args: &ServeBenchOptions) -> Result<Vec<Level>, BenchServeError> {
    let levels: Vec<Level> = match &args.rate {
        Some(rates) => {
            if let Some(r) = rates.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
                return Err(BenchServeError::Options(format!(
                    "--rate {r}: rates must be positive"
                )));
            }
            rates.iter().map(|&r| Level::Open(r)).collect()
        }
        None => {
            if args.concurrency.contains(&0) {
                return Err(BenchServeError::Options(
                    "--concurrency levels must be at least 1".into(),
                ));
            }
            args.concurrency.iter().map(|&c| Level::Closed(c)).collect()
        }
    };
    if levels.is_empty() {
        return Err(BenchServeError::Options("no levels to run".into()));
    }
    Ok(levels)
}

fn read_prompts(path: &std::path::Path) -> Result<Vec<String>, BenchServeError> {
    // The default is relative to the project, wherever the command runs from.
    let resolved = if path.exists() || path.is_absolute() {
        path.to_path_buf()
    } else {
        crate::paths::project_path(&path.to_string_lossy())
    };
    crate::dataset::prompts::read_prompts(&resolved).map_err(|e| BenchServeError::Prompts {
        path: e.path,
        reason: e.source.to_string(),
    })
}

/// The model id to send: `--model` or the server's first, with the search's suffix.
fn model_id(given: Option<&str>, listed: &[String], search: SearchKind) -> Option<String> {
    let base = given
        .map(str::to_string)
        .or_else(|| listed.first().cloned())?;
    Some(match search.suffix() {
        Some(s) if !base.ends_with(&format!(":{s}")) => format!("{base}:{s}"),
        _ => base,
    })
}

fn progress_bar(len: Option<usize>, label: &str) -> ProgressBar {
    let (bar, template) = match len {
        Some(n) => (
            ProgressBar::new(n as u64),
            "{prefix} {bar:40} {pos}/{len} requests  {per_sec}  elapsed {elapsed}  ETA {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "{prefix} {spinner} {pos} requests  {per_sec}  elapsed {elapsed}",
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// Runs the levels against the server; the report is printed by the caller (the JSON,
/// with `json`, is written here).
pub fn run(args: &ServeBenchOptions) -> Result<ServeBenchReport, BenchServeError> {
    let levels = levels(args)?;
    let limit = Limit {
        requests: args
            .requests
            .map(|n| n as usize)
            .or(if args.duration.is_none() {
                Some(DEFAULT_REQUESTS)
            } else {
                None
            }),
        duration: args.duration.map(Duration::from_secs_f64),
    };
    let prompts = read_prompts(&args.prompts)?;
    let client = Client::new(
        &args.url,
        args.api_key.clone(),
        Duration::from_secs_f64(args.timeout),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BenchServeError::Runtime)?;
    let search = args.search != SearchKind::None;

    let (settings, reports) = runtime.block_on(async {
        let listed = client.models().await?;
        let model = model_id(args.model.as_deref(), &listed, args.search).ok_or_else(|| {
            BenchServeError::Models {
                url: format!("{}/v1/models", client.base()),
                reason: "lists no model: give --model".into(),
            }
        })?;
        if !listed.is_empty() && !listed.contains(&model) {
            eprintln!("warning: {model:?} is not among the server's models {listed:?}");
        }
        let settings = ChatSettings {
            model,
            max_tokens: args.max_tokens,
            temperature: args.temperature,
        };
        eprintln!(
            "bench serve: {} model {}, {} prompts from {}, max_tokens {}",
            client.base(),
            settings.model,
            prompts.len(),
            args.prompts.display(),
            settings
                .max_tokens
                .map_or("(server default)".to_string(), |n| n.to_string()),
        );
        for i in 0..args.warmup {
            if let Outcome::Failed { kind, message } =
                client.chat(&settings, &prompts[i % prompts.len()]).await
            {
                if kind == "connect" {
                    return Err(BenchServeError::Unreachable {
                        url: client.base().to_string(),
                        reason: message,
                    });
                }
                eprintln!("warning: warm-up request failed ({kind}): {message}");
            }
        }
        let mut reports = Vec::new();
        for (index, &level) in levels.iter().enumerate() {
            let report = run_level(
                &client,
                &settings,
                &prompts,
                level,
                limit,
                args.seed + index as u64,
                search,
            )
            .await;
            eprintln!(
                "  {}: {}/{} ok, {} × 429, {:.2} req/s, {:.1} output tok/s",
                report.label(),
                report.ok,
                report.requests,
                report.rate_limited_429,
                report.requests_per_s,
                report.output_tokens_per_s
            );
            for (kind, message) in &report.error_examples {
                eprintln!("    {kind}: {message}");
            }
            reports.push(report);
        }
        Ok::<_, BenchServeError>((settings, reports))
    })?;

    let json = json!({
        "url": client.base(),
        "model": settings.model,
        "search": args.search.suffix().unwrap_or("none"),
        "max_tokens": settings.max_tokens,
        "requests_per_level": limit.requests,
        "duration_s": args.duration,
        "timeout_s": args.timeout,
        "seed": args.seed,
        "prompts": args.prompts.display().to_string(),
        "prompt_count": prompts.len(),
        "warmup": args.warmup,
        "tpo_version": env!("CARGO_PKG_VERSION"),
        "commit": env!("TPO_GIT_COMMIT"),
        "levels": reports,
    });
    Ok(ServeBenchReport {
        levels: reports,
        search,
        json,
    })
}

async fn run_level(
    client: &Client,
    settings: &ChatSettings,
    prompts: &[String],
    level: Level,
    limit: Limit,
    seed: u64,
    search: bool,
) -> LevelReport {
    let send = |bar: &ProgressBar, i: usize| {
        let bar = bar.clone();
        let prompt = &prompts[i % prompts.len()];
        async move {
            let outcome = client.chat(settings, prompt).await;
            bar.inc(1);
            outcome
        }
    };
    let (outcomes, seconds) = match level {
        Level::Closed(c) => {
            let bar = progress_bar(limit.requests, &level.label());
            let result = load::closed_loop(c, limit, |i| send(&bar, i)).await;
            bar.finish_and_clear();
            result
        }
        Level::Open(rate) => {
            let schedule = load::poisson_schedule(rate, limit, seed);
            let bar = progress_bar(Some(schedule.len()), &level.label());
            let result = load::open_loop(&schedule, |i| send(&bar, i)).await;
            bar.finish_and_clear();
            result
        }
    };
    LevelReport::new(level, &outcomes, seconds, search)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_take_the_search_suffix_once() {
        let listed = vec!["m".to_string(), "m:tpo".to_string()];
        assert_eq!(
            model_id(None, &listed, SearchKind::None).as_deref(),
            Some("m")
        );
        assert_eq!(
            model_id(None, &listed, SearchKind::Tpo).as_deref(),
            Some("m:tpo")
        );
        assert_eq!(
            model_id(Some("x:bon"), &listed, SearchKind::Bon).as_deref(),
            Some("x:bon")
        );
        assert_eq!(model_id(None, &[], SearchKind::Darwin), None);
    }
}
