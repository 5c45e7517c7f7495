//! Sampling parameters (validated once) and the CPU sampler: temperature, top-k, top-p,
//! min-p and a draw from one uniform number. This CPU path is the reference; a GPU kernel
//! must give the same token for the same logits and uniform.
//!
//! Top-p never sorts the whole vocabulary: one pass keeps the tokens within a few logits of
//! the best (a prefix of the sorted order), sorts only those, and widens the window only
//! when their probability mass is still below `top_p`. Exponentials use a vectorizable
//! polynomial (`fast_exp`, relative error below 2e-7·(1+|x|)).

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
    /// Subtracted once from the logit of every token already generated (0 = off).
    pub presence_penalty: f32,
    /// Subtracted per occurrence from the logit of every token already generated (0 = off).
    pub frequency_penalty: f32,
    /// Alternatives (most likely first) reported with each token, 0..=20 (0 = off).
    pub top_logprobs: usize,
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
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            top_logprobs: 0,
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
        let o = params.options();
        let max = max_of(logits);
        let inv_t = 1.0 / o.temperature;
        let weight = |i: u32| fast_exp((logits[i as usize] - max) * inv_t);
        let total = sum_exp(logits, max, inv_t);
        let limit = if o.top_k == 0 {
            logits.len()
        } else {
            o.top_k.min(logits.len())
        };

        // Candidates: every token within `delta` logits of the best, sorted. They are a
        // prefix of the full sorted order, so once they hold `top_p` of the mass (or
        // `top_k` tokens) the nucleus is exactly what a full sort would give.
        let mut delta = 3.0 * o.temperature;
        let kept = loop {
            let floor = max - delta;
            self.candidates.clear();
            self.candidates.extend(
                logits
                    .iter()
                    .enumerate()
                    .filter(|(_, &l)| l >= floor)
                    .map(|(i, _)| i as u32),
            );
            self.candidates.sort_unstable_by(|a, b| {
                logits[*b as usize]
                    .total_cmp(&logits[*a as usize])
                    .then(a.cmp(b))
            });
            let mut mass = 0.0f32;
            let mut kept = None;
            for (n, &i) in self.candidates.iter().take(limit).enumerate() {
                mass += weight(i) / total;
                if mass >= o.top_p || n + 1 == limit {
                    kept = Some(n + 1);
                    break;
                }
            }
            match kept {
                Some(k) => break k,
                None if self.candidates.len() == logits.len() => break self.candidates.len(),
                None => delta *= 2.0,
            }
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
        // At temperature 1 the sampling normalizer is the log-prob's normalizer too.
        let logprob = if inv_t == 1.0 {
            logits[token as usize] - max - total.ln()
        } else {
            log_softmax_with_max(logits, max, token)
        };
        Sampled { token, logprob }
    }
}

/// Largest value of `row`, with eight lanes so the loop vectorizes (`maxps`).
fn max_of(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &l) in acc.iter_mut().zip(chunk) {
            if l > *a {
                *a = l;
            }
        }
    }
    acc.iter()
        .chain(tail)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `sum_i exp((row_i - max) * scale)` with eight independent accumulators, so the
/// compiler vectorizes the loop (a single running sum would force strict ordering).
fn sum_exp(row: &[f32], max: f32, scale: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &l) in acc.iter_mut().zip(chunk) {
            *a += fast_exp((l - max) * scale);
        }
    }
    let tail: f32 = tail.iter().map(|&l| fast_exp((l - max) * scale)).sum();
    acc.iter().sum::<f32>() + tail
}

/// `exp(x)` for `x <= 0` to a relative error below `2e-7 * (1 + |x|)` (the float32
/// rounding of `x * log2 e` dominates), in plain arithmetic the compiler can
/// vectorize: `2^n * 2^f` with `n = round(x log2 e)`, `|f| <= 1/2`, and a degree-6 Taylor
/// polynomial for `2^f`. Inputs below -87 give `exp(-87)` (about 1.6e-38).
#[inline]
pub fn fast_exp(x: f32) -> f32 {
    let t = x.max(-87.0) * std::f32::consts::LOG2_E;
    // Round to nearest by adding 1.5 * 2^23: the sum's low mantissa bits then hold n as an
    // integer, so neither `floor` (a libm call on baseline x86-64) nor a saturating
    // float-to-int cast stops the loop from vectorizing.
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: i32 = 0x4B40_0000;
    let shifted = t + ROUND;
    let n = shifted - ROUND;
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND_BITS);
    let f = (t - n) * std::f32::consts::LN_2;
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0))))));
    f32::from_bits((n_int.wrapping_add(127) << 23) as u32) * p
}

/// `log softmax(row)[token]`: the model's log-probability of `token` (temperature 1).
pub fn log_softmax_at(row: &[f32], token: TokenId) -> f32 {
    log_softmax_with_max(row, max_of(row), token)
}

fn log_softmax_with_max(row: &[f32], max: f32, token: TokenId) -> f32 {
    row[token as usize] - max - sum_exp(row, max, 1.0).ln()
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
    fn fast_exp_matches_std_exp() {
        for i in 0..=20_000 {
            let x = -(i as f32) * 0.0043;
            let (a, b) = (fast_exp(x), x.exp());
            assert!(
                (a - b).abs() <= 2e-7 * (1.0 - x) * b + 1e-38,
                "exp({x}): {a} vs {b}"
            );
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
