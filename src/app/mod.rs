//! Opening the models a command or the server runs on, the same way everywhere: one
//! [`AppOptions`] (paths already resolved by the caller, see [`crate::paths`]) → ONNX
//! Runtime loaded, the policy [`Engine`] and one [`RewardService`] per reward model.

pub mod catalog;
pub mod doctor;
pub mod inspect;
pub mod score;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::engine::{Engine, EngineOptions};
use crate::model::ModelDir;
use crate::reward::{self, RewardOptions, RewardService, RewardSource};

/// What to open.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// The ONNX Runtime shared library.
    pub onnxruntime: PathBuf,
    /// The policy's model folder.
    pub policy: PathBuf,
    pub engine: EngineOptions,
    /// Reward models, each started on its own scorer thread (a repeated name is opened once).
    pub reward_models: Vec<RewardSource>,
    pub reward: RewardOptions,
}

/// The running models.
pub struct App {
    pub engine: Engine,
    /// Reward services by the name they were asked for, in name order.
    pub rewards: BTreeMap<String, RewardService>,
    /// The policy folder it was opened from.
    pub policy: PathBuf,
}

impl App {
    /// Loads ONNX Runtime, the policy and every reward model; the first failure is returned.
    pub fn open(options: &AppOptions) -> Result<Self, crate::Error> {
        crate::runtime::init(&options.onnxruntime)?;
        let engine = start_engine(&options.policy, options.engine)?;
        let mut rewards = BTreeMap::new();
        for source in &options.reward_models {
            if rewards.contains_key(&source.name) {
                continue;
            }
            rewards.insert(source.name.clone(), start_reward(source, options.reward)?);
        }
        Ok(Self {
            engine,
            rewards,
            policy: options.policy.clone(),
        })
    }

    /// Opens the policy and the first of `options.reward_models` (a command that searches
    /// with one reward model).
    pub fn open_with_one_reward(
        options: &AppOptions,
    ) -> Result<(Engine, RewardService), crate::Error> {
        let unknown = |name: &str| reward::RewardError::Unknown { name: name.into() };
        let name = match options.reward_models.first() {
            Some(source) => source.name.clone(),
            None => return Err(unknown("(none given)").into()),
        };
        let mut app = Self::open(options)?;
        let rewards = app.rewards.remove(&name).ok_or_else(|| unknown(&name))?;
        Ok((app.engine, rewards))
    }

    /// The reward service called `name`, if it was loaded.
    pub fn reward(&self, name: &str) -> Option<&RewardService> {
        self.rewards.get(name)
    }
}

/// Opens the model folder `dir` and starts an engine on it (ONNX Runtime must be loaded).
pub fn start_engine(dir: &Path, options: EngineOptions) -> Result<Engine, crate::Error> {
    let model = ModelDir::open(dir)?;
    Ok(Engine::start(&model, options)?)
}

/// Loads a reward model and starts its scorer thread (ONNX Runtime must be loaded).
pub fn start_reward(
    source: &RewardSource,
    options: RewardOptions,
) -> Result<RewardService, crate::Error> {
    let scorer = reward::load(source, options)?;
    Ok(RewardService::start(scorer)?)
}
