//! Sampling parameters (validated once) and the CPU sampler: temperature, top-k, top-p,
//! min-p and a draw from one uniform number. This CPU path is the reference; a GPU kernel
//! must give the same token for the same logits and uniform.
//!
//! Top-p never sorts the whole vocabulary: it selects the best `c` candidates
//! (`select_nth_unstable`, O(V)), sorts only those, and widens `c` only when their
//! probability mass is still below `top_p`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::TokenId;

/// Why a set of sampling parameters was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    #[error("temperature must be finite and >= 0, got {0}")]
    Temperature(f32),
    #[error("top_p must be in (0, 1], got {0}")]
    TopP(f32),
    #[error("min_p must be in [0, 1), got {0}")]
    MinP(f32),
    #[error("max_new_tokens must be at least 1")]
    MaxNewTokens,
    #[error("stop strings must not be empty")]
    EmptyStop,
}

/// What a caller asks for; turned into [`SamplingParams`] by validation.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 means no top-k limit.
    pub top_k: usize,
    /// Keep tokens whose probability is at least `min_p` times the best one's (0 = off).
    pub min_p: f32,
    pub max_new_tokens: usize,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<TokenId>,
    /// Seed of the request's RNG streams; `None` draws one from the OS.
    pub seed: Option<u64>,
    /// Keep generating through EOS until `max_new_tokens` (for benchmarks).
    pub ignore_eos: bool,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            max_new_tokens: 256,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            seed: None,
            ignore_eos: false,
        }
    }
}

/// Validated sampling parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    options: SamplingOptions,
    seed: u64,
}

impl SamplingParams {
    pub fn new(options: SamplingOptions) -> Result<Self, SamplingError> {
        let o = &options;
        if !o.temperature.is_finite() || o.temperature < 0.0 {
            return Err(SamplingError::Temperature(o.temperature));
        }
        if !(o.top_p > 0.0 && o.top_p <= 1.0) {
            return Err(SamplingError::TopP(o.top_p));
        }
        if !(o.min_p >= 0.0 && o.min_p < 1.0) {
            return Err(SamplingError::MinP(o.min_p));
        }
        if o.max_new_tokens == 0 {
            return Err(SamplingError::MaxNewTokens);
        }
        if o.stop.iter().any(String::is_empty) {
            return Err(SamplingError::EmptyStop);
        }
        let seed = o.seed.unwrap_or_else(rand::random);
        Ok(Self { options, seed })
    }

    /// Greedy decoding of at most `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Result<Self, SamplingError> {
        Self::new(SamplingOptions {
            max_new_tokens,
            ..SamplingOptions::default()
        })
    }

    pub fn options(&self) -> &SamplingOptions {
        &self.options
    }

    pub fn max_new_tokens(&self) -> usize {
        self.options.max_new_tokens
    }

    pub fn is_greedy(&self) -> bool {
        self.options.temperature == 0.0 || self.options.top_k == 1
    }

    /// The seed of sample `index` of this request: `seed + index`, so sample `i` of an
    /// `n`-sample request equals a one-sample request seeded `seed + i`.
    pub fn sample_seed(&self, index: u64) -> u64 {
        self.seed.wrapping_add(index)
    }

    /// The RNG stream of sample `index`: the same (seed, index) gives the same numbers
    /// whatever else runs in the batch.
    pub fn rng(&self, index: u64) -> SequenceRng {
        SequenceRng(ChaCha8Rng::seed_from_u64(self.sample_seed(index)))
    }

    /// Whether EOS tokens are ignored (benchmarks that need a fixed number of tokens).
    pub fn ignore_eos(&self) -> bool {
        self.options.ignore_eos
    }
}

/// A sequence's own random stream: one uniform per sampled token.
#[derive(Debug, Clone)]
pub struct SequenceRng(ChaCha8Rng);

impl SequenceRng {
    pub fn next_uniform(&mut self) -> f32 {
        self.0.random::<f32>()
    }
}

/// A sampled token and its log-probability under the model (temperature 1, no truncation),
/// which is what teacher-forced scoring of the same text computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampled {
    pub token: TokenId,
    pub logprob: f32,
}

/// Reusable scratch space for sampling rows of logits.
#[derive(Default)]
pub struct Sampler {
    candidates: Vec<u32>,
}

/// First candidate-set size tried by top-p before widening (x4 each round).
const FIRST_CANDIDATES: usize = 64;

impl Sampler {
    /// Picks the next token of one row of `logits` with uniform `u` in [0, 1).
    pub fn sample(&mut self, logits: &[f32], params: &SamplingParams, u: f32) -> Sampled {
        if params.is_greedy() {
            let token = argmax(logits);
            return Sampled {
                token,
                logprob: log_softmax_at(logits, token),
            };
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let o = params.options();
        let inv_t = 1.0 / o.temperature;
        let weight = |i: u32| ((logits[i as usize] - max) * inv_t).exp();
        let total: f32 = logits.iter().map(|&l| ((l - max) * inv_t).exp()).sum();
        let vocab = logits.len();
        let limit = if o.top_k == 0 {
            vocab
        } else {
            o.top_k.min(vocab)
        };

        let mut c = FIRST_CANDIDATES.min(limit);
        let kept = loop {
            self.top_candidates(logits, c);
            let mut mass = 0.0f32;
            let mut kept = c;
            for (n, &i) in self.candidates[..c].iter().enumerate() {
                mass += weight(i) / total;
                if mass >= o.top_p {
                    kept = n + 1;
                    break;
                }
            }
            if kept < c || mass >= o.top_p || c == limit {
                break kept;
            }
            c = (c * 4).min(limit);
        };
        let mut kept = kept.max(1);
        if o.min_p > 0.0 {
            let floor = o.min_p; // the best candidate has weight 1 (max subtracted)
            kept = self.candidates[..kept]
                .iter()
                .take_while(|&&i| weight(i) >= floor)
                .count()
                .max(1);
        }
        let chosen = &self.candidates[..kept];
        let kept_mass: f32 = chosen.iter().map(|&i| weight(i)).sum();
        let target = u * kept_mass;
        let mut acc = 0.0f32;
        let mut token = chosen[kept - 1];
        for &i in chosen {
            acc += weight(i);
            if acc > target {
                token = i;
                break;
            }
        }
        Sampled {
            token,
            logprob: log_softmax_at(logits, token),
        }
    }

    /// Leaves the `c` highest logits' indices, sorted best first, in `self.candidates[..c]`.
    fn top_candidates(&mut self, logits: &[f32], c: usize) {
        self.candidates.clear();
        self.candidates.extend(0..logits.len() as u32);
        let by_logit_desc = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        if c < self.candidates.len() {
            self.candidates.select_nth_unstable_by(c - 1, by_logit_desc);
        }
        self.candidates[..c].sort_unstable_by(by_logit_desc);
    }
}

/// `log softmax(row)[token]`: the model's log-probability of `token` (temperature 1).
pub fn log_softmax_at(row: &[f32], token: TokenId) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_z = max + row.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    row[token as usize] - log_z
}

/// Index of the largest logit (the lowest index among ties).
pub fn argmax(logits: &[f32]) -> TokenId {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as TokenId
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, top_k: usize) -> SamplingParams {
        SamplingParams::new(SamplingOptions {
            temperature,
            top_p,
            top_k,
            seed: Some(1),
            ..SamplingOptions::default()
        })
        .unwrap()
    }

    /// Full-sort reference of the nucleus: tokens kept by top-k then top-p.
    fn reference_nucleus(logits: &[f32], t: f32, top_p: f32, top_k: usize) -> Vec<u32> {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_by(|a, b| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        });
        if top_k > 0 {
            idx.truncate(top_k);
        }
        let max = logits[idx[0] as usize];
        let total: f32 = logits.iter().map(|l| ((l - max) / t).exp()).sum();
        let mut mass = 0.0;
        let mut kept = Vec::new();
        for i in idx {
            kept.push(i);
            mass += ((logits[i as usize] - max) / t).exp() / total;
            if mass >= top_p {
                break;
            }
        }
        kept
    }

    fn pseudo_logits(n: usize, spread: f32) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        (0..n).map(|_| rng.random::<f32>() * spread).collect()
    }

    #[test]
    fn rejects_invalid_parameters_by_name() {
        let bad = |o: SamplingOptions| SamplingParams::new(o).unwrap_err();
        let d = SamplingOptions::default;
        assert_eq!(
            bad(SamplingOptions {
                temperature: -1.0,
                ..d()
            }),
            SamplingError::Temperature(-1.0)
        );
        assert_eq!(
            bad(SamplingOptions { top_p: 0.0, ..d() }),
            SamplingError::TopP(0.0)
        );
        assert_eq!(
            bad(SamplingOptions { top_p: 1.5, ..d() }),
            SamplingError::TopP(1.5)
        );
        assert_eq!(
            bad(SamplingOptions { min_p: 1.0, ..d() }),
            SamplingError::MinP(1.0)
        );
        assert_eq!(
            bad(SamplingOptions {
                max_new_tokens: 0,
                ..d()
            }),
            SamplingError::MaxNewTokens
        );
        assert_eq!(
            bad(SamplingOptions {
                stop: vec![String::new()],
                ..d()
            }),
            SamplingError::EmptyStop
        );
        assert!(matches!(
            bad(SamplingOptions {
                temperature: f32::NAN,
                ..d()
            }),
            SamplingError::Temperature(_)
        ));
    }

    #[test]
    fn greedy_takes_the_argmax_and_reports_its_log_softmax() {
        let logits = [0.0, 3.0, 1.0];
        let s = Sampler::default().sample(&logits, &SamplingParams::greedy(1).unwrap(), 0.99);
        assert_eq!(s.token, 1);
        let z: f32 = logits.iter().map(|l: &f32| l.exp()).sum();
        assert!((s.logprob - (3.0 - z.ln())).abs() < 1e-6);
    }

    #[test]
    fn partial_selection_draws_only_from_the_full_sort_nucleus() {
        // Flat logits force the candidate set to widen several times.
        for (spread, top_p, top_k) in [
            (1.0, 0.95, 0),
            (20.0, 0.9, 0),
            (5.0, 0.5, 100),
            (2.0, 1.0, 0),
        ] {
            let logits = pseudo_logits(4096, spread);
            let p = params(0.7, top_p, top_k);
            let nucleus = reference_nucleus(&logits, 0.7, top_p, top_k);
            let mut sampler = Sampler::default();
            let mut seen = std::collections::HashSet::new();
            for k in 0..400 {
                let u = (k as f32 + 0.5) / 400.0;
                let s = sampler.sample(&logits, &p, u);
                assert!(
                    nucleus.contains(&s.token),
                    "token {} outside nucleus (spread {spread})",
                    s.token
                );
                seen.insert(s.token);
            }
            assert!(seen.len() > 1, "sampling collapsed to one token");
        }
    }

    #[test]
    fn the_same_uniform_gives_the_same_token() {
        let logits = pseudo_logits(1000, 8.0);
        let p = params(0.7, 0.95, 0);
        let mut sampler = Sampler::default();
        let a = sampler.sample(&logits, &p, 0.3);
        let b = sampler.sample(&logits, &p, 0.3);
        assert_eq!(a, b);
    }

    #[test]
    fn rng_streams_depend_on_seed_and_index_only() {
        let p = params(0.7, 0.95, 0);
        let draw = |i| {
            (0..4)
                .map(|_| 0)
                .fold((Vec::new(), p.rng(i)), |(mut v, mut r), _| {
                    v.push(r.next_uniform());
                    (v, r)
                })
                .0
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        let shifted = SamplingParams::new(SamplingOptions {
            seed: Some(2),
            ..p.options().clone()
        })
        .unwrap();
        let mut r = shifted.rng(2);
        assert_eq!(
            draw(3)[0],
            r.next_uniform(),
            "sample i of seed s is seed s + i"
        );
    }
}
