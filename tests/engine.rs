//! The continuous-batching engine on the real model: batching changes nothing a request
//! gets back, forks equal separate seeded requests, the arena's limits make requests wait
//! (never fail), bad requests fail alone, and cancellation frees slots.

mod common;

use std::sync::atomic::Ordering;

use tpo_engine::engine::{
    Engine, EngineError, EngineOptions, GenerateRequest, GenerationEvent, SampleOutput,
    SamplingOptions, SamplingParams,
};
use tpo_engine::model::ModelDir;

/// Max |difference| between a token's log-prob computed in different batch shapes
/// (decode rows vs prefill rows use different GEMM shapes, float32).
const LOGPROB_TOLERANCE: f32 = 1e-3;

fn start(kv_slots: usize, max_seq_len: usize) -> Engine {
    let model = ModelDir::open(&common::policy_dir()).unwrap();
    Engine::start(
        &model,
        EngineOptions {
            kv_slots,
            max_seq_len,
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

const QUESTIONS: &[&str] = &[
    "Hi",
    "What is 2+2?",
    "Name a fruit.",
    "Write a limerick about a cat who learns to code in Rust.",
    "Summarize the following text in one sentence: The Industrial Revolution was the transition \
     to new manufacturing processes in Great Britain, continental Europe, and the United States, \
     that occurred during the period from around 1760 to about 1820-1840. This transition \
     included going from hand production methods to machines, new chemical manufacturing and \
     iron production processes, the increasing use of steam power and water power, the \
     development of machine tools and the rise of the mechanized factory system. Output greatly \
     increased, and a result was an unprecedented rise in population and the rate of population \
     growth. The textile industry was the first to use modern production methods, and textiles \
     became the dominant industry in terms of employment, value of output, and capital invested.",
    "List three uses of a paperclip.",
    "Translate 'good morning' into French, Spanish and German, and explain the differences in \
     how each greeting is used during the day in its country.",
    "Why is the sea salty?",
    "Give me a one-word synonym for happy.",
    "Explain recursion to a five-year-old using an example with Russian dolls.",
    "What colour is the sky on Mars?",
    "Describe a sunrise.",
];

fn prompts(engine: &Engine) -> Vec<Vec<u32>> {
    QUESTIONS
        .iter()
        .map(|q| engine.question_prompt(q).unwrap())
        .collect()
}

fn alone(engine: &Engine, prompt: &[u32], params: &SamplingParams) -> SampleOutput {
    engine
        .generate_blocking(GenerateRequest::new(prompt.to_vec(), params.clone()))
        .unwrap()
        .remove(0)
}

fn assert_same_sample(batched: &SampleOutput, single: &SampleOutput, what: &str) {
    assert_eq!(batched.tokens, single.tokens, "{what}: tokens differ");
    for (a, b) in batched.logprobs.iter().zip(&single.logprobs) {
        assert!(
            (a - b).abs() <= LOGPROB_TOLERANCE,
            "{what}: logprob {a} vs {b}"
        );
    }
}

#[test]
fn ragged_batch_admitted_at_different_steps_equals_each_prompt_alone() {
    let engine = start(16, 1024);
    let prompts = prompts(&engine);
    let lengths: Vec<usize> = prompts.iter().map(Vec::len).collect();
    assert!(
        lengths.iter().max().unwrap() > &(4 * lengths.iter().min().unwrap()),
        "{lengths:?}"
    );
    let greedy = SamplingParams::greedy(24).unwrap();
    let singles: Vec<SampleOutput> = prompts.iter().map(|p| alone(&engine, p, &greedy)).collect();

    // First wave of 4, then the rest once the first wave has decoded a few tokens.
    let mut streams = Vec::new();
    for p in &prompts[..4] {
        streams.push(
            engine
                .submit(GenerateRequest::new(p.clone(), greedy.clone()))
                .unwrap(),
        );
    }
    for s in &mut streams {
        let mut seen = 0;
        while seen < 3 {
            match s.blocking_next() {
                Some(GenerationEvent::Token { .. }) => seen += 1,
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
    for p in &prompts[4..] {
        streams.push(
            engine
                .submit(GenerateRequest::new(p.clone(), greedy.clone()))
                .unwrap(),
        );
    }
    for (i, s) in streams.into_iter().enumerate() {
        let batched = futures::executor::block_on(s.collect()).unwrap().remove(0);
        assert_same_sample(
            &batched,
            &singles[i],
            &format!("prompt {i} ({} tokens)", lengths[i]),
        );
    }
    assert!(
        engine.stats().decode_rows.load(Ordering::Relaxed)
            > engine.stats().decode_steps.load(Ordering::Relaxed)
    );
}

#[test]
fn a_seeded_request_returns_the_same_text_alone_and_among_fifteen_others() {
    let engine = start(32, 1024);
    let prompts = prompts(&engine);
    let target = engine
        .question_prompt("Write two sentences about autumn leaves.")
        .unwrap();
    let params = sampled(1234, 48);
    let single = alone(&engine, &target, &params);

    let mut streams = Vec::new();
    for (i, p) in prompts.iter().cycle().take(15).enumerate() {
        let seed = 100 + i as u64;
        streams.push(
            engine
                .submit(GenerateRequest::new(p.clone(), sampled(seed, 16 + 4 * i)))
                .unwrap(),
        );
        if i == 7 {
            streams.push(
                engine
                    .submit(GenerateRequest::new(target.clone(), params.clone()))
                    .unwrap(),
            );
        }
    }
    let outputs: Vec<_> = streams
        .into_iter()
        .map(|s| futures::executor::block_on(s.collect()).unwrap().remove(0))
        .collect();
    let batched = &outputs[8];
    assert_eq!(
        engine.text_of(batched).unwrap(),
        engine.text_of(&single).unwrap()
    );
    assert_same_sample(batched, &single, "seeded request in a batch of 16");
}

#[test]
fn n_samples_through_prefix_fork_equal_separate_requests_with_the_per_sample_seeds() {
    let engine = start(8, 1024);
    let prompt = engine
        .question_prompt("Invent a name for a coffee shop.")
        .unwrap();
    let forked = engine
        .generate_blocking(GenerateRequest::new(prompt.clone(), sampled(77, 24)).with_n(5))
        .unwrap();
    assert_eq!(forked.len(), 5);
    for (i, sample) in forked.iter().enumerate() {
        assert_eq!(sample.index, i);
        let separate = alone(&engine, &prompt, &sampled(77 + i as u64, 24));
        assert_same_sample(sample, &separate, &format!("sample {i}"));
    }
    let distinct: std::collections::HashSet<_> = forked.iter().map(|s| s.tokens.clone()).collect();
    assert!(distinct.len() > 1, "all five samples are identical");
}

#[test]
fn three_times_more_requests_than_slots_all_complete_correctly() {
    let engine = start(4, 1024);
    let prompts = prompts(&engine);
    assert_eq!(prompts.len(), 12);
    let greedy = SamplingParams::greedy(16).unwrap();
    let singles: Vec<SampleOutput> = prompts.iter().map(|p| alone(&engine, p, &greedy)).collect();
    let streams: Vec<_> = prompts
        .iter()
        .map(|p| {
            engine
                .submit(GenerateRequest::new(p.clone(), greedy.clone()))
                .unwrap()
        })
        .collect();
    for (i, s) in streams.into_iter().enumerate() {
        let out = futures::executor::block_on(s.collect()).unwrap().remove(0);
        assert_same_sample(&out, &singles[i], &format!("request {i}"));
    }
    assert_eq!(engine.stats().running.load(Ordering::Relaxed), 0);
}

#[test]
fn invalid_requests_fail_with_typed_errors_while_the_engine_keeps_serving() {
    let engine = start(4, 64);
    let good = engine
        .question_prompt("What is the capital of Germany?")
        .unwrap();
    let in_flight = engine
        .submit(GenerateRequest::new(
            good.clone(),
            SamplingParams::greedy(12).unwrap(),
        ))
        .unwrap();

    let long: Vec<u32> = std::iter::repeat_n(good.clone(), 4).flatten().collect();
    let err = engine
        .submit(GenerateRequest::new(
            long,
            SamplingParams::greedy(4).unwrap(),
        ))
        .err()
        .unwrap();
    assert!(
        matches!(err, EngineError::SequenceTooLong { limit: 64, .. }),
        "{err}"
    );
    let err = engine
        .submit(GenerateRequest::new(good.clone(), SamplingParams::greedy(4).unwrap()).with_n(5))
        .err()
        .unwrap();
    assert!(
        matches!(err, EngineError::InvalidSampleCount { n: 5, slots: 4 }),
        "{err}"
    );
    let err = engine
        .submit(GenerateRequest::new(
            vec![1, 999_999],
            SamplingParams::greedy(4).unwrap(),
        ))
        .err()
        .unwrap();
    assert!(
        matches!(err, EngineError::InvalidToken { token: 999_999, .. }),
        "{err}"
    );
    let err = engine
        .submit(GenerateRequest::new(
            Vec::new(),
            SamplingParams::greedy(4).unwrap(),
        ))
        .err()
        .unwrap();
    assert!(matches!(err, EngineError::EmptyPrompt), "{err}");
    let err = engine
        .logprobs_blocking(good.clone(), Vec::new())
        .unwrap_err();
    assert!(matches!(err, EngineError::EmptyContinuation), "{err}");

    let out = futures::executor::block_on(in_flight.collect())
        .unwrap()
        .remove(0);
    let text = engine.text_of(&out).unwrap();
    assert!(text.contains("Berlin"), "{text:?}");
    // A request that hits the context limit stops with finish reason `length`.
    let out = alone(&engine, &good, &SamplingParams::greedy(1000).unwrap());
    assert!(out.prompt_tokens + out.tokens.len() <= 64);
}

#[test]
fn teacher_forced_logprobs_equal_the_logprobs_reported_by_generation() {
    let engine = start(4, 1024);
    let prompt = engine
        .question_prompt("Tell me a fact about owls.")
        .unwrap();
    let out = alone(&engine, &prompt, &sampled(5, 40));
    assert!(out.tokens.len() > 5);
    let forced = engine
        .logprobs_blocking(prompt, out.tokens.clone())
        .unwrap();
    assert_eq!(forced.token_logprobs.len(), out.tokens.len());
    for (i, (a, b)) in forced.token_logprobs.iter().zip(&out.logprobs).enumerate() {
        assert!(
            (a - b).abs() <= LOGPROB_TOLERANCE,
            "token {i}: forced {a} vs generated {b}"
        );
    }
    let tol = LOGPROB_TOLERANCE * out.tokens.len() as f32;
    assert!(
        (forced.sum - out.logprob_sum()).abs() <= tol,
        "{} vs {}",
        forced.sum,
        out.logprob_sum()
    );
}

#[test]
fn dropping_a_stream_frees_its_slot_within_a_step() {
    let engine = start(1, 1024);
    let prompt = engine
        .question_prompt("Count from one to one thousand.")
        .unwrap();
    let endless = SamplingParams::new(SamplingOptions {
        max_new_tokens: 900,
        ignore_eos: true,
        ..SamplingOptions::default()
    })
    .unwrap();
    let mut stream = engine
        .submit(GenerateRequest::new(prompt.clone(), endless))
        .unwrap();
    assert!(matches!(
        stream.blocking_next(),
        Some(GenerationEvent::Token { .. })
    ));
    drop(stream);
    let steps_at_drop = engine.stats().decode_steps.load(Ordering::Relaxed);
    // The only slot must come back for this request to run at all.
    let out = alone(&engine, &prompt, &SamplingParams::greedy(4).unwrap());
    assert_eq!(out.tokens.len(), 4);
    let steps = engine.stats().decode_steps.load(Ordering::Relaxed);
    // At most one more step of the cancelled sequence, then 3 decode steps for the new one.
    assert!(
        steps <= steps_at_drop + 1 + 3,
        "{steps} steps after dropping at {steps_at_drop}"
    );
}

/// Regression (found by DARWIN's forks): when some samples of an n-sample request finish on
/// their first token and others do not, the others must keep the slot of their batch
/// position, or the next request to join the batch finds its slot taken ("slot N is not
/// free") and fails.
#[test]
fn samples_that_finish_on_their_first_token_leave_the_batch_consistent() {
    let engine = start(8, 256);
    let prompt = engine.question_prompt("Name a fruit.").unwrap();
    let params = |seed: u64, stop_token_ids: Vec<u32>, max_new_tokens: usize| {
        SamplingParams::new(SamplingOptions {
            temperature: 1.0,
            max_new_tokens,
            seed: Some(seed),
            stop_token_ids,
            ..SamplingOptions::default()
        })
        .unwrap()
    };
    // A seed whose first two samples start with different tokens.
    let (seed, first) = (0..50u64)
        .find_map(|seed| {
            let out = engine
                .generate_blocking(
                    GenerateRequest::new(prompt.clone(), params(seed, Vec::new(), 1)).with_n(3),
                )
                .unwrap();
            let firsts: Vec<u32> = out.iter().map(|o| o.tokens[0]).collect();
            (firsts[0] != firsts[1] && firsts[0] != firsts[2]).then_some((seed, firsts[0]))
        })
        .expect("no seed among 50 gives different first tokens");
    // Sample 0 stops on its first token; samples 1 and 2 decode on. A second request joins
    // while they do.
    let forked = engine
        .submit(GenerateRequest::new(prompt.clone(), params(seed, vec![first], 24)).with_n(3))
        .unwrap();
    let other = engine
        .submit(GenerateRequest::new(prompt.clone(), sampled(5, 24)).with_n(2))
        .unwrap();
    let forked = futures::executor::block_on(forked.collect()).unwrap();
    let other = futures::executor::block_on(other.collect()).unwrap();
    assert!(forked[0].tokens.is_empty());
    assert!(!forked[1].tokens.is_empty() && !forked[2].tokens.is_empty());
    // Each sample still equals its request alone (batching changes nothing).
    for (i, out) in other.iter().enumerate() {
        let single = alone(&engine, &prompt, &sampled(5 + i as u64, 24));
        assert_same_sample(out, &single, &format!("other sample {i}"));
    }
}
