//! Opening the models a command or the server runs on, the same way everywhere: one
//! [`AppOptions`] (paths already resolved by the caller) → the policy [`Engine`] and one
//! [`RewardService`] per named reward model.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::engine::{Engine, EngineOptions};
use crate::model::ModelDir;
use crate::reward::{self, RewardOptions, RewardService};

/// What to open.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// The policy's model folder.
    pub policy: PathBuf,
    pub engine: EngineOptions,
    /// Reward models by name: `judge`, `similarity`, `bertscore` or a folder (see
    /// [`reward::folder_of`]), each started on its own scorer thread.
    pub reward_models: Vec<String>,
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
    /// Loads the policy and every reward model; the first failure is returned.
    pub fn open(options: &AppOptions) -> Result<Self, crate::Error> {
        let model = ModelDir::open(&options.policy)?;
        let engine = Engine::start(&model, options.engine)?;
        let mut rewards = BTreeMap::new();
        for name in &options.reward_models {
            if rewards.contains_key(name) {
                continue;
            }
            let scorer = reward::load(name, options.reward)?;
            rewards.insert(name.clone(), RewardService::start(scorer)?);
        }
        Ok(Self {
            engine,
            rewards,
            policy: options.policy.clone(),
        })
    }

    /// The reward service called `name`, if it was loaded.
    pub fn reward(&self, name: &str) -> Option<&RewardService> {
        self.rewards.get(name)
    }
}
