//! Reward models: one trait, [`RewardModel`], and the kinds a reward folder can hold, chosen
//! by its `reward_config.json`.
//!
//! Rooms: `config` (the folder's config, validated), `sequence` (tokenize → length-grouped
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
pub mod implicit;
pub mod pool;
pub mod sequence;
mod service;
pub mod similarity;

use std::path::{Path, PathBuf};

pub use config::{RewardConfig, RewardKind, SimilarityMetric};
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
         run `make setup` to export the embedded ones, or pass a folder with reward_config.json"
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
}

impl Default for RewardOptions {
    fn default() -> Self {
        Self {
            session: SessionOptions::default(),
            batch_tokens: DEFAULT_BATCH_TOKENS,
            pool_on_device: true,
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

/// Loads the reward model `source` names; a folder without a reward config is
/// [`RewardError::Unknown`].
pub fn load(
    source: &RewardSource,
    options: RewardOptions,
) -> Result<Box<dyn RewardModel>, RewardError> {
    if !source.dir.join(config::CONFIG_FILE).is_file() {
        return Err(RewardError::Unknown {
            name: source.name.clone(),
        });
    }
    load_dir(&source.dir, source.metric, options)
}

/// Loads the reward folder `dir`; `metric` overrides a similarity model's own.
pub fn load_dir(
    dir: &Path,
    metric: Option<SimilarityMetric>,
    options: RewardOptions,
) -> Result<Box<dyn RewardModel>, RewardError> {
    let config = RewardConfig::load(dir)?;
    Ok(match config.kind {
        RewardKind::Classifier => Box::new(classifier::ClassifierRm::load(
            dir,
            &config,
            options.session,
            options.batch_tokens,
            options.pool_on_device,
        )?),
        RewardKind::Similarity => Box::new(similarity::SimilarityRm::load(
            dir,
            &config,
            options.session,
            options.batch_tokens,
            metric,
        )?),
    })
}
