//! The automatic prefix cache on the real model: every output (tokens, log-probs, seeded
//! sampling) equals the same engine's output with the cache off — alone, continuing an
//! earlier answer as a conversation, among concurrent requests, and under eviction
//! pressure — and a prompt that differs from a cached one in a token reuses only the rows
//! before it.

mod common;

use std::sync::atomic::Ordering;

use tpo_engine::engine::{
    Engine, EngineOptions, GenerateRequest, SampleOutput, SamplingOptions, SamplingParams,
    StatsSnapshot,
};
use tpo_engine::model::{ChatMessage, ModelDir};

/// The tolerance `tests/engine.rs` allows between batch shapes: cached rows were computed by
/// decode steps (or another prefill chunking) where the uncached run computes them in one
/// prefill, so the float32 GEMMs differ in shape.
const LOGPROB_TOLERANCE: f32 = 1e-3;

fn start(kv_slots: usize, prefix_cache: bool) -> Engine {
    let model = ModelDir::open(&common::policy_dir()).unwrap();
    Engine::start(
        &model,
        EngineOptions {
            kv_slots,
            max_seq_len: 1024,
            prefix_cache,
            ..EngineOptions::default()
        },
    )
    .unwrap()
}

fn sampled(seed: u64, max_new_tokens: usize) -> SamplingParams {
    SamplingParams::new(SamplingOptions {
        temperature: 0.8,
        top_p: 0.95,
        max_new_tokens,
        seed: Some(seed),
        ..SamplingOptions::default()
    })
    .unwrap()
}

fn run(engine: &Engine, prompt: &[u32], params: &SamplingParams) -> SampleOutput {
    engine
        .generate_blocking(GenerateRequest::new(prompt.to_vec(), params.clone()))
        .unwrap()
        .remove(0)
}

fn assert_same(cached: &SampleOutput, uncached: &SampleOutput, what: &str) {
    assert_eq!(cached.tokens, uncached.tokens, "{what}: tokens differ");
    assert_eq!(cached.logprobs.len(), uncached.logprobs.len(), "{what}");
    for (a, b) in cached.logprobs.iter().zip(&uncached.logprobs) {
        assert!(
            (a - b).abs() <= LOGPROB_TOLERANCE,
            "{what}: logprob {a} vs {b}"
        );
    }
    assert_eq!(cached.finish_reason, uncached.finish_reason, "{what}");
}

fn stats(engine: &Engine) -> StatsSnapshot {
    engine.stats().snapshot()
}

/// A three-turn conversation whose later prompts start with the earlier prompts and answers.
fn conversation(engine: &Engine, seed: u64) -> Vec<(Vec<u32>, SampleOutput)> {
    let mut messages = vec![ChatMessage::user(
        "Give me one tip for writing clear emails.",
    )];
    let mut turns = Vec::new();
    for (i, follow_up) in ["Why does that help?", "Now say it in five words."]
        .iter()
        .chain(std::iter::once(&""))
        .enumerate()
    {
        let prompt = engine.chat().chat_prompt(&messages).unwrap();
        let out = run(engine, &prompt, &sampled(seed + i as u64, 40));
        messages.push(ChatMessage::assistant(out.text_in(engine.chat()).unwrap()));
        if !follow_up.is_empty() {
            messages.push(ChatMessage::user(*follow_up));
        }
        turns.push((prompt, out));
    }
    turns
}

#[test]
fn a_conversation_continuing_cached_answers_equals_the_uncached_run() {
    let cached = start(4, true);
    let uncached = start(4, false);
    let with = conversation(&cached, 40);
    let without = conversation(&uncached, 40);
    for (i, ((p1, a), (p2, b))) in with.iter().zip(&without).enumerate() {
        assert_eq!(p1, p2, "turn {i}: prompts differ");
        assert_same(a, b, &format!("turn {i}"));
    }
    let s = stats(&cached);
    assert!(s.prefix_hits >= 2, "{s:?}");
    // Later turns reuse at least the earlier prompt.
    assert!(s.prefix_reused_tokens >= with[1].0.len() as u64, "{s:?}");
    let u = stats(&uncached);
    assert_eq!((u.prefix_hits, u.prefix_reused_tokens), (0, 0), "{u:?}");
    assert_eq!(
        s.prefill_tokens + s.prefix_reused_tokens,
        u.prefill_tokens,
        "reused tokens are exactly the prefill saved"
    );
}

#[test]
fn a_repeated_prompt_and_teacher_forcing_over_a_cached_answer_are_unchanged() {
    let cached = start(4, true);
    let uncached = start(4, false);
    let prompt = cached
        .chat()
        .question_prompt("Describe the smell of rain in two sentences.")
        .unwrap();
    let params = sampled(9, 32);
    let first = run(&cached, &prompt, &params);
    let before = stats(&cached);
    let again = run(&cached, &prompt, &params);
    let after = stats(&cached).since(&before);
    assert_same(&again, &first, "the same request twice");
    assert_eq!(after.prefix_hits, 1, "{after:?}");
    assert_eq!(after.prefix_reused_tokens, prompt.len() as u64 - 1);
    assert_eq!(
        after.prefill_tokens, 1,
        "only the last prompt token is prefilled"
    );
    assert_same(
        &again,
        &run(&uncached, &prompt, &params),
        "against no cache",
    );

    let forced = cached
        .logprobs_blocking(prompt.clone(), first.tokens.clone())
        .unwrap();
    let reference = uncached
        .logprobs_blocking(prompt.clone(), first.tokens.clone())
        .unwrap();
    assert_eq!(forced.token_logprobs.len(), reference.token_logprobs.len());
    for (a, b) in forced.token_logprobs.iter().zip(&reference.token_logprobs) {
        assert!((a - b).abs() <= LOGPROB_TOLERANCE, "forced {a} vs {b}");
    }
}

#[test]
fn a_prompt_differing_in_its_last_token_reuses_only_the_rows_before_it() {
    let cached = start(4, true);
    let uncached = start(4, false);
    let prompt = cached
        .chat()
        .question_prompt("List four animals that live in the Arctic.")
        .unwrap();
    let greedy = SamplingParams::greedy(24).unwrap();
    let out = run(&cached, &prompt, &greedy);
    // The cached entry holds prompt + answer; change the answer's first token, keep going.
    let mut changed: Vec<u32> = prompt
        .iter()
        .copied()
        .chain(out.tokens.iter().copied())
        .collect();
    changed.truncate(prompt.len() + 8);
    let at = prompt.len();
    changed[at] = if changed[at] == 42 { 43 } else { 42 };
    let before = stats(&cached);
    let hit = run(&cached, &changed, &greedy);
    let after = stats(&cached).since(&before);
    assert_eq!(after.prefix_reused_tokens, at as u64, "{after:?}");
    assert_eq!(after.prefill_tokens, (changed.len() - at) as u64);
    assert_same(&hit, &run(&uncached, &changed, &greedy), "changed token");
}

#[test]
fn concurrent_requests_sharing_prefixes_under_eviction_pressure_lose_nothing() {
    // 3 slots for 18 requests (n up to 2) over 6 prompts: entries are evicted while
    // others are hit; every request completes and equals the uncached engine's output.
    let cached = start(3, true);
    let uncached = start(3, false);
    let preface = "You are reviewing short answers. Read the question carefully, think about \
                   what a careful expert would say, and answer in one or two sentences. ";
    let questions = [
        "Why do cats purr?",
        "What makes bread rise?",
        "How do bees make honey?",
        "Why is ice slippery?",
        "What is a leap year?",
        "Why do onions make you cry?",
    ];
    let prompts: Vec<Vec<u32>> = questions
        .iter()
        .map(|q| {
            cached
                .chat()
                .question_prompt(&format!("{preface}{q}"))
                .unwrap()
        })
        .collect();
    let requests: Vec<GenerateRequest> = (0..18)
        .map(|i| {
            let n = if i % 5 == 0 { 2 } else { 1 };
            GenerateRequest::new(prompts[i % 6].clone(), sampled(300 + i as u64, 12 + i % 7))
                .with_n(n)
        })
        .collect();
    let submit_all = |engine: &Engine| {
        let streams: Vec<_> = requests
            .iter()
            .map(|r| engine.submit(r.clone()).unwrap())
            .collect();
        streams
            .into_iter()
            .map(|s| futures::executor::block_on(s.collect()).unwrap())
            .collect::<Vec<Vec<SampleOutput>>>()
    };
    let with = submit_all(&cached);
    let without = submit_all(&uncached);
    for (i, (a, b)) in with.iter().zip(&without).enumerate() {
        assert_eq!(a.len(), b.len(), "request {i}");
        for (x, y) in a.iter().zip(b) {
            assert_same(x, y, &format!("request {i} sample {}", x.index));
        }
    }
    let s = stats(&cached);
    assert!(s.prefix_hits > 0 && s.prefix_evictions > 0, "{s:?}");
    assert!(s.prefill_tokens < stats(&uncached).prefill_tokens, "{s:?}");
    let e = cached.stats();
    assert_eq!(e.running.load(Ordering::Relaxed), 0);
    assert_eq!(e.kv_slots_used.load(Ordering::Relaxed), 0);
    assert!(e.kv_slots_cached.load(Ordering::Relaxed) <= 3);
}

#[test]
fn forks_take_their_batch_positions_when_cache_entries_sit_there() {
    // Finished requests leave entries in the low slots; a request with n = 3 must decode
    // in slots 0, 1, 2 (moving those entries), exactly as without the cache.
    let cached = start(6, true);
    let uncached = start(6, false);
    for (i, q) in ["Name a colour.", "Name a planet.", "Name a tree."]
        .iter()
        .enumerate()
    {
        let prompt = cached.chat().question_prompt(q).unwrap();
        let params = sampled(i as u64, 8);
        assert_same(
            &run(&cached, &prompt, &params),
            &run(&uncached, &prompt, &params),
            q,
        );
    }
    assert!(cached.stats().kv_slots_cached.load(Ordering::Relaxed) >= 3);
    let prompt = cached
        .chat()
        .question_prompt("Invent a name for a bakery.")
        .unwrap();
    let request = GenerateRequest::new(prompt, sampled(11, 20)).with_n(3);
    let with = cached.generate_blocking(request.clone()).unwrap();
    let without = uncached.generate_blocking(request).unwrap();
    for (a, b) in with.iter().zip(&without) {
        assert_same(a, b, &format!("fork {}", a.index));
    }
}
