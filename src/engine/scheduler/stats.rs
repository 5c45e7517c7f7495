//! The counters and gauges the scheduler publishes (`/metrics`, benchmarks): what they
//! are and their snapshots. Not where they are updated (the scheduler's rooms do that).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters the scheduler publishes (read by benchmarks and `/metrics`).
#[derive(Debug, Default)]
pub struct EngineStats {
    pub decode_steps: AtomicU64,
    pub prefill_tokens: AtomicU64,
    /// Model runs that prefilled prompt tokens (a prefill group is one run).
    pub prefill_runs: AtomicU64,
    /// Nanoseconds of prefill (admission, prompt chunks through the model, first samples).
    pub prefill_nanos: AtomicU64,
    /// Nanoseconds of decode iterations (step + sampling + streaming).
    pub decode_nanos: AtomicU64,
    /// Nanoseconds inside ONNX Runtime `run` during decode steps.
    pub decode_ort_nanos: AtomicU64,
    /// Nanoseconds sampling the rows of decode steps.
    pub decode_sample_nanos: AtomicU64,
    /// Sum over decode steps of the batch size (mean batch = this / decode_steps).
    pub decode_rows: AtomicU64,
    /// Sequences decoding now.
    pub running: AtomicU64,
    /// Requests waiting for slots now.
    pub waiting: AtomicU64,
    /// KV slots held now (decoding, prefilling or forking).
    pub kv_slots_used: AtomicU64,
    /// KV slots holding prefix-cache entries now (free to evict).
    pub kv_slots_cached: AtomicU64,
    /// Admissions that reused cached KV rows.
    pub prefix_hits: AtomicU64,
    /// Admissions that found no cached prefix (with the cache on).
    pub prefix_misses: AtomicU64,
    /// Prompt tokens whose KV rows came from the cache instead of prefill.
    pub prefix_reused_tokens: AtomicU64,
    /// Cache entries dropped to free a slot.
    pub prefix_evictions: AtomicU64,
}

/// The cumulative counters of [`EngineStats`] at one moment; benches subtract two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub steps: u64,
    pub rows: u64,
    pub nanos: u64,
    pub ort_nanos: u64,
    pub sample_nanos: u64,
    pub prefill_tokens: u64,
    pub prefill_runs: u64,
    pub prefill_nanos: u64,
    pub prefix_hits: u64,
    pub prefix_misses: u64,
    pub prefix_reused_tokens: u64,
    pub prefix_evictions: u64,
}

impl StatsSnapshot {
    /// What happened between `before` and `self`.
    pub fn since(&self, before: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            steps: self.steps.saturating_sub(before.steps),
            rows: self.rows.saturating_sub(before.rows),
            nanos: self.nanos.saturating_sub(before.nanos),
            ort_nanos: self.ort_nanos.saturating_sub(before.ort_nanos),
            sample_nanos: self.sample_nanos.saturating_sub(before.sample_nanos),
            prefill_tokens: self.prefill_tokens.saturating_sub(before.prefill_tokens),
            prefill_runs: self.prefill_runs.saturating_sub(before.prefill_runs),
            prefill_nanos: self.prefill_nanos.saturating_sub(before.prefill_nanos),
            prefix_hits: self.prefix_hits.saturating_sub(before.prefix_hits),
            prefix_misses: self.prefix_misses.saturating_sub(before.prefix_misses),
            prefix_reused_tokens: self
                .prefix_reused_tokens
                .saturating_sub(before.prefix_reused_tokens),
            prefix_evictions: self
                .prefix_evictions
                .saturating_sub(before.prefix_evictions),
        }
    }

    /// Mean sequences per decode step (0 when there was none).
    pub fn mean_decode_batch(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            self.rows as f64 / self.steps as f64
        }
    }
}

impl EngineStats {
    /// The cumulative counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let s = self;
        StatsSnapshot {
            steps: s.decode_steps.load(Ordering::Relaxed),
            rows: s.decode_rows.load(Ordering::Relaxed),
            nanos: s.decode_nanos.load(Ordering::Relaxed),
            ort_nanos: s.decode_ort_nanos.load(Ordering::Relaxed),
            sample_nanos: s.decode_sample_nanos.load(Ordering::Relaxed),
            prefill_tokens: s.prefill_tokens.load(Ordering::Relaxed),
            prefill_runs: s.prefill_runs.load(Ordering::Relaxed),
            prefill_nanos: s.prefill_nanos.load(Ordering::Relaxed),
            prefix_hits: s.prefix_hits.load(Ordering::Relaxed),
            prefix_misses: s.prefix_misses.load(Ordering::Relaxed),
            prefix_reused_tokens: s.prefix_reused_tokens.load(Ordering::Relaxed),
            prefix_evictions: s.prefix_evictions.load(Ordering::Relaxed),
        }
    }
}
