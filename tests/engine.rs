//! The continuous-batching engine on the real model: batching changes nothing a request
//! gets back, forks equal separate seeded requests, the arena's limits make requests wait
//! (never fail), bad requests fail alone (bad parameters, NaN logits, failing model steps),
//! a full engine refuses with `Overloaded`, stop strings cut where a full decode would, and
//! cancellation frees slots.

mod common;

use std::sync::atomic::Ordering;

use tpo_engine::engine::{
    Engine, EngineError, EngineOptions, FinishReason, GenerateRequest, GenerationEvent,
    SampleOutput, SamplingOptions, SamplingParams,
};
#[cfg(feature = "fault-injection")]
use tpo_engine::engine::{InjectedFault, LogitsError};
use tpo_engine::model::ModelDir;

/// Max |difference| between a token's log-prob computed in different batch shapes
/// (decode rows vs prefill rows use different GEMM shapes, float32).
const LOGPROB_TOLERANCE: f32 = 1e-3;

fn start(kv_slots: usize, max_seq_len: usize) -> Engine {
    start_dir(&common::policy_dir(), kv_slots, max_seq_len)
}

/// An engine on the policy folder `dir` (e.g. `paths::policy_dir("int8")`), with ONNX
/// Runtime loaded.
fn start_dir(dir: &std::path::Path, kv_slots: usize, max_seq_len: usize) -> Engine {
    common::init_runtime();
    let model = ModelDir::open(dir).unwrap();
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
        .map(|q| engine.chat().question_prompt(q).unwrap())
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

/// Submits every prompt at once and checks that each answer equals the one it got alone.
fn all_at_once_answer_as_alone(
    engine: &Engine,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    singles: &[SampleOutput],
) {
    let streams: Vec<_> = prompts
        .iter()
        .map(|p| {
            engine
                .submit(GenerateRequest::new(p.clone(), params.clone()))
                .unwrap()
        })
        .collect();
    for (i, s) in streams.into_iter().enumerate() {
        let out = futures::executor::block_on(s.collect()).unwrap().remove(0);
        let what = format!("request {i} ({} prompt tokens)", prompts[i].len());
        assert_same_sample(&out, &singles[i], &what);
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
fn the_float16_export_runs_on_a_float16_kv_arena_batched_and_answers_as_float32_does() {
    let model = ModelDir::open(&common::policy_f16_dir()).unwrap();
    let options = EngineOptions {
        kv_slots: 4,
        max_seq_len: 512,
        ..EngineOptions::default()
    };
    let f16 = Engine::start(&model, options).unwrap();
    let f32 = start(4, 512);
    let questions = [
        "What is the capital of France?",
        "Name a fruit.",
        "Why is the sea salty?",
    ];
    let greedy = SamplingParams::greedy(16).unwrap();
    let prompts: Vec<Vec<u32>> = questions
        .iter()
        .map(|q| f16.chat().question_prompt(q).unwrap())
        .collect();
    // All three at once: prefill and ragged decode over float16 KV views of the arena.
    let streams: Vec<_> = prompts
        .iter()
        .map(|p| {
            f16.submit(GenerateRequest::new(p.clone(), greedy.clone()))
                .unwrap()
        })
        .collect();
    for ((q, p), s) in questions.iter().zip(&prompts).zip(streams) {
        let batched = futures::executor::block_on(s.collect()).unwrap().remove(0);
        let single = alone(&f16, p, &greedy);
        assert_eq!(
            batched.tokens, single.tokens,
            "{q}: float16 batched vs alone"
        );
        // models/parity.py gates the same: float16 greedy answers equal float32's.
        let reference = alone(&f32, p, &greedy);
        assert_eq!(batched.tokens, reference.tokens, "{q}: float16 vs float32");
        for (a, b) in batched.logprobs.iter().zip(&reference.logprobs) {
            assert!(
                (a - b).abs() <= 0.05,
                "{q}: float16 log-prob {a} vs float32 {b}"
            );
        }
    }
    let answer = f16
        .tokenizer()
        .decode(&alone(&f16, &prompts[0], &greedy).tokens)
        .unwrap();
    assert!(answer.contains("Paris"), "{answer:?}");
}

#[test]
fn a_seeded_request_returns_the_same_text_alone_and_among_fifteen_others() {
    let engine = start(32, 1024);
    let prompts = prompts(&engine);
    let target = engine
        .chat()
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
        batched.text_in(engine.chat()).unwrap(),
        single.text_in(engine.chat()).unwrap()
    );
    assert_same_sample(batched, &single, "seeded request in a batch of 16");
}

#[test]
fn n_samples_through_prefix_fork_equal_separate_requests_with_the_per_sample_seeds() {
    let engine = start(8, 1024);
    let prompt = engine
        .chat()
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

/// `kv_memory` sizes the arena by bytes: as many whole slots of `max_seq_len` tokens as fit
/// (half the length, twice the slots), and requests beyond them wait and answer as alone.
#[test]
fn an_arena_sized_by_memory_holds_the_slots_that_fit_and_serves_more_requests_than_slots() {
    let model = ModelDir::open(&common::policy_dir()).unwrap();
    let decoder = tpo_engine::engine::Decoder::load(&model, Default::default()).unwrap();
    let per_slot = decoder.kv_shape(256).arena_bytes(1);
    drop(decoder);
    let budget = 3 * per_slot + per_slot / 2;
    let sized = |max_seq_len| {
        Engine::start(
            &model,
            EngineOptions {
                kv_slots: 0, // ignored: the budget decides
                kv_memory: Some(budget),
                max_seq_len,
                ..EngineOptions::default()
            },
        )
        .unwrap()
    };
    assert_eq!(sized(128).kv_slots(), 7);
    let engine = sized(256);
    assert_eq!(engine.kv_slots(), 3);
    let prompts = prompts(&engine);
    let greedy = SamplingParams::greedy(8).unwrap();
    let singles: Vec<SampleOutput> = prompts.iter().map(|p| alone(&engine, p, &greedy)).collect();
    all_at_once_answer_as_alone(&engine, &prompts, &greedy, &singles);
    let too_small = Engine::start(
        &model,
        EngineOptions {
            kv_memory: Some(per_slot - 1),
            max_seq_len: 256,
            ..EngineOptions::default()
        },
    );
    assert!(
        matches!(too_small, Err(EngineError::KvBudgetTooSmall { .. })),
        "{:?}",
        too_small.err()
    );
}

#[test]
fn three_times_more_requests_than_slots_all_complete_correctly() {
    let engine = start(4, 1024);
    let prompts = prompts(&engine);
    assert_eq!(prompts.len(), 12);
    let greedy = SamplingParams::greedy(16).unwrap();
    let singles: Vec<SampleOutput> = prompts.iter().map(|p| alone(&engine, p, &greedy)).collect();
    all_at_once_answer_as_alone(&engine, &prompts, &greedy, &singles);
    assert_eq!(engine.stats().running.load(Ordering::Relaxed), 0);
}

#[test]
fn invalid_requests_fail_with_typed_errors_while_the_engine_keeps_serving() {
    let engine = start(4, 64);
    let good = engine
        .chat()
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
    let text = out.text_in(engine.chat()).unwrap();
    assert!(text.contains("Berlin"), "{text:?}");
    // A request that hits the context limit stops with finish reason `length`.
    let out = alone(&engine, &good, &SamplingParams::greedy(1000).unwrap());
    assert!(out.prompt_tokens + out.tokens.len() <= 64);
}

/// The int8 policy (`--model int8`, built by `make setup`; models/int8.py quantizes each
/// token's activations with its own scale) answers every prompt alike alone, in a prefill
/// group and in a batched decode: a row's numbers never depend on its batch mates, which one
/// scale per tensor would break.
#[test]
fn int8_policy_answers_each_prompt_alike_alone_or_batched() {
    let engine = start_dir(&tpo_engine::paths::policy_dir("int8"), 16, 1024);
    let prompts: Vec<Vec<u32>> = [0, 2, 5, 7]
        .iter()
        .map(|&i| engine.chat().question_prompt(QUESTIONS[i]).unwrap())
        .collect();
    let greedy = SamplingParams::greedy(16).unwrap();
    let singles: Vec<SampleOutput> = prompts.iter().map(|p| alone(&engine, p, &greedy)).collect();
    assert!(singles.iter().all(|s| !s.tokens.is_empty()));
    engine.clear_prefix_cache().unwrap();
    let (_, blocker) = long_generation(&engine, 400);
    all_at_once_answer_as_alone(&engine, &prompts, &greedy, &singles);
    drop(blocker);
}

/// A policy that quantizes its activations (int8) computes a position in a one-token step
/// differently from a multi-token step; its prefix cache therefore reuses only rows that
/// multi-token steps computed. A follow-up prompt that continues a cached answer, and the
/// same prompt sent twice, then give bit-identical log-probs to the same prompt prefilled
/// fresh, while the cache still serves their prompts' rows. Float32 is not affected and
/// keeps reusing every cached row.
#[test]
fn an_int8_answer_is_the_same_from_the_prefix_cache_as_prefilled_fresh() {
    let engine = start_dir(&tpo_engine::paths::policy_dir("int8"), 8, 1024);
    let check = engine.self_check();
    assert!(
        check.one_token_steps_differ(),
        "int8 one-token step difference {}",
        check.one_token_step_difference
    );
    let float = start(2, 256);
    assert!(
        !float.self_check().one_token_steps_differ(),
        "float32 one-token step difference {}",
        float.self_check().one_token_step_difference
    );

    let greedy = SamplingParams::greedy(12).unwrap();
    let first_prompt = engine.chat().question_prompt(QUESTIONS[7]).unwrap();
    let first = alone(&engine, &first_prompt, &greedy);
    // The conversation goes on: the first prompt, its answer, and another question.
    let mut follow_up = first_prompt.clone();
    follow_up.extend_from_slice(&first.tokens);
    follow_up.extend(engine.chat().question_prompt(QUESTIONS[10]).unwrap());
    let reused_before = engine.stats().prefix_reused_tokens.load(Ordering::Relaxed);
    let from_cache = alone(&engine, &follow_up, &greedy);
    let reused = engine.stats().prefix_reused_tokens.load(Ordering::Relaxed) - reused_before;
    assert!(
        reused as usize >= first_prompt.len() - 2,
        "the cache served {reused} rows of the {}-token first prompt",
        first_prompt.len()
    );
    // The same prompt again: all of it is cached.
    let again = alone(&engine, &follow_up, &greedy);
    engine.clear_prefix_cache().unwrap();
    let fresh = alone(&engine, &follow_up, &greedy);
    for (what, out) in [
        ("continuing a cached answer", &from_cache),
        ("sent twice", &again),
    ] {
        assert_eq!(
            out.tokens, fresh.tokens,
            "{what}: tokens differ from a fresh prefill"
        );
        assert_eq!(
            out.logprobs, fresh.logprobs,
            "{what}: log-probs differ from a fresh prefill"
        );
    }
}

/// Starts a generation of `max_new_tokens` (EOS ignored) and waits for its first token, so
/// the scheduler is busy decoding it; returns its prompt and stream.
fn long_generation(
    engine: &Engine,
    max_new_tokens: usize,
) -> (Vec<u32>, tpo_engine::engine::GenerationStream) {
    let prompt = engine
        .chat()
        .question_prompt("Count from one to one thousand.")
        .unwrap();
    let endless = SamplingParams::new(SamplingOptions {
        max_new_tokens,
        ignore_eos: true,
        ..SamplingOptions::default()
    })
    .unwrap();
    let mut stream = engine
        .submit(GenerateRequest::new(prompt.clone(), endless))
        .unwrap();
    match stream.blocking_next() {
        Some(GenerationEvent::Token { .. }) => (prompt, stream),
        other => panic!("unexpected event {other:?}"),
    }
}

#[test]
fn prompts_that_arrive_together_prefill_in_one_model_run_and_answer_as_each_alone() {
    let engine = start(16, 1024);
    let chosen = [0, 1, 2, 3, 5, 7];
    let prompts: Vec<Vec<u32>> = chosen
        .iter()
        .map(|&i| engine.chat().question_prompt(QUESTIONS[i]).unwrap())
        .collect();
    let lengths: Vec<usize> = prompts.iter().map(Vec::len).collect();
    assert!(
        lengths.iter().max() > lengths.iter().min(),
        "ragged: {lengths:?}"
    );
    let greedy = SamplingParams::greedy(16).unwrap();
    let singles: Vec<SampleOutput> = prompts.iter().map(|p| alone(&engine, p, &greedy)).collect();
    engine.clear_prefix_cache().unwrap();

    // Everything submitted next arrives within one iteration of the busy scheduler.
    let (_, blocker) = long_generation(&engine, 400);
    let before = engine.stats().snapshot();
    all_at_once_answer_as_alone(&engine, &prompts, &greedy, &singles);
    let runs = engine.stats().snapshot().since(&before).prefill_runs;
    drop(blocker);
    // One group (two if a submission raced the scheduler's iteration), not one run each.
    assert!(
        runs <= 2,
        "{} prompts that arrived together took {runs} prefill runs",
        prompts.len()
    );

    // Scored continuations group the same way: every position's logits, per row.
    let continuations: Vec<Vec<u32>> = singles.iter().map(|s| s.tokens.clone()).collect();
    let scored_alone: Vec<_> = prompts
        .iter()
        .zip(&continuations)
        .map(|(p, c)| engine.logprobs_blocking(p.clone(), c.clone()).unwrap())
        .collect();
    engine.clear_prefix_cache().unwrap();
    // Everything submitted next arrives within one iteration of the busy scheduler.
    let (_, blocker) = long_generation(&engine, 400);
    let before = engine.stats().snapshot();
    let scored = futures::executor::block_on(futures::future::join_all(
        prompts
            .iter()
            .zip(&continuations)
            .map(|(p, c)| engine.logprobs(p.clone(), c.clone())),
    ));
    let runs = engine.stats().snapshot().since(&before).prefill_runs;
    drop(blocker);
    for (i, (together, alone)) in scored.into_iter().zip(&scored_alone).enumerate() {
        let together = together.unwrap();
        assert_eq!(together.token_logprobs.len(), alone.token_logprobs.len());
        for (a, b) in together.token_logprobs.iter().zip(&alone.token_logprobs) {
            assert!(
                (a - b).abs() <= LOGPROB_TOLERANCE,
                "continuation {i}: {a} together vs {b} alone"
            );
        }
    }
    assert!(
        runs <= 2,
        "{} scored continuations that arrived together took {runs} prefill runs",
        prompts.len()
    );
}

#[test]
fn teacher_forced_logprobs_equal_the_logprobs_reported_by_generation() {
    let engine = start(4, 1024);
    let prompt = engine
        .chat()
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
    let (prompt, stream) = long_generation(&engine, 900);
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
    let prompt = engine.chat().question_prompt("Name a fruit.").unwrap();
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

// The fault tests below need the `fault-injection` feature (`make test` turns it on).
#[cfg(feature = "fault-injection")]
fn with_fault(seed: u64, max_new_tokens: usize, fault: InjectedFault) -> SamplingParams {
    SamplingParams::new(SamplingOptions {
        inject_fault: Some(fault),
        ..sampled(seed, max_new_tokens).options().clone()
    })
    .unwrap()
}

/// Runs `bad` among three good seeded requests; the good ones must equal their runs alone,
/// the bad one must fail with the error `check` accepts, and the engine must serve on.
#[cfg(feature = "fault-injection")]
fn one_broken_request_among_good_ones(bad: SamplingParams, check: impl Fn(&EngineError) -> bool) {
    let engine = start(8, 256);
    let prompts = prompts(&engine);
    let good: Vec<(Vec<u32>, SamplingParams)> = (0..3)
        .map(|i| (prompts[i + 1].clone(), sampled(40 + i as u64, 24)))
        .collect();
    let singles: Vec<SampleOutput> = good.iter().map(|(p, s)| alone(&engine, p, s)).collect();
    let streams: Vec<_> = good
        .iter()
        .map(|(p, s)| {
            engine
                .submit(GenerateRequest::new(p.clone(), s.clone()))
                .unwrap()
        })
        .collect();
    let broken = engine
        .submit(GenerateRequest::new(prompts[0].clone(), bad).with_n(2))
        .unwrap();
    let err = futures::executor::block_on(broken.collect()).unwrap_err();
    assert!(check(&err), "unexpected error: {err}");
    for (i, (stream, single)) in streams.into_iter().zip(&singles).enumerate() {
        let out = futures::executor::block_on(stream.collect())
            .unwrap()
            .remove(0);
        assert_same_sample(&out, single, &format!("good request {i}"));
    }
    // The engine goes on: every slot is free again and a new request runs.
    let out = alone(&engine, &prompts[2], &SamplingParams::greedy(8).unwrap());
    assert!(!out.tokens.is_empty());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while engine.stats().kv_slots_used.load(Ordering::Relaxed) != 0 {
        assert!(std::time::Instant::now() < deadline, "slots were not freed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_request_whose_logits_turn_nan_fails_alone_and_the_others_finish_unchanged() {
    // Before the fix, a NaN row spun the top-p loop forever and every request hung.
    one_broken_request_among_good_ones(with_fault(7, 24, InjectedFault::NanLogitsAfter(3)), |e| {
        matches!(e, EngineError::Logits(LogitsError::NotANumber { .. }))
    });
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_failing_model_step_is_retried_then_only_the_row_that_fails_alone_fails() {
    // Before the fix, one failed decode step failed every decoding sequence.
    one_broken_request_among_good_ones(
        with_fault(7, 24, InjectedFault::StepErrorAfter(2)),
        |e| matches!(e, EngineError::Internal(m) if m.contains("injected step failure")),
    );
}

#[test]
fn requests_beyond_the_in_flight_limit_are_refused_as_overloaded() {
    let model = ModelDir::open(&common::policy_dir()).unwrap();
    let engine = Engine::start(
        &model,
        EngineOptions {
            kv_slots: 2,
            max_seq_len: 128,
            max_pending: 2,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let prompt = engine.chat().question_prompt("Name a fruit.").unwrap();
    let request = || GenerateRequest::new(prompt.clone(), SamplingParams::greedy(4).unwrap());
    let first = engine.submit(request()).unwrap();
    let second = engine.submit(request()).unwrap();
    let err = engine.submit(request()).err().unwrap();
    assert!(
        matches!(
            err,
            EngineError::Overloaded {
                pending: 2,
                limit: 2
            }
        ),
        "{err}"
    );
    let err = engine
        .logprobs_blocking(prompt.clone(), vec![prompt[0]])
        .unwrap_err();
    assert!(matches!(err, EngineError::Overloaded { .. }), "{err}");
    // Finishing (or dropping) a request makes room again.
    futures::executor::block_on(first.collect()).unwrap();
    drop(second);
    assert_eq!(engine.pending(), 0);
    futures::executor::block_on(engine.submit(request()).unwrap().collect()).unwrap();
}

#[test]
fn stop_strings_cut_the_answer_at_their_first_match_as_a_full_decode_would() {
    let engine = start(4, 512);
    for question in [
        QUESTIONS[6],
        "Write two sentences in Chinese about tea, with an emoji.",
    ] {
        let prompt = engine.chat().question_prompt(question).unwrap();
        let full = alone(&engine, &prompt, &SamplingParams::greedy(60).unwrap());
        let text = full.text_in(engine.chat()).unwrap();
        // A stop string from the middle of the answer (three characters at ~half way).
        let chars: Vec<char> = text.chars().collect();
        assert!(chars.len() > 20, "answer too short: {text:?}");
        let mid = chars.len() / 2;
        let stop: String = chars[mid..mid + 3].iter().collect();
        let expected = &text[..text.find(&stop).unwrap()];
        let params = SamplingParams::new(SamplingOptions {
            max_new_tokens: 60,
            stop: vec![stop.clone(), "\u{1}never".into()],
            ..SamplingOptions::default()
        })
        .unwrap();
        let cut = alone(&engine, &prompt, &params);
        assert_eq!(cut.finish_reason, tpo_engine::engine::FinishReason::Stop);
        assert_eq!(
            cut.text_in(engine.chat()).unwrap(),
            expected,
            "stop {stop:?}"
        );
        assert!(full.tokens.starts_with(&cut.tokens));
    }
}

#[test]
fn top_logprobs_and_penalties_reach_the_outputs() {
    let engine = start(4, 512);
    // Greedy SmolLM2 repeats "yes" here, which a frequency penalty must break.
    let prompt = engine
        .chat()
        .question_prompt("Write the word yes twenty times, separated by spaces.")
        .unwrap();
    let plain = alone(&engine, &prompt, &SamplingParams::greedy(48).unwrap());
    let with_top = SamplingParams::new(SamplingOptions {
        max_new_tokens: 48,
        top_logprobs: 5,
        ..SamplingOptions::default()
    })
    .unwrap();
    let topped = alone(&engine, &prompt, &with_top);
    assert_eq!(topped.tokens, plain.tokens);
    assert_eq!(topped.top_logprobs.len(), topped.tokens.len());
    for ((token, lp), top) in topped
        .tokens
        .iter()
        .zip(&topped.logprobs)
        .zip(&topped.top_logprobs)
    {
        assert_eq!(top.len(), 5);
        // Greedy picks the most likely token: it heads its own list, with its log-prob.
        assert_eq!(top[0].0, *token);
        assert!((top[0].1 - lp).abs() < 1e-5);
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
    }
    assert!(plain.top_logprobs.is_empty());

    // A frequency penalty changes the greedy answer, and where it first differs, the
    // unpenalized choice is a token already generated (only those are penalized).
    let penalized = SamplingParams::new(SamplingOptions {
        max_new_tokens: 48,
        frequency_penalty: 2.0,
        ..SamplingOptions::default()
    })
    .unwrap();
    let out = alone(&engine, &prompt, &penalized);
    let k = plain
        .tokens
        .iter()
        .zip(&out.tokens)
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| {
            panic!(
                "a 2.0 frequency penalty did not change {:?}",
                plain.text_in(engine.chat()).unwrap()
            )
        });
    assert!(
        plain.tokens[..k].contains(&plain.tokens[k]),
        "the first changed token was never generated before"
    );
}

/// A stop offset that is not a character boundary of a fresh decode (the scheduler found
/// it in its incremental text) must never panic `text_of`: it cuts at the boundary below.
#[test]
fn text_of_never_cuts_through_a_character() {
    let engine = start(1, 64);
    let tokens = engine.tokenizer().encode("héllo wörld").unwrap();
    let sample = SampleOutput {
        index: 0,
        tokens,
        logprobs: Vec::new(),
        top_logprobs: Vec::new(),
        // Byte 2 is inside "é" (bytes 1..3).
        stop_at: Some(2),
        text: None,
        finish_reason: FinishReason::Stop,
        prompt_tokens: 1,
        time_to_first_token: std::time::Duration::ZERO,
        elapsed: std::time::Duration::ZERO,
    };
    assert_eq!(sample.text_in(engine.chat()).unwrap(), "h");
    // The scheduler's own text, when it sends one, is the answer as is.
    let with_text = SampleOutput {
        text: Some("hé".into()),
        ..sample
    };
    assert_eq!(with_text.text_in(engine.chat()).unwrap(), "hé");
}

/// A generation that stops on a stop string carries the text it was found in.
#[test]
fn a_stop_string_match_carries_the_text_it_was_found_in() {
    let engine = start(1, 256);
    let prompt = engine
        .chat()
        .question_prompt("Count from one to ten in words.")
        .unwrap();
    let params = SamplingParams::new(SamplingOptions {
        max_new_tokens: 64,
        stop: vec!["four".into()],
        ..SamplingOptions::default()
    })
    .unwrap();
    let out = engine
        .generate_blocking(GenerateRequest::new(prompt, params))
        .unwrap();
    let sample = &out[0];
    if sample.stop_at.is_some() {
        let text = sample
            .text
            .as_deref()
            .expect("a stopped sample carries its text");
        assert!(!text.contains("four"), "{text}");
        assert_eq!(sample.text_in(engine.chat()).unwrap(), text);
    }
}

/// A panic in the scheduler thread fails every request in flight at once with an error
/// naming the engine, and every later request too; the engine reports itself dead.
#[cfg(feature = "fault-injection")]
#[test]
fn a_scheduler_panic_fails_in_flight_work_and_the_engine_reports_why() {
    let engine = start(4, 256);
    let prompt = engine.chat().question_prompt("Tell me a story.").unwrap();
    let bystander = engine
        .submit(GenerateRequest::new(prompt.clone(), sampled(1, 200)))
        .unwrap();
    let faulty = SamplingParams::new(SamplingOptions {
        max_new_tokens: 50,
        inject_fault: Some(InjectedFault::PanicAfter(2)),
        ..SamplingOptions::default()
    })
    .unwrap();
    let err = engine
        .generate_blocking(GenerateRequest::new(prompt.clone(), faulty))
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Died { reason } if reason.contains("injected scheduler panic")),
        "{err}"
    );
    let bystander = futures::executor::block_on(bystander.collect()).unwrap_err();
    assert!(matches!(bystander, EngineError::Died { .. }), "{bystander}");
    assert!(engine.dead_reason().is_some());
    let later = engine
        .generate_blocking(GenerateRequest::new(prompt.clone(), sampled(2, 4)))
        .unwrap_err();
    assert!(matches!(later, EngineError::Died { .. }), "{later}");
    let scored = engine
        .logprobs_blocking(prompt.clone(), prompt)
        .unwrap_err();
    assert!(matches!(scored, EngineError::Died { .. }), "{scored}");
}
