//! `tpo bench search`: throughput of N searches run at once versus the same N searches run
//! one after another, on the same engine and the same reward service, in one run.
//!
//! The N queries are the first N rows of a JSONL file with "prompt" (and "reference", which
//! similarity rewards need). Every search has the same settings and the same seed. Order:
//! after an untimed warm-up (8 tokens through the engine, one input through the reward
//! model), the **concurrent** phase runs first (all N searches polled together on one
//! current-thread tokio runtime with `join_all`, so their policy calls share the engine's
//! continuous batch and their reward requests share the scorer's batches), then the
//! **sequential** phase (each search awaited before the next starts; the prefix cache is
//! emptied first, so it cannot reuse the other phase's rows). Running concurrent
//! first puts any leftover warm-up cost on the concurrent side, so the ratio is, if
//! anything, understated. `--sequential-searches K` runs only the first K one at a time
//! (ratios are of searches/s). `--reference` adds a third phase, **the reference way** of
//! running a search as a plain implementation would: one at a time, on a second engine
//! without the prefix cache, the reward model one input per batch (`rm_batch_tokens` 1).
//!
//! The search flags and their defaults are `tpo search`'s (512 tokens per call, the judge
//! reward model); the measured run names its settings in full:
//! `tpo bench search --searches 32 --strategy tpo --width 5 --depth 2 --max-new-tokens 64
//! --reward-model similarity`.
//!
//! A seeded search returns the same trace alone or among others, so each query's
//! `final_answer` and `final_reward` must agree between the phases. The answer must match
//! exactly; the reward to 1e-4 (the reward model pads each batch differently, which moves a
//! score by float rounding only; the largest difference is reported). Any mismatch is a bug:
//! it is printed loudly and the command exits 1 after writing its report.
//!
//! Where the time goes, per phase, from the deltas of the engine's and the reward service's
//! counters: decode time (and the ONNX Runtime and sampling parts of it), the mean rows per
//! decode step, prefill time and tokens, the engine's idle rest (wall − decode − prefill:
//! waiting for the searches, which are scoring or parsing), and the reward model's busy
//! time, calls and mean inputs per call. The reward model runs on its own thread, so its
//! busy time overlaps the engine's.
//!
//! Not here: the flags and opening the models (the CLI's, through an [`Opener`]).

use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use super::BenchError;
use crate::dataset::prompts::{numbered_lines, parse_row, Field, RowError};
use crate::engine::{
    Engine, EngineError, GenerateRequest, SamplingOptions, SamplingParams, StatsSnapshot,
};
use crate::reward::{OwnedRewardInput, RewardService, RewardSnapshot};
use crate::search::{self, SearchError, SearchParams, StepEvent, Strategy, Trace};

/// Largest |reward difference| between the phases that is float rounding, not a mismatch.
const REWARD_TOLERANCE: f64 = 1e-4;

/// What `tpo bench search` runs (its flags, parsed and checked).
#[derive(Debug, Clone)]
pub struct SearchBenchOptions {
    /// Searches per phase (the first N rows of `input`).
    pub searches: usize,
    /// The settings of every search.
    pub params: SearchParams,
    /// The reward model as the user named it (for the report).
    pub reward_model: String,
    /// The engine's threads (for the report).
    pub threads: usize,
    /// JSONL queries: one object per line with "prompt" (and "reference").
    pub input: PathBuf,
    /// Searches of the sequential phases: the first K of the N [default: N].
    pub sequential_searches: Option<usize>,
    /// Add the reference phase (see the module's documentation).
    pub reference: bool,
}

/// Which models [`run`] asks its opener for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Models {
    /// The engine and reward service of the concurrent and sequential phases.
    Ours,
    /// The reference phase's: no prefix cache, the reward model one input per batch.
    Reference,
}

/// Opens the policy engine and the reward service (the caller's, who knows the flags).
pub type Opener<'a> = &'a dyn Fn(Models) -> Result<(Engine, RewardService), crate::Error>;

/// One query of the input.
#[derive(Debug, Clone, PartialEq)]
struct Query {
    prompt: String,
    reference: Option<String>,
}

/// The first `count` queries of a JSONL text (read with [`crate::dataset::prompts`]);
/// `Err` says what is wrong (a bad line, or fewer rows than asked for).
fn parse_queries(text: &str, count: usize) -> Result<Vec<Query>, String> {
    let mut queries = Vec::with_capacity(count);
    for (line_no, line) in numbered_lines(text) {
        if queries.len() == count {
            break;
        }
        let no_prompt = || format!("line {line_no} has no non-empty string \"prompt\"");
        let row = match parse_row(line_no, line) {
            Ok(row) => row,
            Err(RowError::NotJson(e)) => {
                return Err(format!("line {line_no} is not valid JSON: {e}"))
            }
            Err(RowError::NotObject) => return Err(no_prompt()),
        };
        let prompt = row.prompt.non_blank().ok_or_else(no_prompt)?.to_string();
        let reference = match row.reference {
            Field::Absent | Field::Null => None,
            Field::Text(s) => Some(s),
            _ => return Err(format!("line {line_no}: \"reference\" must be a string")),
        };
        queries.push(Query { prompt, reference });
    }
    if queries.len() < count {
        return Err(format!(
            "has {} rows; --searches {count} needs at least {count}",
            queries.len()
        ));
    }
    Ok(queries)
}

/// What one phase did and where its time went.
struct Phase {
    name: &'static str,
    wall: f64,
    traces: Vec<Trace>,
    engine: StatsSnapshot,
    rm: RewardSnapshot,
}

impl Phase {
    fn searches_per_second(&self) -> f64 {
        self.traces.len() as f64 / self.wall.max(1e-9)
    }

    fn tokens(&self) -> usize {
        self.traces.iter().map(|t| t.totals.tokens_generated).sum()
    }

    fn requests(&self) -> usize {
        self.traces.iter().map(|t| t.totals.requests).sum()
    }

    fn rm_inputs(&self) -> usize {
        self.traces.iter().map(|t| t.totals.rm_inputs).sum()
    }

    fn decode_seconds(&self) -> f64 {
        self.engine.nanos as f64 / 1e9
    }

    fn prefill_seconds(&self) -> f64 {
        self.engine.prefill_nanos as f64 / 1e9
    }

    /// Seconds the reward model spent scoring (on its own thread, so it can overlap the
    /// engine's work).
    fn rm_seconds(&self) -> f64 {
        self.rm.busy_nanos as f64 / 1e9
    }

    /// Wall time the scheduler was neither decoding nor prefilling: waiting for work (the
    /// searches are scoring, parsing or idle), channel and scheduling overhead.
    fn other_seconds(&self) -> f64 {
        (self.wall - self.decode_seconds() - self.prefill_seconds()).max(0.0)
    }

    fn share(&self, seconds: f64) -> f64 {
        if self.wall > 0.0 {
            seconds / self.wall
        } else {
            0.0
        }
    }

    fn mean_rm_inputs_per_call(&self) -> f64 {
        if self.rm.calls == 0 {
            0.0
        } else {
            self.rm.inputs as f64 / self.rm.calls as f64
        }
    }

    fn to_json(&self) -> Value {
        let searches = self.traces.len();
        let ort = self.engine.ort_nanos as f64 / 1e9;
        let sample = self.engine.sample_nanos as f64 / 1e9;
        json!({
            "wall_seconds": self.wall,
            "searches_per_second": searches as f64 / self.wall,
            "tokens_generated": self.tokens(),
            "tokens_per_second": self.tokens() as f64 / self.wall,
            "policy_requests": self.requests(),
            "rm_inputs": self.rm_inputs(),
            "engine": {
                "decode_steps": self.engine.steps,
                "decode_rows": self.engine.rows,
                "mean_decode_batch": self.engine.mean_decode_batch(),
                "prefill_tokens": self.engine.prefill_tokens,
                "prefill_tokens_per_search": self.engine.prefill_tokens as f64 / self.traces.len().max(1) as f64,
                "prefix_cache_hits": self.engine.prefix_hits,
                "prefix_cache_misses": self.engine.prefix_misses,
                "prefix_cache_reused_tokens": self.engine.prefix_reused_tokens,
                "prefix_cache_evictions": self.engine.prefix_evictions,
                "decode_seconds": self.decode_seconds(),
                "decode_ort_seconds": ort,
                "decode_sample_seconds": sample,
                "decode_share_of_wall": self.share(self.decode_seconds()),
                "decode_ort_share_of_wall": self.share(ort),
                "decode_sample_share_of_wall": self.share(sample),
                "prefill_seconds": self.prefill_seconds(),
                "prefill_share_of_wall": self.share(self.prefill_seconds()),
                "engine_idle_seconds": self.other_seconds(),
                "engine_idle_share_of_wall": self.share(self.other_seconds()),
                "engine_idle_is": "wall - decode - prefill: the engine waits (searches score, \
                                   parse or are idle) or schedules",
            },
            "reward_model": {
                "calls": self.rm.calls,
                "requests": self.rm.requests,
                "inputs": self.rm.inputs,
                "mean_inputs_per_call": self.mean_rm_inputs_per_call(),
                "busy_seconds": self.rm_seconds(),
                "busy_share_of_wall": self.share(self.rm_seconds()),
            },
        })
    }
}

/// Whether two phases returned the same answers; one entry per query that differs.
#[derive(Debug, Default, PartialEq)]
struct Comparison {
    mismatched: Vec<usize>,
    rewards_not_bit_identical: usize,
    max_abs_reward_diff: f64,
}

/// Each search's `(final_answer, final_reward)`.
fn outcomes(traces: &[Trace]) -> Vec<(&str, f32)> {
    traces
        .iter()
        .map(|t| (t.final_answer.as_str(), t.final_reward))
        .collect()
}

fn compare(a: &[(&str, f32)], b: &[(&str, f32)]) -> Comparison {
    let mut out = Comparison::default();
    for (i, (&(answer_a, reward_a), &(answer_b, reward_b))) in a.iter().zip(b).enumerate() {
        let diff = (f64::from(reward_a) - f64::from(reward_b)).abs();
        if reward_a.to_bits() != reward_b.to_bits() {
            out.rewards_not_bit_identical += 1;
            out.max_abs_reward_diff = out.max_abs_reward_diff.max(diff);
        }
        // A NaN on one side only is a mismatch (NaN compares unequal to everything).
        let same_reward = reward_a.to_bits() == reward_b.to_bits() || diff <= REWARD_TOLERANCE;
        if answer_a != answer_b || !same_reward {
            out.mismatched.push(i);
        }
    }
    out
}

/// What a run measured and compared: the caller prints [`Self::table`], writes
/// [`Self::json`], prints [`Self::mismatches`] and fails when [`Self::failed`].
pub struct SearchBenchReport {
    phases: Vec<Phase>,
    /// For each phase after the concurrent one, its comparison with the concurrent one.
    comparisons: Vec<Comparison>,
    queries: Vec<Query>,
    sequential_searches: usize,
    /// The settings and every phase, as `--json` writes them.
    pub json: Value,
}

/// Runs the phases on the models `open` gives (the reference phase's after the first
/// ones are dropped).
pub fn run(args: &SearchBenchOptions, open: Opener<'_>) -> Result<SearchBenchReport, BenchError> {
    let params = &args.params;
    let options = params.options();
    let count = args.searches;
    let text = std::fs::read_to_string(&args.input).map_err(|source| BenchError::Io {
        what: "reading --input",
        path: args.input.clone(),
        source,
    })?;
    let queries = parse_queries(&text, count).map_err(|reason| BenchError::File {
        path: args.input.clone(),
        reason,
    })?;

    let (engine, rewards) = open(Models::Ours)?;
    // what the arena came to (set by --kv-slots, or by --kv-memory and --max-seq-len)
    let (kv_slots, max_seq_len) = (engine.kv_slots(), engine.max_seq_len());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(BenchError::Runtime)?;

    // Warm-up, untimed: the first runs pay for page faults in the arena and ORT's
    // allocations on both models.
    let warm = SamplingParams::new(SamplingOptions {
        max_new_tokens: 8,
        ..SamplingOptions::default()
    })
    .map_err(EngineError::from)?;
    engine.generate_blocking(GenerateRequest::new(
        engine.chat().question_prompt(&queries[0].prompt)?,
        warm.clone(),
    ))?;
    let warm_scores = runtime
        .block_on(rewards.score(vec![OwnedRewardInput {
            prompt: queries[0].prompt.clone(),
            response: "Warm-up.".into(),
            reference: queries[0].reference.clone(),
        }]))
        .map_err(SearchError::from)?;
    if let Some(Err(e)) = warm_scores.first() {
        eprintln!("note: the warm-up input was not scored ({e}); going on");
    }

    eprintln!(
        "search bench: {count} {} searches (width {}, depth {}, {} tokens per call, seed {}), \
         reward model {}, {} KV slots of {} tokens; concurrent phase first, then sequential",
        options.strategy,
        options.width,
        options.depth,
        options.max_new_tokens,
        options.seed,
        args.reward_model,
        kv_slots,
        max_seq_len
    );
    let concurrent = runtime.block_on(concurrent_phase(&engine, &rewards, &queries, params))?;
    eprintln!("  concurrent: {count} searches in {:.1} s", concurrent.wall);
    let k = args.sequential_searches.map_or(count, |k| k.min(count));
    let first_k = &queries[..k];
    // The sequential phase repeats the same seeded searches: it must not reuse the
    // concurrent phase's cached rows.
    engine.clear_prefix_cache()?;
    let sequential = runtime.block_on(sequential_phase(
        "sequential",
        &engine,
        &rewards,
        first_k,
        params,
    ))?;
    eprintln!("  sequential: {k} searches in {:.1} s", sequential.wall);
    let mut phases = vec![concurrent, sequential];
    if args.reference {
        drop((engine, rewards));
        let (engine, rewards) = open(Models::Reference)?;
        engine.generate_blocking(GenerateRequest::new(
            engine.chat().question_prompt(&queries[0].prompt)?,
            warm.clone(),
        ))?;
        let reference = runtime.block_on(sequential_phase(
            "reference",
            &engine,
            &rewards,
            first_k,
            params,
        ))?;
        eprintln!("  reference: {k} searches in {:.1} s", reference.wall);
        phases.push(reference);
    }
    let concurrent = &phases[0];
    let comparisons: Vec<Comparison> = phases[1..]
        .iter()
        .map(|p| compare(&outcomes(&concurrent.traces), &outcomes(&p.traces)))
        .collect();

    let mut result = json!({
        "searches": count,
        "sequential_searches": k,
        "order": if args.reference { "concurrent, sequential, reference" } else { "concurrent then sequential" },
        "reference_is": "one search at a time, a second engine without the prefix cache, the reward model at batch size 1",
        "strategy": options.strategy.as_str(),
        "width": options.width,
        "depth": options.depth,
        "max_new_tokens": options.max_new_tokens,
        "seed": options.seed,
        "reward_model": args.reward_model,
        "kv_slots": kv_slots,
        "max_seq_len": max_seq_len,
        "threads": args.threads,
        "input": args.input.display().to_string(),
        "reward_tolerance": REWARD_TOLERANCE,
        "tpo_version": env!("CARGO_PKG_VERSION"),
        "commit": env!("TPO_GIT_COMMIT"),
    });
    for p in &phases {
        result[p.name] = p.to_json();
    }
    for (p, c) in phases[1..].iter().zip(&comparisons) {
        result[format!("concurrent_over_{}_searches_per_s", p.name)] =
            (concurrent.searches_per_second() / p.searches_per_second()).into();
        result[format!("{}_mismatches", p.name)] = c.mismatched.len().into();
        result[format!("{}_mismatched_searches", p.name)] = json!(c.mismatched);
        result[format!("{}_rewards_not_bit_identical", p.name)] =
            c.rewards_not_bit_identical.into();
        result[format!("{}_max_abs_reward_diff", p.name)] = c.max_abs_reward_diff.into();
    }
    if options.strategy == Strategy::Darwin {
        result["mutations"] = options.darwin.mutations.into();
        result["replace_every"] = options.darwin.replace_every.into();
        result["keep"] = options.darwin.keep.into();
        result["iterations"] = options.darwin.iterations.into();
    }
    Ok(SearchBenchReport {
        phases,
        comparisons,
        queries,
        sequential_searches: k,
        json: result,
    })
}

impl SearchBenchReport {
    /// Whether a phase returned a different answer or reward than the concurrent one.
    pub fn failed(&self) -> bool {
        self.comparisons.iter().any(|c| !c.mismatched.is_empty())
    }

    /// Writes [`Self::json`] (pretty, with a final newline) to `path`.
    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        super::write_json(path, &self.json)
    }

    /// The loud report of each mismatch (empty when there is none), for stderr.
    pub fn mismatches(&self) -> String {
        let mut out = String::new();
        let k = self.sequential_searches;
        let concurrent = &self.phases[0];
        for (p, comparison) in self.phases[1..].iter().zip(&self.comparisons) {
            if comparison.mismatched.is_empty() {
                continue;
            }
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "!!! MISMATCH: {} of {k} searches returned a different answer or reward \
                 concurrently than in the {} phase (same seed); this is a bug !!!",
                comparison.mismatched.len(),
                p.name
            );
            for &i in &comparison.mismatched {
                let (a, b) = (&concurrent.traces[i], &p.traces[i]);
                let _ = writeln!(
                    out,
                    "  search {i} ({:?}): concurrent reward {} (candidate {}), {} reward {} \
                     (candidate {}){}",
                    self.queries[i].prompt,
                    a.final_reward,
                    a.final_id,
                    p.name,
                    b.final_reward,
                    b.final_id,
                    if a.final_answer == b.final_answer {
                        ", same answer"
                    } else {
                        ", different answers"
                    }
                );
            }
        }
        out
    }

    /// The table and the ratio, token and comparison lines, for stdout.
    pub fn table(&self) -> String {
        let comparisons: Vec<(&Phase, &Comparison)> =
            self.phases[1..].iter().zip(&self.comparisons).collect();
        print_report(&self.phases, &comparisons)
    }
}

async fn one_search(
    engine: &Engine,
    rewards: &RewardService,
    query: &Query,
    params: &SearchParams,
) -> Result<Trace, SearchError> {
    let mut quiet = |_: &StepEvent| {};
    search::run(
        engine,
        rewards,
        &query.prompt,
        query.reference.as_deref(),
        params,
        &mut quiet,
    )
    .await
}

fn search_error(
    phase: &'static str,
    index: usize,
    query: &Query,
) -> impl FnOnce(SearchError) -> BenchError {
    let query = query.prompt.clone();
    move |source| BenchError::Search {
        phase,
        index,
        query,
        source,
    }
}

/// Awaits one phase's searches, timing them and taking the deltas of the engine's and the
/// reward service's counters over them.
async fn measure(
    name: &'static str,
    engine: &Engine,
    rewards: &RewardService,
    searches: impl Future<Output = Result<Vec<Trace>, BenchError>>,
) -> Result<Phase, BenchError> {
    let (engine_before, rm_before) = (engine.stats().snapshot(), rewards.stats().snapshot());
    let started = Instant::now();
    let traces = searches.await?;
    let wall = started.elapsed().as_secs_f64();
    Ok(Phase {
        name,
        wall,
        traces,
        engine: engine.stats().snapshot().since(&engine_before),
        rm: rewards.stats().snapshot().since(&rm_before),
    })
}

async fn concurrent_phase(
    engine: &Engine,
    rewards: &RewardService,
    queries: &[Query],
    params: &SearchParams,
) -> Result<Phase, BenchError> {
    measure("concurrent", engine, rewards, async {
        let results = futures::future::join_all(
            queries
                .iter()
                .map(|q| one_search(engine, rewards, q, params)),
        )
        .await;
        results
            .into_iter()
            .zip(queries)
            .enumerate()
            .map(|(i, (r, q))| r.map_err(search_error("concurrent", i, q)))
            .collect()
    })
    .await
}

async fn sequential_phase(
    name: &'static str,
    engine: &Engine,
    rewards: &RewardService,
    queries: &[Query],
    params: &SearchParams,
) -> Result<Phase, BenchError> {
    measure(name, engine, rewards, async {
        let mut traces = Vec::with_capacity(queries.len());
        for (i, q) in queries.iter().enumerate() {
            let trace = one_search(engine, rewards, q, params)
                .await
                .map_err(search_error(name, i, q))?;
            traces.push(trace);
        }
        Ok(traces)
    })
    .await
}

fn print_report(phases: &[Phase], comparisons: &[(&Phase, &Comparison)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| phase | wall s | searches/s | tokens/s | mean decode batch | decode % of wall | \
         of which ORT | of which sampling | prefill % of wall | engine idle % | \
         prefill tokens | RM busy % of wall | RM calls | RM inputs/call |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for p in phases {
        let _ = writeln!(
        out,
            "| {} | {:.2} | {:.3} | {:.1} | {:.1} | {:.1}% | {:.1}% | {:.1}% | {:.1}% | {:.1}% | {} | {:.1}% | {} | {:.1} |",
            p.name,
            p.wall,
            p.searches_per_second(),
            p.tokens() as f64 / p.wall,
            p.engine.mean_decode_batch(),
            100.0 * p.share(p.decode_seconds()),
            100.0 * p.share(p.engine.ort_nanos as f64 / 1e9),
            100.0 * p.share(p.engine.sample_nanos as f64 / 1e9),
            100.0 * p.share(p.prefill_seconds()),
            100.0 * p.share(p.other_seconds()),
            p.engine.prefill_tokens,
            100.0 * p.share(p.rm_seconds()),
            p.rm.calls,
            p.mean_rm_inputs_per_call(),
        );
    }
    let Some(concurrent) = phases.first() else {
        return out;
    };
    for (p, _) in comparisons {
        let _ = writeln!(
            out,
            "ratio (concurrent searches/s ÷ {} searches/s): {:.2}x ({:.3} vs {:.3})",
            p.name,
            concurrent.searches_per_second() / p.searches_per_second(),
            concurrent.searches_per_second(),
            p.searches_per_second()
        );
    }
    for p in phases {
        let per_search = p.traces.len().max(1) as f64;
        let _ = writeln!(
            out,
            "{}: {} tokens generated, {} policy requests, {} RM inputs; prefill {:.0} tokens per \
             search, prefix cache {} hits, {} misses, {:.0} tokens reused per search, {} evictions",
            p.name,
            p.tokens(),
            p.requests(),
            p.rm_inputs(),
            p.engine.prefill_tokens as f64 / per_search,
            p.engine.prefix_hits,
            p.engine.prefix_misses,
            p.engine.prefix_reused_tokens as f64 / per_search,
            p.engine.prefix_evictions,
        );
    }
    for (p, comparison) in comparisons {
        let _ = writeln!(
            out,
            "same answers and rewards, concurrent vs {}: {} mismatches of {} (rewards not \
             bit-identical: {}, max |diff| {:.2e})",
            p.name,
            comparison.mismatched.len(),
            p.traces.len(),
            comparison.rewards_not_bit_identical,
            comparison.max_abs_reward_diff
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_the_first_n_rows_and_too_few_rows_is_an_error() {
        let text = "{\"prompt\": \"a\", \"reference\": \"ra\"}\n\n{\"prompt\": \"b\"}\n{\"prompt\": \"c\"}\n";
        let q = parse_queries(text, 2).unwrap();
        assert_eq!(
            q,
            vec![
                Query {
                    prompt: "a".into(),
                    reference: Some("ra".into())
                },
                Query {
                    prompt: "b".into(),
                    reference: None
                },
            ]
        );
        let err = parse_queries(text, 4).unwrap_err();
        assert!(err.contains("has 3 rows"), "{err}");
        let err = parse_queries("{\"prompt\": 3}\n", 1).unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        let err = parse_queries("not json\n", 1).unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn compare_flags_different_answers_and_rewards_beyond_rounding() {
        let a = [
            ("x", 1.0),
            ("y", 2.0),
            ("z", 3.0),
            ("w", 0.5),
            ("v", f32::NAN),
        ];
        let b = [
            ("x", 1.0),
            ("y", 2.00001),
            ("Z", 3.0),
            ("w", 0.7),
            ("v", 1.0),
        ];
        let c = compare(&a, &b);
        assert_eq!(c.mismatched, vec![2, 3, 4]);
        assert_eq!(c.rewards_not_bit_identical, 3);
        assert!((c.max_abs_reward_diff - 0.2).abs() < 1e-6, "{c:?}");
        assert_eq!(compare(&a, &a), Comparison::default());
    }
}
