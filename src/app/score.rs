//! Opening what `tpo score` scores with: a reward model, implicit rewards from a policy and
//! its reference models, or both, as one [`Scorers`]. Not the scoring run itself
//! ([`crate::dataset::ScoreJob`]) nor the checks of the flags (the CLI's).

use std::path::{Path, PathBuf};

use super::start_engine;
use crate::dataset::Scorers;
use crate::engine::EngineOptions;
use crate::reward::implicit::{ImplicitModels, NamedEngine};
use crate::reward::{self, RewardOptions, RewardSource};

/// What to open for a scoring run (paths already resolved by the caller).
#[derive(Debug, Clone)]
pub struct ScorerOptions {
    /// The ONNX Runtime shared library.
    pub onnxruntime: PathBuf,
    /// The reward model; `None` scores with implicit rewards only.
    pub reward: Option<RewardSource>,
    /// The reward model's settings; its session's device and threads also run the implicit
    /// rewards' engines.
    pub reward_options: RewardOptions,
    pub implicit: Option<ImplicitOptions>,
}

/// DPO / MRPO implicit rewards: the policy and its reference models, each on its own engine.
#[derive(Debug, Clone)]
pub struct ImplicitOptions {
    pub policy: PathBuf,
    pub references: Vec<PathBuf>,
    /// β, MRPO on or off and its η, as [`ImplicitModels`] says.
    pub beta: f64,
    pub mrpo: bool,
    pub eta: f64,
}

/// Loads ONNX Runtime, the reward model and the implicit rewards' engines.
pub fn open_scorers(options: &ScorerOptions) -> Result<Scorers, crate::Error> {
    crate::runtime::init(&options.onnxruntime)?;
    let reward = match &options.reward {
        Some(source) => Some(reward::load(source, options.reward_options)?),
        None => None,
    };
    let implicit = match &options.implicit {
        Some(implicit) => Some(start_implicit(implicit, options.reward_options.session)?),
        None => None,
    };
    Ok(Scorers { reward, implicit })
}

/// Starts the policy and every reference model, each on its own engine with `session`'s
/// device and threads (ONNX Runtime must be loaded).
fn start_implicit(
    options: &ImplicitOptions,
    session: crate::runtime::SessionOptions,
) -> Result<ImplicitModels, crate::Error> {
    let start = |dir: &Path| -> Result<NamedEngine, crate::Error> {
        let engine_options = EngineOptions {
            decoder: session,
            ..EngineOptions::default()
        };
        Ok(NamedEngine {
            name: dir.display().to_string(),
            engine: start_engine(dir, engine_options)?,
        })
    };
    Ok(ImplicitModels {
        policy: start(&options.policy)?,
        references: options
            .references
            .iter()
            .map(|dir| start(dir))
            .collect::<Result<Vec<_>, _>>()?,
        beta: options.beta,
        mrpo: options.mrpo,
        eta: options.eta,
    })
}
