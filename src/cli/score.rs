//! `tpo score`: flags → a [`ScoreJob`] with its reward model and implicit-reward engines,
//! a progress bar on a terminal, the summary on stdout. Exit code 0 when every row was
//! scored, 2 when some were rejected (they are in the errors file), 1 when the run failed.

use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};

use tpo_engine::app::score::{open_scorers, ImplicitOptions, ScorerOptions};
use tpo_engine::dataset::job::MAX_CHUNK_ROWS;
use tpo_engine::dataset::{Columns, DatasetError, ScoreJob, Shard};
use tpo_engine::reward::implicit::{DEFAULT_BETA, DEFAULT_ETA};
use tpo_engine::reward::{self, RewardOptions};
use tpo_engine::runtime::{Device, SessionOptions};

/// Exit code of a run that finished with some rows rejected.
pub const EXIT_ROWS_REJECTED: u8 = 2;

#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// Preference rows: JSONL, a JSON array (.json) or Parquet (.parquet).
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Scored rows, one JSON object per line (resumed if a progress record is there).
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
    /// Rejected rows with line and reason [default: OUTPUT.errors.jsonl].
    #[arg(long, value_name = "FILE")]
    errors: Option<PathBuf>,
    /// The summary as JSON [default: OUTPUT.summary.json].
    #[arg(long, value_name = "FILE")]
    summary: Option<PathBuf>,
    /// Reward model: judge (embedded SmolLM2 judge), similarity or bertscore (embedded
    /// MiniLM against each row's reference), a folder with reward_config.json, or none.
    #[arg(long, default_value = "judge", value_name = "NAME|DIR")]
    reward_model: String,
    /// Reference model for DPO implicit rewards, a folder or a policy format's name (f32,
    /// f16, q4); repeat for MRPO's two references.
    #[arg(long = "reference-model", value_name = "NAME|DIR")]
    reference_models: Vec<String>,
    /// Policy model for implicit rewards, a folder or a format's name [default: f32, the
    /// embedded SmolLM2].
    #[arg(long, value_name = "NAME|DIR")]
    policy_model: Option<String>,
    /// DPO's β.
    #[arg(long, default_value_t = DEFAULT_BETA)]
    beta: f64,
    /// Combine exactly two reference models with MRPO (adaptive α, clipping η).
    #[arg(long)]
    mrpo: bool,
    /// MRPO's clipping η.
    #[arg(long, default_value_t = DEFAULT_ETA)]
    eta: f64,
    /// Score only shard i of n (0-based, contiguous rows): `cat` the shards' outputs in
    /// index order for the whole.
    #[arg(long, default_value = "0/1", value_name = "i/n")]
    shard: Shard,
    /// Rows per committed chunk, at most 1024: at most this much work is redone after a
    /// crash.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=MAX_CHUNK_ROWS as i64))]
    chunk_rows: u32,
    /// Replace an existing output (and its errors and progress) instead of resuming.
    #[arg(long)]
    overwrite: bool,
    /// Padded tokens per reward-model batch.
    #[arg(long, default_value_t = reward::DEFAULT_BATCH_TOKENS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    rm_batch_tokens: u32,
    #[arg(long, default_value = "id", value_name = "NAME")]
    id_column: String,
    #[arg(long, default_value = "prompt", value_name = "NAME")]
    prompt_column: String,
    #[arg(long, default_value = "chosen", value_name = "NAME")]
    chosen_column: String,
    #[arg(long, default_value = "rejected", value_name = "NAME")]
    rejected_column: String,
    #[arg(long, default_value = "response", value_name = "NAME")]
    response_column: String,
    #[arg(long, default_value = "reference", value_name = "NAME")]
    reference_column: String,
    /// Execution device: cpu, cuda[:N] or tensorrt[:N] (GPU N; GPU runs need `make gpu-setup`).
    #[arg(long, default_value = "cpu", value_parser = super::parse_device)]
    device: Device,
    /// ONNX Runtime intra-op threads per model (0 = one per physical core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn with_suffix(path: &std::path::Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub fn run(args: ScoreArgs) -> Result<ExitCode, tpo_engine::Error> {
    let options = |reason: &str| tpo_engine::Error::from(DatasetError::Options(reason.into()));
    if args.mrpo && args.reference_models.len() != 2 {
        return Err(options(
            "--mrpo combines exactly two --reference-model folders",
        ));
    }
    let no_rm = args.reward_model == "none";
    if no_rm && args.reference_models.is_empty() {
        return Err(options(
            "--reward-model none needs at least one --reference-model (nothing to score with)",
        ));
    }
    if !(args.beta.is_finite() && args.beta > 0.0 && (0.0..=1.0).contains(&args.eta)) {
        return Err(options("--beta must be positive and --eta within [0, 1]"));
    }
    if !args.input.is_file() {
        return Err(options(&format!(
            "--input {} is not a file",
            args.input.display()
        )));
    }
    let job = ScoreJob {
        errors: args
            .errors
            .clone()
            .unwrap_or_else(|| with_suffix(&args.output, ".errors.jsonl")),
        summary: args
            .summary
            .clone()
            .unwrap_or_else(|| with_suffix(&args.output, ".summary.json")),
        input: args.input,
        output: args.output,
        columns: Columns {
            id: args.id_column,
            prompt: args.prompt_column,
            chosen: args.chosen_column,
            rejected: args.rejected_column,
            response: args.response_column,
            reference: args.reference_column,
        },
        shard: args.shard,
        chunk_rows: args.chunk_rows as usize,
        overwrite: args.overwrite,
    };
    // Refused before the models load (seconds), and before anything is written.
    job.validate()?;
    let options = ScorerOptions {
        onnxruntime: tpo_engine::paths::onnxruntime_library_for(args.device)?,
        reward: (!no_rm).then(|| tpo_engine::paths::reward_source(&args.reward_model)),
        reward_options: RewardOptions {
            session: SessionOptions {
                device: args.device,
                threads: args.threads,
            },
            batch_tokens: args.rm_batch_tokens as usize,
            ..RewardOptions::default()
        },
        implicit: (!args.reference_models.is_empty()).then(|| ImplicitOptions {
            policy: (args.policy_model.as_deref()).map_or_else(
                tpo_engine::paths::default_policy_dir,
                tpo_engine::paths::policy_dir,
            ),
            references: (args.reference_models.iter())
                .map(|spec| tpo_engine::paths::policy_dir(spec))
                .collect(),
            beta: args.beta,
            mrpo: args.mrpo,
            eta: args.eta,
        }),
    };
    let scorers = open_scorers(&options)?;
    if let Some(rm) = &scorers.reward {
        super::print_reward_load(&args.reward_model, rm.load_report());
    }
    // Drawn only on a terminal (indicatif hides itself otherwise).
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} rows  {per_sec}  elapsed {elapsed}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let outcome = job.run(&scorers, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let s = &outcome.summary;
    if outcome.resumed_from > 0 {
        eprintln!(
            "resumed after {} of {} rows",
            outcome.resumed_from, outcome.shard_rows
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(s).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    );
    eprintln!(
        "scored {} rows, rejected {} (see {}); summary in {}",
        s.rows_scored,
        s.rows_rejected,
        job.errors.display(),
        job.summary.display()
    );
    Ok(if s.rows_rejected > 0 {
        ExitCode::from(EXIT_ROWS_REJECTED)
    } else {
        ExitCode::SUCCESS
    })
}
