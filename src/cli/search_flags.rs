//! The search flags `tpo search` and `tpo bench search` share: strategy and its settings,
//! sampling, and the reward model. One place turns them into `SearchParams`, checks them
//! against the engine's KV slots and opens the models.

use tpo_engine::app::App;
use tpo_engine::engine::Engine;
use tpo_engine::reward::{self, RewardService};
use tpo_engine::search::{
    DarwinOptions, PeakSetting, SearchError, SearchOptions, SearchParams, Strategy,
};

use super::ModelArgs;

#[derive(Debug, clap::Args)]
pub(super) struct SearchFlags {
    /// Search strategy: tpo, bon (Best-of-N), darwin or greedy.
    #[arg(long, default_value = "tpo", value_parser = parse_strategy)]
    pub(super) strategy: Strategy,
    /// Samples per call (N): initial samples, and rewrites per TPO step.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) width: u32,
    /// TPO steps (D); 0 makes TPO a Best-of-N.
    #[arg(long, default_value_t = 2)]
    pub(super) depth: u32,
    /// Most tokens per policy call (answers, critiques, suggestions, rewrites).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) max_new_tokens: u32,
    /// Seed of the search; the same seed gives the same trace, alone or in a batch.
    #[arg(long, default_value_t = 7)]
    pub(super) seed: u64,
    /// DARWIN: instruction variants per iteration (M); each starts one candidate.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) mutations: u32,
    /// DARWIN: generated tokens between reward-guided replacements (m).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) replace_every: u32,
    /// DARWIN: candidates kept at each replacement (k); the rest become forks of the best.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) keep: u32,
    /// DARWIN: mutate-and-generate iterations.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) iterations: u32,
    /// Sampling temperature of every sampled call.
    #[arg(long, default_value_t = 0.7)]
    pub(super) temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 0.95)]
    pub(super) top_p: f32,
    /// Reward model: judge (the embedded SmolLM2 judge), similarity or bertscore (need a
    /// reference answer), or a folder with reward_config.json.
    #[arg(long, default_value = "judge", value_name = "NAME|DIR")]
    pub(super) reward_model: String,
    /// Padded tokens per reward-model batch.
    #[arg(long, default_value_t = reward::DEFAULT_BATCH_TOKENS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) rm_batch_tokens: u32,
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse().map_err(|e: SearchError| e.to_string())
}

impl SearchFlags {
    /// The validated search settings.
    pub(super) fn params(&self) -> Result<SearchParams, SearchError> {
        SearchParams::new(SearchOptions {
            strategy: self.strategy,
            width: self.width as usize,
            depth: self.depth as usize,
            temperature: self.temperature,
            top_p: self.top_p,
            max_new_tokens: self.max_new_tokens as usize,
            seed: self.seed,
            darwin: DarwinOptions {
                mutations: self.mutations as usize,
                replace_every: self.replace_every as usize,
                keep: self.keep as usize,
                iterations: self.iterations as usize,
            },
        })
    }

    /// `Err` when one request of the search decodes more sequences at once than `model`'s
    /// flags give KV slots: greedy one, DARWIN its population (--mutations), the others
    /// --width. With --kv-memory the count follows from the model, and the engine checks each
    /// request against it.
    pub(super) fn check_kv_slots(&self, model: &ModelArgs) -> Result<(), SearchError> {
        let Some(kv_slots) = model.fixed_kv_slots() else {
            return Ok(());
        };
        let params = self.params()?;
        let flag = match params.options().peak_setting() {
            PeakSetting::Width => "--width",
            PeakSetting::Mutations => "--mutations",
        };
        let needed = params.peak_sequences();
        if needed > kv_slots as usize {
            return Err(SearchError::InvalidParams(format!(
                "{flag} {needed} needs that many KV slots at once; raise --kv-slots (now \
                 {kv_slots})"
            )));
        }
        Ok(())
    }

    /// Opens the policy and this search's reward model (on the policy's device and threads)
    /// through [`App::open`], as the server does.
    pub(super) fn open_models(
        &self,
        model: &ModelArgs,
    ) -> Result<(Engine, RewardService), tpo_engine::Error> {
        self.open_models_batched(model, self.rm_batch_tokens as usize)
    }

    /// [`Self::open_models`] with `rm_batch_tokens` padded tokens per reward batch (1: one
    /// input per batch).
    pub(super) fn open_models_batched(
        &self,
        model: &ModelArgs,
        rm_batch_tokens: usize,
    ) -> Result<(Engine, RewardService), tpo_engine::Error> {
        let names = [self.reward_model.clone()];
        let (engine, rewards) =
            App::open_with_one_reward(&model.app_options(&names, rm_batch_tokens)?)?;
        super::print_reward_load(&self.reward_model, rewards.load_report());
        Ok((engine, rewards))
    }
}
