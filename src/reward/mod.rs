//! Reward models: one trait, [`RewardModel`], and the kinds a reward folder can hold, chosen
//! by its `reward_config.json`.
//!
//! Rooms: `config` (the folder's config, validated), `folder` (what the folder's other files
//! and the graph say), `resolve` (the config settled from both, each inference recorded),
//! `self_check` (padded rows against the same rows alone, at load), `sequence` (tokenize → length-grouped
//! padded batches → one ONNX Runtime call each), `pool` (last-token gather, masked mean,
//! head, cosine, BERTScore: the CPU reference for the GPU kernel), `classifier`
//! (classification-head RMs and the embedded judge), `similarity` (RefAlign), `implicit`
//! (DPO/MRPO from the engine's teacher-forced log-probs).
//!
//! A row that cannot be scored (too long, no reference) gets its own [`RowError`] and the
//! rest of the call goes on; only a failure of the model itself fails the call.

pub mod classifier;
pub mod config;
pub mod device_pool;
pub mod folder;
pub mod implicit;
pub mod inspect;
pub mod pool;
pub mod resolve;
pub mod self_check;
pub mod sequence;
mod service;
pub mod similarity;

use std::path::{Path, PathBuf};

pub use config::{RewardConfig, RewardConfigFile, RewardKind, SimilarityMetric};
pub use resolve::Inferred;
pub use self_check::SelfCheck;
pub use sequence::DEFAULT_BATCH_TOKENS;
pub use service::{
    OwnedRewardInput, RewardService, RewardServiceStats, RewardSnapshot, ServiceError,
    MAX_BATCH_INPUTS, MAX_QUEUED_REQUESTS, RM_BATCH_SIZE_METRIC,
};

use crate::model::ModelError;
use crate::runtime::{RuntimeError, SessionOptions};

/// Failures of a reward model as a whole.
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    #[error(
        "reward model {name:?} is not a folder or a known name (judge, similarity, bertscore); \
         run `make setup` to export the embedded ones, or pass a reward model's folder (see \
         `tpo models inspect DIR`)"
    )]
    Unknown { name: String },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("reward graph {path}: {reason}")]
    Graph { path: PathBuf, reason: String },
    #[error("reward model {path} failed its load-time self-check: {reason}")]
    SelfCheck { path: PathBuf, reason: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("internal reward error: {0}")]
    Internal(String),
}

/// Why one row could not be scored; the call goes on without it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowError {
    #[error("the text has {tokens} tokens but the reward model takes at most {limit}")]
    TooLong { tokens: usize, limit: usize },
    #[error("the text is empty")]
    Empty,
    #[error("the similarity reward needs a reference answer and the row has none")]
    MissingReference,
    #[error("rendering the reward prompt: {0}")]
    Template(String),
    #[error("tokenizing: {0}")]
    Tokenize(String),
    #[error("internal: {0}")]
    Internal(String),
}

/// What a reward model scores: a response to a prompt, with a reference answer for
/// similarity rewards.
#[derive(Debug, Clone, Copy)]
pub struct RewardInput<'a> {
    pub prompt: &'a str,
    pub response: &'a str,
    pub reference: Option<&'a str>,
}

/// A reward model: higher is better. One call scores many inputs in as few batches as the
/// model allows.
pub trait RewardModel: Send + Sync {
    /// Where the model came from, for reports.
    fn name(&self) -> &str;

    /// One result per input, in order.
    fn score(&self, inputs: &[RewardInput<'_>]) -> Result<Vec<Result<f32, RowError>>, RewardError>;

    /// Whether every input needs a reference answer (similarity to it is the reward), so a
    /// caller can refuse a search without one before any work.
    fn needs_reference(&self) -> bool {
        false
    }

    /// How the model was loaded from its folder: the settled config, what was inferred, and
    /// the self-check's result (`None` for models that are not folders, such as implicit
    /// rewards).
    fn load_report(&self) -> Option<&LoadReport> {
        None
    }
}

/// How a reward folder loaded.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub config: RewardConfig,
    /// Fields `reward_config.json` did not give, with where each came from.
    pub inferred: Vec<Inferred>,
    /// `None` when [`RewardOptions::self_check`] was off.
    pub self_check: Option<SelfCheck>,
}

impl LoadReport {
    /// What the user of reward model `name` should be told at load, one line each: the
    /// settings inferred from its folder and the self-check; `None` for a folder whose
    /// `reward_config.json` says everything.
    pub fn notice(&self, name: &str) -> Option<String> {
        let lines = self.inferred_lines();
        if lines.is_empty() {
            return None;
        }
        let mut text = format!(
            "reward model {name}: inferred from the folder (reward_config.json overrides any of \
             these):\n"
        );
        for line in lines {
            text += &format!("  {line}\n");
        }
        text += &format!("  self-check {}\n", self.self_check_line());
        Some(text)
    }

    /// One line per inferred field: `pad_token_id = 2 (config.json "pad_token_id")`.
    pub fn inferred_lines(&self) -> Vec<String> {
        self.inferred
            .iter()
            .map(|i| format!("{} = {} ({})", i.field, i.value, i.from))
            .collect()
    }

    /// The self-check's result in one line, or that it was skipped.
    pub fn self_check_line(&self) -> String {
        match &self.self_check {
            None => "skipped".into(),
            Some(c) => format!(
                "passed: {} texts of {:?} tokens, alone vs padded {} differ by {:.1e} of the \
                 output's scale (tolerance {}){}, {:.0} ms",
                c.tokens.len(),
                c.tokens,
                resolve::json_name(&c.side),
                c.difference,
                c.tolerance,
                match c.other_side {
                    Some((side, d)) => format!(
                        "; padded {} (not used) {:.1e}{}",
                        resolve::json_name(&side),
                        d,
                        if d > c.tolerance {
                            ", beyond tolerance"
                        } else {
                            ""
                        }
                    ),
                    None => String::new(),
                },
                c.seconds * 1e3
            ),
        }
    }
}

/// A folder's reward model with its [`LoadReport`].
struct Loaded {
    model: Box<dyn RewardModel>,
    report: LoadReport,
}

impl RewardModel for Loaded {
    fn name(&self) -> &str {
        self.model.name()
    }

    fn score(&self, inputs: &[RewardInput<'_>]) -> Result<Vec<Result<f32, RowError>>, RewardError> {
        self.model.score(inputs)
    }

    fn needs_reference(&self) -> bool {
        self.model.needs_reference()
    }

    fn load_report(&self) -> Option<&LoadReport> {
        Some(&self.report)
    }
}

/// How reward models are loaded.
#[derive(Debug, Clone, Copy)]
pub struct RewardOptions {
    pub session: SessionOptions,
    /// Padded tokens per ONNX Runtime call.
    pub batch_tokens: usize,
    /// On a GPU session, pool hidden-states classifier outputs on the device (the kernels in
    /// `reward::device_pool`); false brings the hidden states to the host for the CPU.
    pub pool_on_device: bool,
    /// Run the load-time self-check (`reward::self_check`) and refuse a folder that fails it.
    pub self_check: bool,
    /// Also measure the padding side the config does not use (`tpo models inspect`).
    pub self_check_both_sides: bool,
}

impl Default for RewardOptions {
    fn default() -> Self {
        Self {
            session: SessionOptions::default(),
            batch_tokens: DEFAULT_BATCH_TOKENS,
            pool_on_device: true,
            self_check: true,
            self_check_both_sides: false,
        }
    }
}

/// A reward model to load: the name it was asked for (`judge`, a folder, …), its folder, and
/// the similarity metric that overrides a similarity model's own (see
/// [`crate::paths::reward_source`], which resolves names).
#[derive(Debug, Clone, PartialEq)]
pub struct RewardSource {
    pub name: String,
    pub dir: PathBuf,
    pub metric: Option<SimilarityMetric>,
}

/// Loads the reward model `source` names; a name that is not a folder is
/// [`RewardError::Unknown`].
pub fn load(
    source: &RewardSource,
    options: RewardOptions,
) -> Result<Box<dyn RewardModel>, RewardError> {
    if !source.dir.is_dir() {
        return Err(RewardError::Unknown {
            name: source.name.clone(),
        });
    }
    load_dir(&source.dir, source.metric, options)
}

/// Loads the reward folder `dir`: its config settled (`resolve`), the graph opened once, the
/// self-check run (unless `options` turn it off); `metric` overrides a similarity model's
/// own.
pub fn load_dir(
    dir: &Path,
    metric: Option<SimilarityMetric>,
    options: RewardOptions,
) -> Result<Box<dyn RewardModel>, RewardError> {
    let file = RewardConfigFile::read(dir)?;
    let onnx = dir.join(file.onnx());
    if !onnx.is_file() {
        return Err(RewardError::BadConfig {
            path: dir.join(config::CONFIG_FILE),
            reason: format!("the graph file {} is missing", onnx.display()),
        });
    }
    let facts = folder::FolderFacts::read(dir)?;
    let tokenizer = crate::model::Tokenizer::load(dir)?;
    let session = crate::runtime::open_session(&onnx, options.session)?;
    let outline = folder::GraphOutline::of(&session);
    let resolved = resolve::resolve_with(dir, file, &outline, &facts, &|t| tokenizer.token_id(t))?;
    let config = resolved.config;
    let model = sequence::SequenceModel::open(
        dir,
        &config,
        session,
        options.session.device,
        tokenizer,
        options.batch_tokens,
    )?;
    let self_check = if options.self_check {
        Some(self_check::run(
            dir,
            &model,
            &resolved.pad_candidates,
            options.self_check_both_sides,
        )?)
    } else {
        None
    };
    let model: Box<dyn RewardModel> = match config.kind {
        RewardKind::Classifier => Box::new(classifier::ClassifierRm::new(
            dir,
            &config,
            model,
            options.pool_on_device,
        )?),
        RewardKind::Similarity => {
            Box::new(similarity::SimilarityRm::new(dir, &config, model, metric))
        }
    };
    Ok(Box::new(Loaded {
        model,
        report: LoadReport {
            config,
            inferred: resolved.inferred,
            self_check,
        },
    }))
}
