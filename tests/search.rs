//! Searches on the real models (the embedded SmolLM2 policy and the SmolLM2 judge): TPO's
//! cache only improves and its trace accounts for every candidate; a seeded search gives the
//! same trace alone and among concurrent searches; Best-of-N is the argmax of N samples that
//! equal N separately seeded requests; `tpo search` prints an answer and writes a trace.
//! Budgets are small (tens of tokens, width 2–3, depth 1–2) so the file runs in minutes on
//! two CPU cores.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use tpo_engine::engine::{Engine, EngineOptions, GenerateRequest};
use tpo_engine::model::ModelDir;
use tpo_engine::reward::{self, OwnedRewardInput, RewardOptions, RewardService};
use tpo_engine::search::{
    self, DarwinOptions, SearchOptions, SearchParams, StepEvent, Strategy, Trace,
};

const QUESTION: &str = "How do I wrap a present neatly?";

fn start_engine(kv_slots: usize) -> Engine {
    let model = ModelDir::open(&common::policy_dir()).unwrap();
    Engine::start(
        &model,
        EngineOptions {
            kv_slots,
            max_seq_len: 1024,
            ..EngineOptions::default()
        },
    )
    .unwrap()
}

fn start_judge() -> RewardService {
    let judge = reward::load(&common::reward_source("judge"), RewardOptions::default())
        .expect("the embedded judge (run `make setup`)");
    RewardService::start(judge).unwrap()
}

fn params(strategy: Strategy, width: usize, depth: usize, max_new_tokens: usize) -> SearchParams {
    SearchParams::new(SearchOptions {
        strategy,
        width,
        depth,
        max_new_tokens,
        ..SearchOptions::default()
    })
    .unwrap()
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(future)
}

/// The trace without its wall-clock fields, which are the only ones allowed to differ
/// between two runs of the same seeded search.
fn timeless(mut trace: Trace) -> Trace {
    trace.totals.seconds = 0.0;
    for step in &mut trace.steps {
        step.seconds = 0.0;
    }
    if let Some(darwin) = &mut trace.darwin {
        for iteration in &mut darwin.iterations {
            iteration.seconds = 0.0;
        }
    }
    trace
}

/// `search::events_of(trace)` gives the same reports the live search made (compared as
/// JSON, where a `NaN` best reward is `null` on both sides).
fn assert_replays(live: &[StepEvent], trace: &Trace) {
    let json = |e: &[StepEvent]| serde_json::to_value(e).unwrap();
    assert_eq!(json(&search::events_of(trace)), json(live));
}

#[test]
fn tpo_best_score_never_decreases_and_the_trace_accounts_for_every_candidate() {
    let engine = start_engine(8);
    let rewards = start_judge();
    let (width, depth) = (2, 2);
    let p = params(Strategy::Tpo, width, depth, 48);
    let mut events = Vec::new();
    let mut record = |e: &StepEvent| events.push(e.clone());
    let trace = block_on(search::run(
        &engine,
        &rewards,
        QUESTION,
        None,
        &p,
        &mut record,
    ))
    .unwrap();

    // N initial samples, then N updates per step; ids are 0, 1, 2, … in order.
    assert_eq!(trace.candidates.len(), width * (depth + 1));
    for (i, c) in trace.candidates.iter().enumerate() {
        assert_eq!(c.id, i);
        assert_eq!(c.step, i / width);
        // Each candidate is either scored or dropped with a reason, never neither; both only
        // for a guard drop scored while the search had nothing kept.
        assert!(c.score.is_some() || c.dropped.is_some(), "candidate {c:?}");
        if c.score.is_some() && c.dropped.is_some() {
            assert!(c.is_guard_dropped(), "candidate {c:?}");
        }
        if c.dropped.is_some() {
            assert!(c.drop_detail.is_some(), "candidate {c:?}");
        }
        if c.step > 0 {
            assert_eq!(c.origin, search::Origin::Update);
            assert!(c.raw.is_some());
        }
    }
    let ids: HashSet<usize> = trace.candidates.iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), trace.candidates.len());
    let dropped: usize = trace.dropped.values().sum();
    assert_eq!(
        dropped,
        trace
            .candidates
            .iter()
            .filter(|c| c.dropped.is_some())
            .count()
    );

    // Steps: chosen/rejected are the best/worst of everything scored before the step, and
    // the best score so far never goes down.
    assert_eq!(trace.steps.len(), depth);
    let initial_best = trace.candidates[..width]
        .iter()
        .filter_map(|c| c.score)
        .fold(f32::NEG_INFINITY, f32::max);
    let mut best_so_far = initial_best;
    for step in &trace.steps {
        let before: Vec<_> = trace
            .candidates
            .iter()
            .filter(|c| c.step < step.step && c.score.is_some())
            .collect();
        let max = before
            .iter()
            .filter_map(|c| c.score)
            .fold(f32::NEG_INFINITY, f32::max);
        let min = before
            .iter()
            .filter_map(|c| c.score)
            .fold(f32::INFINITY, f32::min);
        assert_eq!(step.chosen_score, max);
        assert_eq!(step.rejected_score, min);
        assert_eq!(trace.candidates[step.chosen_id].score, Some(max));
        assert_eq!(trace.candidates[step.rejected_id].score, Some(min));
        assert!(!step.critique.is_empty() && !step.suggestions.is_empty());
        assert_eq!(step.candidate_ids.len(), width);
        assert_eq!(step.kept + step.dropped, width);
        assert!(
            step.best_score_so_far >= best_so_far,
            "{} < {best_so_far}",
            step.best_score_so_far
        );
        best_so_far = step.best_score_so_far;
    }
    let all_max = trace
        .candidates
        .iter()
        .filter_map(|c| c.score)
        .fold(f32::NEG_INFINITY, f32::max);
    assert_eq!(trace.final_reward, all_max);
    assert_eq!(trace.final_reward, best_so_far);
    assert_eq!(trace.final_answer, trace.candidates[trace.final_id].text);

    // Progress came as it happened: step 0, then each step, with the same best rewards.
    let reported: Vec<(usize, f32)> = events.iter().map(|e| (e.step, e.best_reward)).collect();
    let mut expected = vec![(0, initial_best)];
    expected.extend(trace.steps.iter().map(|s| (s.step, s.best_score_so_far)));
    assert_eq!(reported, expected);
    // Each report carries the step's candidates and record, and a saved trace replays
    // exactly these reports (the viewer's two modes show the same thing).
    for e in &events {
        let ids: Vec<usize> = e.candidates.iter().map(|c| c.id).collect();
        let want: Vec<usize> = (e.step * width..(e.step + 1) * width).collect();
        assert_eq!(ids, want, "step {}", e.step);
        assert_eq!(e.kept + e.dropped, width);
        assert_eq!(
            e.tpo_step.as_ref().map(|s| s.step),
            (e.step > 0).then_some(e.step)
        );
    }
    assert_replays(&events, &trace);

    // Cost: 1 + 3·D requests, N + D·(N + 2) completions.
    assert_eq!(trace.totals.requests, 1 + 3 * depth);
    assert_eq!(trace.totals.completions, width + depth * (width + 2));
    let json = serde_json::to_string(&trace).unwrap();
    let back: Trace = serde_json::from_str(&json).unwrap();
    assert_eq!(back, trace);
    assert_replays(&events, &back);
}

#[test]
fn a_tpo_step_is_one_conversation_whose_prompts_extend_each_other() {
    use search::prompts::{self, Reply, StepConversation};
    use tpo_engine::model::ChatMessage;
    let engine = start_engine(2);
    let (chosen, rejected) = ("Fold the paper over the box and tape it.", "Use a bag.");
    let mut chat = StepConversation::critique(&engine, QUESTION, chosen, rejected).unwrap();
    let critique_prompt = chat.prompt().to_vec();
    let critique = "Answer A explains how to wrap; Answer B avoids the question.";
    let critique_tokens = engine.tokenizer().encode(critique).unwrap();
    chat.suggestions(
        &engine,
        &Reply {
            tokens: &critique_tokens,
            text: critique,
        },
    )
    .unwrap();
    let suggestion_prompt = chat.prompt().to_vec();
    let suggestions = "1. Measure the paper. 2. Crease the edges. 3. Add a ribbon.";
    let suggestion_tokens = engine.tokenizer().encode(suggestions).unwrap();
    chat.update(
        &engine,
        &Reply {
            tokens: &suggestion_tokens,
            text: suggestions,
        },
    )
    .unwrap();
    let update_prompt = chat.prompt().to_vec();

    // Each prompt is the previous prompt plus the reply's tokens as they were given.
    assert!(suggestion_prompt.starts_with(&[critique_prompt.clone(), critique_tokens].concat()));
    assert!(update_prompt.starts_with(&[suggestion_prompt.clone(), suggestion_tokens].concat()));
    // Assembled in pieces, the prompts equal the whole conversation rendered at once.
    let mut messages = vec![ChatMessage::user(prompts::fill(
        prompts::LOSS_TEMPLATE,
        &[
            ("query", QUESTION),
            ("chosen", chosen),
            ("rejected", rejected),
        ],
    ))];
    assert_eq!(
        critique_prompt,
        engine.chat().chat_prompt(&messages).unwrap()
    );
    messages.push(ChatMessage::assistant(critique));
    messages.push(ChatMessage::user(prompts::GRADIENT_TURN));
    assert_eq!(
        suggestion_prompt,
        engine.chat().chat_prompt(&messages).unwrap()
    );
    messages.push(ChatMessage::assistant(suggestions));
    messages.push(ChatMessage::user(prompts::UPDATE_TURN));
    let mut whole = engine.chat().chat_prompt(&messages).unwrap();
    whole.extend(
        engine
            .tokenizer()
            .encode(prompts::UPDATE_RESPONSE_PREFIX)
            .unwrap(),
    );
    assert_eq!(update_prompt, whole);
}

#[test]
fn the_prefix_cache_leaves_a_tpo_trace_unchanged_and_saves_prefill() {
    let model = ModelDir::open(&common::policy_dir()).unwrap();
    let uncached = Engine::start(
        &model,
        EngineOptions {
            kv_slots: 8,
            max_seq_len: 1024,
            prefix_cache: false,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let cached = start_engine(8);
    let rewards = start_judge();
    let p = params(Strategy::Tpo, 2, 2, 32);
    let run = |engine: &Engine| {
        let mut quiet = |_: &StepEvent| {};
        timeless(
            block_on(search::run(
                engine, &rewards, QUESTION, None, &p, &mut quiet,
            ))
            .unwrap(),
        )
    };
    assert_eq!(run(&cached), run(&uncached));
    let (with, without) = (cached.stats().snapshot(), uncached.stats().snapshot());
    // The same prompts, so the tokens reused are exactly the prefill saved.
    assert_eq!(
        with.prefill_tokens + with.prefix_reused_tokens,
        without.prefill_tokens
    );
    // The calls of a step share the chat header and "Question: <query>" at least.
    assert!(
        with.prefix_hits >= 2 && with.prefix_reused_tokens > 0,
        "{with:?}"
    );
    assert!(with.prefill_tokens < without.prefill_tokens, "{with:?}");
}

/// Questions that run beside the pinned search in the concurrency test.
const OTHERS: &[&str] = &[
    "Who is Larry Page?",
    "What is some cool music from the 1920s?",
    "How do I dice without slicing my finger?",
    "What are the best exercises for beginners?",
    "Why is the sea salty?",
    "Write a haiku about rain.",
];

/// Runs the pinned TPO search alone, then again among one search per `(question,
/// reference)` of `others` (each with its own seed) on the same engine and reward service,
/// and checks the pinned trace is identical, scores included, bit for bit.
fn same_trace_alone_and_among(
    rewards: RewardService,
    pinned_reference: Option<&str>,
    others: &[(String, Option<String>)],
    max_new_tokens: usize,
) {
    let engine = start_engine(32);
    let p = params(Strategy::Tpo, 2, 1, max_new_tokens);
    let mut quiet = |_: &StepEvent| {};
    let alone = block_on(search::run(
        &engine,
        &rewards,
        QUESTION,
        pinned_reference,
        &p,
        &mut quiet,
    ))
    .unwrap();

    let stats = rewards.stats();
    let calls_before = stats.calls.load(Ordering::Relaxed);
    let requests_before = stats.requests.load(Ordering::Relaxed);
    let mut questions = vec![(QUESTION.to_string(), pinned_reference.map(str::to_string))];
    questions.extend_from_slice(others);
    let searches: Vec<_> = questions
        .iter()
        .enumerate()
        .map(|(i, (q, reference))| {
            // Other seeds too, so the batch mixes different sampling streams.
            let p = SearchParams::new(SearchOptions {
                seed: if i == 0 { p.seed() } else { 100 + i as u64 },
                ..p.options().clone()
            })
            .unwrap();
            let (engine, rewards) = (&engine, &rewards);
            async move {
                let mut quiet = |_: &StepEvent| {};
                search::run(engine, rewards, q, reference.as_deref(), &p, &mut quiet).await
            }
        })
        .collect();
    let together = block_on(futures::future::join_all(searches));
    for ((q, _), result) in questions.iter().zip(&together) {
        assert!(result.is_ok(), "{q}: {result:?}");
    }
    // Every reward request the searches made, as their traces account for them.
    let traced: u64 = together
        .iter()
        .map(|r| reward_requests_of(r.as_ref().unwrap()))
        .sum();
    let pinned = together.into_iter().next().unwrap().unwrap();
    assert_eq!(timeless(pinned), timeless(alone));

    // The searches' reward requests were batched: fewer model calls than requests.
    let calls = stats.calls.load(Ordering::Relaxed) - calls_before;
    let requests = stats.requests.load(Ordering::Relaxed) - requests_before;
    assert_eq!(requests, traced);
    assert!(
        requests >= questions.len() as u64,
        "every search scores its samples"
    );
    assert!(
        calls < requests,
        "{calls} reward calls for {requests} requests"
    );
}

/// Reward requests a search made, read from its trace: per step, one for the candidates the
/// guard kept (when there were any), and one more for the guard's drops when they were
/// scored too (a search with nothing kept yet scores them, see `SearchState::score_and_add`).
/// A step whose every candidate the guard dropped, after an earlier step kept one, makes
/// none.
fn reward_requests_of(trace: &Trace) -> u64 {
    let steps: std::collections::BTreeSet<usize> =
        trace.candidates.iter().map(|c| c.step).collect();
    steps
        .iter()
        .map(|&step| {
            let of_step = || trace.candidates.iter().filter(move |c| c.step == step);
            let guard_dropped = |c: &&search::trace::Candidate| {
                c.dropped.as_deref().is_some_and(|d| d != "unscored")
            };
            let kept_scored = of_step().any(|c| !guard_dropped(&c));
            let drops_scored = of_step().any(|c| {
                guard_dropped(&c)
                    && (c.score.is_some()
                        || c.drop_detail
                            .as_deref()
                            .is_some_and(|d| d.contains("not scored either")))
            });
            u64::from(kept_scored) + u64::from(drops_scored)
        })
        .sum()
}

#[test]
fn a_seeded_search_gives_the_same_trace_alone_and_among_six_concurrent_searches() {
    let others: Vec<_> = OTHERS.iter().map(|q| (q.to_string(), None)).collect();
    same_trace_alone_and_among(start_judge(), None, &others, 40);
}

/// The 50 concurrent searches: the pinned one among 49 AlpacaEval questions, scored
/// by the similarity RM against their GPT-4-Turbo answers (the judge would make this take
/// minutes on two cores; the six-search test above covers the judge).
#[test]
fn a_seeded_search_gives_the_same_trace_alone_and_among_fifty_concurrent_searches() {
    let pairs = common::project_root().join("data/alpaca_eval/pairs.jsonl");
    let text = std::fs::read_to_string(&pairs)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make setup`)", pairs.display()));
    let others: Vec<(String, Option<String>)> = text
        .lines()
        .take(49)
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let field = |k: &str| row[k].as_str().unwrap().to_string();
            (field("prompt"), Some(field("reference")))
        })
        .collect();
    assert_eq!(others.len(), 49);
    same_trace_alone_and_among(start_similarity(), Some(REFERENCE), &others, 16);
}

#[test]
fn best_of_n_is_the_argmax_of_n_samples_equal_to_separately_seeded_requests() {
    let engine = start_engine(8);
    let rewards = start_judge();
    let (width, seed) = (3, 7u64);
    let p = params(Strategy::BestOfN, width, 0, 40);
    let mut quiet = |_: &StepEvent| {};
    let trace = block_on(search::run(
        &engine, &rewards, QUESTION, None, &p, &mut quiet,
    ))
    .unwrap();
    assert_eq!(trace.candidates.len(), width);
    assert_eq!(trace.totals.requests, 1, "one request with n = N");
    assert!(trace.steps.is_empty());

    // Sample i equals a one-sample request seeded seed + i, scored alone.
    let prompt = engine.chat().question_prompt(QUESTION).unwrap();
    for (i, c) in trace.candidates.iter().enumerate() {
        assert_eq!(c.seed, Some(seed + i as u64));
        let single = tpo_engine::engine::SamplingParams::new(tpo_engine::engine::SamplingOptions {
            temperature: 0.7,
            top_p: 0.95,
            max_new_tokens: 40,
            seed: Some(seed + i as u64),
            ..Default::default()
        })
        .unwrap();
        let out = engine
            .generate_blocking(GenerateRequest::new(prompt.clone(), single))
            .unwrap();
        let text = out[0].text_in(engine.chat()).unwrap();
        assert_eq!(c.text, text.trim(), "sample {i}");
        assert_eq!(c.tokens, out[0].tokens.len());
        let alone = block_on(rewards.score(vec![OwnedRewardInput {
            prompt: QUESTION.into(),
            response: c.text.clone(),
            reference: None,
        }]))
        .unwrap();
        let alone = alone[0].clone().unwrap();
        let score = c.score.unwrap();
        // The judge pads each batch differently; a row's score moves by float rounding only.
        assert!(
            (score - alone).abs() < 1e-4,
            "sample {i}: {score} vs {alone}"
        );
    }
    // The answer is the argmax (first on ties).
    let argmax = trace
        .candidates
        .iter()
        .filter(|c| c.score.is_some())
        .fold(None::<&search::Candidate>, |best, c| match best {
            Some(b) if b.score >= c.score => Some(b),
            _ => Some(c),
        })
        .unwrap();
    assert_eq!(trace.final_id, argmax.id);
    assert_eq!(trace.final_answer, argmax.text);
    assert_eq!(Some(trace.final_reward), argmax.score);
    // Best-of-N's samples are TPO's step 0 with the same seed.
    let mut quiet = |_: &StepEvent| {};
    let tpo0 = block_on(search::run(
        &engine,
        &rewards,
        QUESTION,
        None,
        &params(Strategy::Tpo, width, 0, 40),
        &mut quiet,
    ))
    .unwrap();
    let texts = |t: &Trace| {
        t.candidates
            .iter()
            .map(|c| c.text.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(texts(&tpo0), texts(&trace));
}

/// A reference answer for the similarity reward of the DARWIN tests.
const REFERENCE: &str = "Measure the paper so it covers the box with a little overlap, fold \
the edges under for clean lines, tape the seams on the bottom, crease the ends into neat \
triangles and finish with a ribbon.";

fn start_similarity() -> RewardService {
    let model = reward::load(
        &common::reward_source("similarity"),
        RewardOptions::default(),
    )
    .expect("the embedded similarity encoder (run `make setup`)");
    RewardService::start(model).unwrap()
}

/// A small DARWIN: 3 mutations, a replacement every 8 tokens keeping only the best, so
/// every replacement forks; 2 iterations of at most 24 tokens.
fn small_darwin(seed: u64) -> SearchParams {
    SearchParams::new(SearchOptions {
        strategy: Strategy::Darwin,
        max_new_tokens: 24,
        seed,
        darwin: DarwinOptions {
            mutations: 3,
            replace_every: 8,
            keep: 1,
            iterations: 2,
        },
        ..SearchOptions::default()
    })
    .unwrap()
}

#[test]
fn darwin_replacement_forks_the_best_partial_answer_and_the_trace_accounts_for_it() {
    let engine = start_engine(8);
    let rewards = start_similarity();
    let p = small_darwin(7);
    let mut events = Vec::new();
    let mut record = |e: &StepEvent| events.push(e.clone());
    let trace = block_on(search::run(
        &engine,
        &rewards,
        QUESTION,
        Some(REFERENCE),
        &p,
        &mut record,
    ))
    .unwrap();
    assert_eq!(trace.strategy, Strategy::Darwin);
    let darwin = trace.darwin.as_ref().expect("a DARWIN record");
    assert_eq!(darwin.iterations.len(), 2);
    assert_eq!(events.len(), 2);
    assert_eq!(events.iter().map(|e| e.step).collect::<Vec<_>>(), [1, 2]);

    // Ids in order; every candidate is scored or dropped with a reason (a guard drop may
    // carry the score its partial answer had).
    for (i, c) in trace.candidates.iter().enumerate() {
        assert_eq!(c.id, i);
        assert!(c.score.is_some() || c.dropped.is_some(), "candidate {c:?}");
        if c.score.is_some() && c.dropped.is_some() {
            assert!(c.is_guard_dropped(), "candidate {c:?}");
        }
        assert!(c.instruction.is_some(), "candidate {c:?}");
        assert!(c.tokens <= 24, "candidate {c:?}");
    }
    let mut forks = 0;
    for iteration in &darwin.iterations {
        assert_eq!(iteration.mutations.len(), 3);
        let first = &trace.candidates[iteration.candidate_ids[0]];
        assert_eq!(first.origin, search::Origin::Mutation);
        for round in &iteration.rounds {
            let score_of = |id: usize| {
                round
                    .scores
                    .iter()
                    .find(|m| m.id == id)
                    .and_then(|m| m.score)
                    .unwrap_or(f32::NEG_INFINITY)
            };
            for r in &round.replacements {
                forks += 1;
                // Reward-guided: the kept candidate outscored the one it replaced.
                assert!(round.kept.contains(&r.from_id), "{round:?}");
                assert!(score_of(r.from_id) >= score_of(r.replaced_id), "{round:?}");
                // The replaced candidate's text stops there; the fork continues from the kept
                // one's text (and so does the kept one).
                let replaced = &trace.candidates[r.replaced_id];
                assert_eq!(replaced.dropped.as_deref(), Some("replaced"));
                let fork = &trace.candidates[r.fork_id];
                let from = &trace.candidates[r.from_id];
                assert_eq!(fork.origin, search::Origin::Fork);
                assert_eq!(fork.parents, vec![r.from_id]);
                assert_eq!(fork.instruction, from.instruction);
                assert!(r.prefix_tokens >= 8, "{r:?}");
                assert!(fork.tokens >= r.prefix_tokens, "{r:?} {fork:?}");
                let prefix = r.prefix_text.trim_start();
                assert!(fork.text.starts_with(prefix), "{r:?}\nfork: {fork:?}");
                assert!(from.text.starts_with(prefix), "{r:?}\nfrom: {from:?}");
            }
        }
    }
    assert!(forks > 0, "no replacement happened: {darwin:?}");

    // The answer is the best finished candidate of the whole search.
    let best = trace
        .candidates
        .iter()
        .filter_map(|c| c.score.map(|s| (c.id, s)))
        .fold(None::<(usize, f32)>, |b, (id, s)| match b {
            Some((_, bs)) if bs >= s => b,
            _ => Some((id, s)),
        })
        .unwrap();
    assert_eq!((trace.final_id, trace.final_reward), best);
    assert_eq!(events.last().unwrap().best_reward, trace.final_reward);
    for (e, it) in events.iter().zip(&darwin.iterations) {
        assert_eq!(e.darwin_iteration.as_ref(), Some(it));
        let ids: Vec<usize> = e.candidates.iter().map(|c| c.id).collect();
        assert_eq!(ids, it.candidate_ids);
    }
    assert_replays(&events, &trace);
    // The archive holds each iteration's instructions; iteration 2 mutated the best one.
    let top = darwin
        .archive
        .iter()
        .filter(|e| e.iteration == 1)
        .max_by(|a, b| a.best_score.partial_cmp(&b.best_score).unwrap())
        .unwrap();
    assert_eq!(darwin.iterations[1].parent_instruction, top.instruction);
}

#[test]
fn a_seeded_darwin_search_gives_the_same_trace_alone_and_among_others() {
    let engine = start_engine(16);
    let rewards = start_similarity();
    let mut quiet = |_: &StepEvent| {};
    let alone = block_on(search::run(
        &engine,
        &rewards,
        QUESTION,
        Some(REFERENCE),
        &small_darwin(7),
        &mut quiet,
    ))
    .unwrap();
    let seeds = [7u64, 11, 12];
    let searches: Vec<_> = seeds
        .iter()
        .map(|&seed| {
            let (engine, rewards) = (&engine, &rewards);
            async move {
                let mut quiet = |_: &StepEvent| {};
                let q = if seed == 7 {
                    QUESTION
                } else {
                    OTHERS[seed as usize % OTHERS.len()]
                };
                search::run(
                    engine,
                    rewards,
                    q,
                    Some(REFERENCE),
                    &small_darwin(seed),
                    &mut quiet,
                )
                .await
            }
        })
        .collect();
    let together = block_on(futures::future::join_all(searches));
    let pinned = together.into_iter().next().unwrap().unwrap();
    assert_eq!(timeless(pinned), timeless(alone));
}

/// Dropping a search's future (what a server does when its client goes away) cancels its
/// generation: the engine frees the search's KV slots within a step or two, instead of
/// decoding its samples to the end.
#[test]
fn cancelling_a_search_frees_its_slots_at_once() {
    let engine = start_engine(4);
    let rewards = start_similarity();
    let stats = engine.stats();
    // Width 4 fills every slot; 400 tokens each would take hundreds of decode steps.
    let p = params(Strategy::BestOfN, 4, 0, 400);
    let steps_at_cancel = block_on(async {
        let mut quiet = |_: &StepEvent| {};
        let search = search::run(&engine, &rewards, QUESTION, Some(REFERENCE), &p, &mut quiet);
        let all_slots_busy = async {
            // Until the 4 samples decode and a few steps have run (a guard, not a timing).
            for _ in 0..6000 {
                if stats.running.load(Ordering::Relaxed) == 4
                    && stats.decode_steps.load(Ordering::Relaxed) >= 5
                {
                    return stats.decode_steps.load(Ordering::Relaxed);
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("the search never filled the 4 slots");
        };
        tokio::select! {
            result = search => panic!("the search finished before it was cancelled: {result:?}"),
            steps = all_slots_busy => steps,
        }
        // `search` is dropped here.
    });
    let mut freed_after = None;
    for _ in 0..6000 {
        if stats.running.load(Ordering::Relaxed) == 0 {
            freed_after = Some(stats.decode_steps.load(Ordering::Relaxed) - steps_at_cancel);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let freed_after = freed_after.expect("the cancelled search's slots were never freed");
    assert!(
        freed_after <= 3,
        "{freed_after} decode steps ran after the cancel"
    );
    // All 4 slots serve a new request.
    let sampling = tpo_engine::engine::SamplingParams::greedy(4).unwrap();
    let out = engine
        .generate_blocking(
            GenerateRequest::new(engine.chat().question_prompt(QUESTION).unwrap(), sampling)
                .with_n(4),
        )
        .unwrap();
    assert_eq!(out.len(), 4);
}

/// 128 searches at once through one engine with 8 KV slots and one reward model: every one
/// finishes (no deadlock) and none starves: admission is first come, first served, so no
/// search finishes behind more than 16 searches submitted after it (5 measured here).
#[test]
fn a_hundred_and_twenty_eight_searches_at_once_all_finish_roughly_in_order() {
    let engine = start_engine(8);
    let rewards = start_similarity();
    let p = params(Strategy::Greedy, 1, 0, 8);
    let finished = std::sync::atomic::AtomicUsize::new(0);
    let questions: Vec<String> = (0..128)
        .map(|i| format!("{} (question {i})", OTHERS[i % OTHERS.len()]))
        .collect();
    let searches: Vec<_> = questions
        .iter()
        .map(|q| {
            let (engine, rewards, p, finished) = (&engine, &rewards, &p, &finished);
            async move {
                let mut quiet = |_: &StepEvent| {};
                let trace = search::run(engine, rewards, q, Some(REFERENCE), p, &mut quiet).await;
                (trace, finished.fetch_add(1, Ordering::SeqCst))
            }
        })
        .collect();
    let results = block_on(futures::future::join_all(searches));
    let mut overtaken_by = Vec::new();
    for (i, (trace, position)) in results.iter().enumerate() {
        let trace = trace.as_ref().unwrap_or_else(|e| panic!("search {i}: {e}"));
        assert!(trace.final_reward.is_finite());
        overtaken_by.push(position.saturating_sub(i));
    }
    let worst = overtaken_by.iter().copied().max().unwrap_or(0);
    assert!(
        worst <= 16,
        "a search finished after {worst} searches submitted later: {overtaken_by:?}"
    );
}

#[test]
fn greedy_is_one_temperature_zero_answer_scored() {
    let engine = start_engine(4);
    let rewards = start_judge();
    let mut quiet = |_: &StepEvent| {};
    let trace = block_on(search::run(
        &engine,
        &rewards,
        "What is the capital of France?",
        None,
        &params(Strategy::Greedy, 5, 2, 24),
        &mut quiet,
    ))
    .unwrap();
    assert_eq!(trace.candidates.len(), 1);
    assert_eq!(trace.candidates[0].origin, search::Origin::Greedy);
    assert_eq!(trace.candidates[0].seed, None);
    assert!(
        trace.final_answer.contains("Paris"),
        "{}",
        trace.final_answer
    );
    assert!(trace.final_reward.is_finite());
    assert_eq!(trace.params.temperature, 0.0);
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn cli_best_of_n_prints_the_answer_and_writes_a_trace_that_parses() {
    let dir = std::env::temp_dir().join(format!("tpo_search_cli_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace_path = dir.join("trace.json");
    let out = common::tpo(&[
        "search",
        "--strategy",
        "bon",
        "--width",
        "2",
        "--max-new-tokens",
        "32",
        "--kv-slots",
        "4",
        "--max-seq-len",
        "512",
        "--trace",
        trace_path.to_str().unwrap(),
        QUESTION,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let trace: Trace =
        serde_json::from_str(&std::fs::read_to_string(&trace_path).unwrap()).unwrap();
    assert_eq!(trace.strategy, Strategy::BestOfN);
    assert_eq!(trace.candidates.len(), 2);
    assert_eq!(answer, trace.final_answer);
    assert!(!answer.is_empty());
    assert!(stderr(&out).contains("best reward"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cli_file_mode_answers_good_lines_reports_bad_ones_and_exits_two() {
    let dir = std::env::temp_dir().join(format!("tpo_search_file_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("prompts.jsonl");
    let output = dir.join("answers.jsonl");
    let traces = dir.join("traces.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"a\", \"prompt\": \"What is the capital of France?\"}\n\
         not json\n\
         \n\
         {\"id\": 7, \"prompt\": \"Name a fruit.\"}\n\
         {\"id\": \"c\"}\n",
    )
    .unwrap();
    let out = common::tpo(&[
        "search",
        "--strategy",
        "greedy",
        "--max-new-tokens",
        "16",
        "--kv-slots",
        "4",
        "--max-seq-len",
        "256",
        "--file",
        input.to_str().unwrap(),
        "--concurrency",
        "2",
        "--output",
        output.to_str().unwrap(),
        "--trace",
        traces.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("line 2") && err.contains("line 5"), "{err}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    let by_line = |n: u64| {
        lines
            .iter()
            .find(|l| l["line"] == n)
            .unwrap_or_else(|| panic!("no output for line {n}: {lines:?}"))
    };
    assert!(by_line(1)["answer"].as_str().unwrap().contains("Paris"));
    assert_eq!(by_line(1)["id"], "a");
    assert!(by_line(1)["reward"].is_number());
    assert_eq!(by_line(4)["id"], "7");
    assert!(by_line(2)["error"].as_str().unwrap().contains("JSON"));
    assert_eq!(by_line(5)["id"], "c");
    assert!(by_line(5)["error"].as_str().unwrap().contains("prompt"));
    let traces: Vec<Trace> = std::fs::read_to_string(&traces)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(traces.len(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cli_darwin_prints_each_iteration_and_writes_its_record() {
    let dir = std::env::temp_dir().join(format!("tpo_search_darwin_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace_path = dir.join("trace.json");
    let out = common::tpo(&[
        "search",
        "--strategy",
        "darwin",
        "--reward-model",
        "similarity",
        "--reference",
        REFERENCE,
        "--mutations",
        "2",
        "--keep",
        "1",
        "--replace-every",
        "6",
        "--iterations",
        "2",
        "--max-new-tokens",
        "12",
        "--kv-slots",
        "4",
        "--max-seq-len",
        "512",
        "--trace",
        trace_path.to_str().unwrap(),
        QUESTION,
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let trace: Trace =
        serde_json::from_str(&std::fs::read_to_string(&trace_path).unwrap()).unwrap();
    assert_eq!(trace.strategy, Strategy::Darwin);
    let darwin = trace.darwin.as_ref().unwrap();
    assert_eq!(
        (darwin.mutations, darwin.keep, darwin.replace_every),
        (2, 1, 6)
    );
    assert_eq!(darwin.iterations.len(), 2);
    assert!(
        err.contains("step 1/2") && err.contains("step 2/2"),
        "{err}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        trace.final_answer
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cli_bad_flags_fail_with_a_message_and_exit_one() {
    for (args, needle) in [
        (vec!["search", "--width", "0", "q"], "width"),
        (vec!["search", "--top-p", "1.5", "q"], "top_p"),
        (vec!["search", "--strategy", "beam", "q"], "beam"),
        (
            vec!["search", "--strategy", "darwin", "--keep", "6", "q"],
            "keeps k = 6",
        ),
        (vec!["search", "--replace-every", "0", "q"], "replace-every"),
        (
            vec![
                "search",
                "--strategy",
                "darwin",
                "--mutations",
                "9",
                "--kv-slots",
                "4",
                "q",
            ],
            "--mutations 9",
        ),
        (vec!["search"], "<QUESTION>"),
        (
            vec!["search", "--width", "9", "--kv-slots", "4", "q"],
            "--kv-slots",
        ),
        (
            vec!["search", "--file", "/nonexistent/prompts.jsonl"],
            "/nonexistent/prompts.jsonl",
        ),
    ] {
        let out = common::tpo(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
