//! Prometheus metrics, all prefixed `tpo_`, through the `metrics` facade and
//! `metrics-exporter-prometheus`. Counters and histograms are recorded where things happen
//! (the handlers; the reward service records its batch sizes); gauges are read from the
//! engine and admission at scrape time.

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "tpo_requests_total";
pub const REJECTIONS: &str = "tpo_rejections_total";
pub const QUEUE_DEPTH: &str = "tpo_queue_depth";
pub const REQUESTS_RUNNING: &str = "tpo_requests_running";
pub const RUNNING_SEQUENCES: &str = "tpo_running_sequences";
pub const KV_SLOTS_USED: &str = "tpo_kv_slots_used";
/// Slots no request holds (cached entries included: they are evicted on demand).
pub const KV_SLOTS_FREE: &str = "tpo_kv_slots_free";
/// Free slots holding prefix-cache entries.
pub const KV_SLOTS_CACHED: &str = "tpo_kv_slots_cached";
pub const PREFIX_HITS: &str = "tpo_prefix_cache_hits_total";
pub const PREFIX_MISSES: &str = "tpo_prefix_cache_misses_total";
pub const PREFIX_REUSED_TOKENS: &str = "tpo_prefix_cache_reused_tokens_total";
pub const PREFIX_EVICTIONS: &str = "tpo_prefix_cache_evictions_total";
pub const PROMPT_TOKENS: &str = "tpo_prompt_tokens_total";
pub const GENERATED_TOKENS: &str = "tpo_generated_tokens_total";
pub const TTFT: &str = "tpo_time_to_first_token_seconds";
pub const INTER_TOKEN: &str = "tpo_inter_token_latency_seconds";
pub const REQUEST_DURATION: &str = "tpo_request_duration_seconds";
pub const SEARCHES: &str = "tpo_searches_total";
pub const SEARCH_STEPS: &str = "tpo_search_steps_total";
pub const SEARCH_DROPPED: &str = "tpo_search_candidates_dropped_total";
pub const SEARCH_ALL_DROPPED: &str = "tpo_searches_all_dropped_total";
pub const RM_BATCH_SIZE: &str = crate::reward::RM_BATCH_SIZE_METRIC;
pub const ENGINE_DECODE_STEPS: &str = "tpo_engine_decode_steps_total";
pub const ENGINE_PREFILL_TOKENS: &str = "tpo_engine_prefill_tokens_total";
/// Admission permits (sequences) held by admitted requests.
pub const PERMITS_USED: &str = "tpo_admission_permits_used";
pub const CONNECTIONS_OPEN: &str = "tpo_connections_open";
/// Connections answered 503 and closed at once (over `--max-connections`).
pub const CONNECTIONS_REFUSED: &str = "tpo_connections_refused_total";
/// Closed connections by why: done (the client closed or asked to), idle (keep-alive or
/// shutdown), write_stalled (the client accepted no bytes), error (timeouts of headers,
/// broken sockets, protocol errors).
pub const CONNECTIONS_CLOSED: &str = "tpo_connections_closed_total";
pub const CLOSE_REASONS: &[&str] = &["done", "idle", "write_stalled", "error"];

const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Endpoints, as the `endpoint` label spells them.
pub const ENDPOINTS: &[&str] = &["chat", "completions", "score"];
/// Strategies, as the `strategy` label spells them.
pub const STRATEGIES: &[&str] = &["tpo", "bon", "darwin", "greedy"];
/// Why search candidates are dropped, as the `reason` label spells them: the guard's codes
/// and the search's own (`search::trace` documents each).
pub const DROP_REASONS: &[&str] = &[
    "empty",
    "leaked_prompt",
    "echo",
    "repetition",
    "meta",
    "no_opening_tag",
    "unscored",
    "replaced",
];
/// Rejection reasons (see `ApiError::reason`).
pub const REASONS: &[&str] = &[
    "invalid",
    "unauthorized",
    "not_found",
    "body_too_large",
    "overloaded",
    "timeout",
    "draining",
    "internal",
    "worker_dead",
    "too_many_connections",
    "slow_client",
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once and registers every metric at zero, so a
/// scrape shows them all from the start. `None` when another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .ok()?
                .set_buckets_for_metric(Matcher::Full(RM_BATCH_SIZE.into()), BATCH_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            register_all();
            Some(handle)
        })
        .as_ref()
}

fn register_all() {
    for endpoint in ENDPOINTS {
        for status in ["200", "400", "429"] {
            counter!(REQUESTS, "endpoint" => *endpoint, "status" => status).absolute(0);
        }
        let _ = histogram!(REQUEST_DURATION, "endpoint" => *endpoint);
    }
    for reason in REASONS {
        counter!(REJECTIONS, "reason" => *reason).absolute(0);
    }
    for strategy in STRATEGIES {
        counter!(SEARCHES, "strategy" => *strategy).absolute(0);
    }
    counter!(SEARCH_STEPS).absolute(0);
    for reason in DROP_REASONS {
        counter!(SEARCH_DROPPED, "reason" => *reason).absolute(0);
    }
    counter!(SEARCH_ALL_DROPPED).absolute(0);
    for c in [
        PREFIX_HITS,
        PREFIX_MISSES,
        PREFIX_REUSED_TOKENS,
        PREFIX_EVICTIONS,
    ] {
        counter!(c).absolute(0);
    }
    for reason in CLOSE_REASONS {
        counter!(CONNECTIONS_CLOSED, "reason" => *reason).absolute(0);
    }
    counter!(CONNECTIONS_REFUSED).absolute(0);
    counter!(PROMPT_TOKENS).absolute(0);
    counter!(GENERATED_TOKENS).absolute(0);
    let _ = histogram!(TTFT);
    let _ = histogram!(INTER_TOKEN);
    let _ = histogram!(RM_BATCH_SIZE);
    for g in [
        QUEUE_DEPTH,
        REQUESTS_RUNNING,
        RUNNING_SEQUENCES,
        KV_SLOTS_USED,
        KV_SLOTS_FREE,
        KV_SLOTS_CACHED,
        PERMITS_USED,
        CONNECTIONS_OPEN,
    ] {
        gauge!(g).set(0.0);
    }
}

/// What a scrape reads from the live server.
pub struct Snapshot {
    pub queued_requests: usize,
    pub engine_waiting: u64,
    pub requests_running: usize,
    pub permits_used: usize,
    pub running_sequences: u64,
    pub kv_slots_used: u64,
    pub kv_slots_cached: u64,
    pub kv_slots: u64,
    pub decode_steps: u64,
    pub prefill_tokens: u64,
    pub prefix_hits: u64,
    pub prefix_misses: u64,
    pub prefix_reused_tokens: u64,
    pub prefix_evictions: u64,
}

/// The Prometheus text of every metric, with the gauges set from `snapshot`.
pub fn render(snapshot: &Snapshot) -> String {
    gauge!(QUEUE_DEPTH).set((snapshot.queued_requests as u64 + snapshot.engine_waiting) as f64);
    gauge!(REQUESTS_RUNNING).set(snapshot.requests_running as f64);
    gauge!(PERMITS_USED).set(snapshot.permits_used as f64);
    gauge!(RUNNING_SEQUENCES).set(snapshot.running_sequences as f64);
    gauge!(KV_SLOTS_USED).set(snapshot.kv_slots_used as f64);
    gauge!(KV_SLOTS_FREE).set(snapshot.kv_slots.saturating_sub(snapshot.kv_slots_used) as f64);
    counter!(ENGINE_DECODE_STEPS).absolute(snapshot.decode_steps);
    counter!(ENGINE_PREFILL_TOKENS).absolute(snapshot.prefill_tokens);
    gauge!(KV_SLOTS_CACHED).set(snapshot.kv_slots_cached as f64);
    counter!(PREFIX_HITS).absolute(snapshot.prefix_hits);
    counter!(PREFIX_MISSES).absolute(snapshot.prefix_misses);
    counter!(PREFIX_REUSED_TOKENS).absolute(snapshot.prefix_reused_tokens);
    counter!(PREFIX_EVICTIONS).absolute(snapshot.prefix_evictions);
    match install() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}

/// One finished request of `endpoint` with `status`.
pub fn request_done(endpoint: &'static str, status: u16, seconds: f64) {
    counter!(REQUESTS, "endpoint" => endpoint, "status" => status.to_string()).increment(1);
    histogram!(REQUEST_DURATION, "endpoint" => endpoint).record(seconds);
}

pub fn connection_opened() {
    gauge!(CONNECTIONS_OPEN).increment(1.0);
}

/// A connection ended, for `reason` (one of [`CLOSE_REASONS`]).
pub fn connection_closed(reason: &'static str) {
    gauge!(CONNECTIONS_OPEN).decrement(1.0);
    counter!(CONNECTIONS_CLOSED, "reason" => reason).increment(1);
}

pub fn connection_refused() {
    counter!(CONNECTIONS_REFUSED).increment(1);
}

/// One refused request.
pub fn rejected(reason: &'static str) {
    counter!(REJECTIONS, "reason" => reason).increment(1);
}

pub fn tokens(prompt: usize, generated: usize) {
    counter!(PROMPT_TOKENS).increment(prompt as u64);
    counter!(GENERATED_TOKENS).increment(generated as u64);
}

pub fn time_to_first_token(seconds: f64) {
    histogram!(TTFT).record(seconds);
}

pub fn inter_token(seconds: f64) {
    histogram!(INTER_TOKEN).record(seconds);
}

pub fn search_done(strategy: &'static str, steps: usize) {
    counter!(SEARCHES, "strategy" => strategy).increment(1);
    counter!(SEARCH_STEPS).increment(steps as u64);
}

/// A finished search's dropped candidates by reason, and whether every one was dropped.
pub fn search_dropped<'a>(by_reason: impl Iterator<Item = (&'a str, usize)>, all: bool) {
    for (reason, count) in by_reason {
        counter!(SEARCH_DROPPED, "reason" => reason.to_string()).increment(count as u64);
    }
    if all {
        counter!(SEARCH_ALL_DROPPED).increment(1);
    }
}
