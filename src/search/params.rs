//! Search settings, validated once ([`SearchParams::new`]), and the seed of every policy
//! call a search makes ([`call_seed`]).
//!
//! Seeds: a search seeded `s` derives each call's seed from `(s, step, role)` alone, never
//! from a shared counter or the clock, and the engine gives sample `i` of a call seeded `c`
//! the stream `c + i` whatever else is in the batch. So a seeded search returns the same
//! trace alone or among any number of concurrent searches.

use std::fmt;
use std::str::FromStr;

use crate::engine::{EngineError, SamplingOptions, SamplingParams};

use super::SearchError;

/// Which search to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Strategy {
    /// One temperature-0 answer, scored.
    #[serde(rename = "greedy")]
    Greedy,
    /// N samples of one prompt (one prefill, N forked decodes), scored; the best wins.
    #[serde(rename = "bon")]
    BestOfN,
    /// Test-time preference optimization (docs/algorithms.md §1).
    #[serde(rename = "tpo")]
    Tpo,
    /// Instruction mutation and reward-guided replacement (docs/algorithms.md §3).
    #[serde(rename = "darwin")]
    Darwin,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Greedy => "greedy",
            Strategy::BestOfN => "bon",
            Strategy::Tpo => "tpo",
            Strategy::Darwin => "darwin",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = SearchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "greedy" => Ok(Strategy::Greedy),
            "bon" | "best-of-n" | "best_of_n" => Ok(Strategy::BestOfN),
            "tpo" => Ok(Strategy::Tpo),
            "darwin" => Ok(Strategy::Darwin),
            other => Err(SearchError::InvalidParams(format!(
                "unknown strategy {other:?} (expected tpo, bon, darwin or greedy)"
            ))),
        }
    }
}

/// What a caller asks for; turned into [`SearchParams`] by validation. The defaults are the
/// TPO reference's sampler (temperature 0.7, top-p 0.95, seed 7) at width 5, depth 2.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOptions {
    pub strategy: Strategy,
    /// Samples per call (N): initial samples and updates per step. Ignored by greedy.
    pub width: usize,
    /// TPO steps (D). Ignored by Best-of-N and greedy.
    pub depth: usize,
    /// Sampler temperature of every sampled call (greedy always uses 0).
    pub temperature: f32,
    pub top_p: f32,
    /// Most tokens per policy call (answers, critiques, suggestions, updates).
    pub max_new_tokens: usize,
    pub seed: u64,
    /// DARWIN's settings (ignored by the other strategies).
    pub darwin: DarwinOptions,
}

/// DARWIN's knobs; the defaults are the reference's (M = 5, m = 40, k = 3, 3 iterations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DarwinOptions {
    /// Instruction variants the policy writes per iteration (M); each starts one candidate.
    pub mutations: usize,
    /// Generated tokens between two reward-guided replacements (m).
    pub replace_every: usize,
    /// Candidates kept at each replacement (k); the others become forks of the best.
    pub keep: usize,
    /// Mutate–generate iterations, each mutating the archive's best instruction.
    pub iterations: usize,
}

impl Default for DarwinOptions {
    fn default() -> Self {
        Self {
            mutations: 5,
            replace_every: 40,
            keep: 3,
            iterations: 3,
        }
    }
}

impl DarwinOptions {
    fn validate(&self) -> Result<(), SearchError> {
        let bad = |what: String| Err(SearchError::InvalidParams(what));
        if self.mutations == 0 {
            return bad("DARWIN needs at least 1 mutation".into());
        }
        if self.replace_every == 0 {
            return bad("DARWIN's replacement interval must be at least 1 token".into());
        }
        if self.keep == 0 || self.keep > self.mutations {
            return bad(format!(
                "DARWIN keeps k = {} candidates at each replacement; it must be between 1 and \
                 the number of mutations ({})",
                self.keep, self.mutations
            ));
        }
        if self.iterations == 0 {
            return bad("DARWIN needs at least 1 iteration".into());
        }
        Ok(())
    }
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            strategy: Strategy::Tpo,
            width: 5,
            depth: 2,
            temperature: 0.7,
            top_p: 0.95,
            max_new_tokens: 512,
            seed: 7,
            darwin: DarwinOptions::default(),
        }
    }
}

/// The setting a search's peak sequence count comes from (what a caller names when the
/// count is too many).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeakSetting {
    /// [`SearchOptions::width`] (greedy's one sequence is counted here too).
    Width,
    /// DARWIN's population, [`DarwinOptions::mutations`].
    Mutations,
}

impl SearchOptions {
    /// Sequences one request of this search decodes at once, its peak: greedy one, DARWIN
    /// its population (`mutations`), Best-of-N and TPO `width`. What the server admits a
    /// search by and what must fit the engine's KV slots.
    pub fn peak_sequences(&self) -> usize {
        match self.strategy {
            Strategy::Greedy => 1,
            Strategy::Darwin => self.darwin.mutations,
            Strategy::BestOfN | Strategy::Tpo => self.width,
        }
    }

    /// The setting [`Self::peak_sequences`] comes from.
    pub fn peak_setting(&self) -> PeakSetting {
        match self.strategy {
            Strategy::Darwin => PeakSetting::Mutations,
            Strategy::Greedy | Strategy::BestOfN | Strategy::Tpo => PeakSetting::Width,
        }
    }
}

/// Validated search settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchParams {
    options: SearchOptions,
}

impl SearchParams {
    pub fn new(options: SearchOptions) -> Result<Self, SearchError> {
        if options.width == 0 {
            return Err(SearchError::InvalidParams(
                "width must be at least 1".into(),
            ));
        }
        options.darwin.validate()?;
        // The sampler settings are checked by the engine's own validation, once, here.
        SamplingParams::new(sampling_options(&options, options.seed, Vec::new()))
            .map_err(|e| SearchError::InvalidParams(e.to_string()))?;
        Ok(Self { options })
    }

    pub fn options(&self) -> &SearchOptions {
        &self.options
    }

    pub fn strategy(&self) -> Strategy {
        self.options.strategy
    }

    pub fn width(&self) -> usize {
        self.options.width
    }

    pub fn depth(&self) -> usize {
        self.options.depth
    }

    pub fn seed(&self) -> u64 {
        self.options.seed
    }

    pub fn max_new_tokens(&self) -> usize {
        self.options.max_new_tokens
    }

    pub fn darwin(&self) -> DarwinOptions {
        self.options.darwin
    }

    /// Sequences one request of this search decodes at once (the one peak rule,
    /// [`SearchOptions::peak_sequences`]).
    pub fn peak_sequences(&self) -> usize {
        self.options.peak_sequences()
    }

    /// The search's sampler with `seed`, stopping at any of `stop`.
    pub(crate) fn sampling(
        &self,
        seed: u64,
        stop: Vec<String>,
    ) -> Result<SamplingParams, SearchError> {
        self.sampling_up_to(seed, stop, self.options.max_new_tokens)
    }

    /// The search's sampler with `seed` and `stop`, generating at most `max_new_tokens`
    /// (DARWIN's segments and mutations).
    pub(crate) fn sampling_up_to(
        &self,
        seed: u64,
        stop: Vec<String>,
        max_new_tokens: usize,
    ) -> Result<SamplingParams, SearchError> {
        let mut options = sampling_options(&self.options, seed, stop);
        options.max_new_tokens = max_new_tokens;
        SamplingParams::new(options).map_err(|e| SearchError::Engine(EngineError::from(e)))
    }

    /// Temperature 0 with the search's token limit.
    pub(crate) fn greedy_sampling(&self) -> Result<SamplingParams, SearchError> {
        SamplingParams::greedy(self.options.max_new_tokens)
            .map_err(|e| SearchError::Engine(EngineError::from(e)))
    }
}

fn sampling_options(options: &SearchOptions, seed: u64, stop: Vec<String>) -> SamplingOptions {
    SamplingOptions {
        temperature: options.temperature,
        top_p: options.top_p,
        max_new_tokens: options.max_new_tokens,
        stop,
        seed: Some(seed),
        ..SamplingOptions::default()
    }
}

/// Which policy call of a search a seed is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallRole {
    /// The initial N samples (step 0).
    Sample,
    /// TPO's textual loss (the critique).
    Loss,
    /// TPO's textual gradient (the suggestions).
    Gradient,
    /// TPO's update (N rewrites).
    Update,
    /// DARWIN's instruction mutations of an iteration.
    Mutation,
}

/// The seed of the policy call `role` at `step` of a search seeded `seed`.
///
/// The initial samples use `seed` itself, so the first N candidates of TPO are exactly
/// Best-of-N's N samples with the same seed (sample `i` seeded `seed + i`). Every other call
/// gets a SplitMix64 hash of `(seed, step, role)`: distinct calls get unrelated streams and
/// the value depends on nothing else.
pub fn call_seed(seed: u64, step: usize, role: CallRole) -> u64 {
    if step == 0 && role == CallRole::Sample {
        return seed;
    }
    let role_code = match role {
        CallRole::Sample => 0u64,
        CallRole::Loss => 1,
        CallRole::Gradient => 2,
        CallRole::Update => 3,
        // Outside the 2-bit codes above so TPO's seeds stay as they were.
        CallRole::Mutation => return splitmix64(seed ^ splitmix64(!(step as u64))),
    };
    splitmix64(seed ^ splitmix64(((step as u64) << 2) | role_code))
}

/// The seed of DARWIN's generation request at (`iteration`, `round`) for the group of
/// candidates whose first member is `member` (sample `j` of the request gets this + `j`).
/// Depends on nothing but these numbers, so a DARWIN search is reproducible in any batch.
pub fn segment_seed(seed: u64, iteration: usize, round: usize, member: usize) -> u64 {
    let key =
        (0xDA_u64 << 56) ^ ((iteration as u64) << 40) ^ ((round as u64) << 20) ^ member as u64;
    splitmix64(seed ^ splitmix64(key))
}

/// SplitMix64's finalizer: a bijective mix of 64 bits.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_samples_use_the_search_seed_and_other_calls_differ() {
        assert_eq!(call_seed(7, 0, CallRole::Sample), 7);
        let mut seen = std::collections::HashSet::new();
        for step in 0..4 {
            for role in [
                CallRole::Sample,
                CallRole::Loss,
                CallRole::Gradient,
                CallRole::Update,
                CallRole::Mutation,
            ] {
                assert!(seen.insert(call_seed(7, step, role)), "{step} {role:?}");
                assert_eq!(call_seed(7, step, role), call_seed(7, step, role));
            }
        }
        assert_ne!(
            call_seed(7, 1, CallRole::Update),
            call_seed(8, 1, CallRole::Update)
        );
    }

    #[test]
    fn bad_settings_are_refused_once_at_construction() {
        let bad = |o: SearchOptions| SearchParams::new(o).is_err();
        assert!(bad(SearchOptions {
            width: 0,
            ..SearchOptions::default()
        }));
        assert!(bad(SearchOptions {
            top_p: 0.0,
            ..SearchOptions::default()
        }));
        assert!(bad(SearchOptions {
            temperature: -1.0,
            ..SearchOptions::default()
        }));
        assert!(bad(SearchOptions {
            max_new_tokens: 0,
            ..SearchOptions::default()
        }));
        assert!(SearchParams::new(SearchOptions::default()).is_ok());
        let darwin = |d: DarwinOptions| SearchOptions {
            darwin: d,
            ..SearchOptions::default()
        };
        let d = DarwinOptions::default();
        assert!(bad(darwin(DarwinOptions { keep: 6, ..d })));
        assert!(bad(darwin(DarwinOptions { keep: 0, ..d })));
        assert!(bad(darwin(DarwinOptions {
            replace_every: 0,
            ..d
        })));
        assert!(bad(darwin(DarwinOptions { iterations: 0, ..d })));
        assert!(bad(darwin(DarwinOptions { mutations: 0, ..d })));
    }

    #[test]
    fn segment_seeds_differ_by_every_coordinate() {
        let mut seen = std::collections::HashSet::new();
        for iteration in 1..4 {
            for round in 0..8 {
                for member in 0..5 {
                    assert!(seen.insert(segment_seed(7, iteration, round, member)));
                }
            }
        }
        assert_ne!(segment_seed(7, 1, 0, 0), segment_seed(8, 1, 0, 0));
    }

    #[test]
    fn the_peak_is_one_for_greedy_the_population_for_darwin_and_the_width_otherwise() {
        let options = |strategy| SearchOptions {
            strategy,
            width: 4,
            darwin: DarwinOptions {
                mutations: 6,
                keep: 2,
                ..DarwinOptions::default()
            },
            ..SearchOptions::default()
        };
        let peak = |strategy| {
            let o = options(strategy);
            let p = SearchParams::new(o.clone()).unwrap();
            assert_eq!(p.peak_sequences(), o.peak_sequences());
            (o.peak_sequences(), o.peak_setting())
        };
        assert_eq!(peak(Strategy::Greedy), (1, PeakSetting::Width));
        assert_eq!(peak(Strategy::Darwin), (6, PeakSetting::Mutations));
        assert_eq!(peak(Strategy::BestOfN), (4, PeakSetting::Width));
        assert_eq!(peak(Strategy::Tpo), (4, PeakSetting::Width));
    }

    #[test]
    fn strategies_parse_from_their_names() {
        assert_eq!("tpo".parse::<Strategy>().unwrap(), Strategy::Tpo);
        assert_eq!("BoN".parse::<Strategy>().unwrap(), Strategy::BestOfN);
        assert_eq!("greedy".parse::<Strategy>().unwrap(), Strategy::Greedy);
        assert_eq!("darwin".parse::<Strategy>().unwrap(), Strategy::Darwin);
        assert!("beam".parse::<Strategy>().is_err());
    }
}
