//! The embedded SmolLM2 export, run from Rust, against independent references: a numpy
//! forward pass of the same dequantized GGUF weights, and known answers.

mod common;

use tpo_engine::engine::{
    Decoder, DecoderOptions, Engine, EngineError, EngineOptions, GenerateRequest, KvArena,
    LogitsWanted, RowInput, SamplingOptions, SamplingParams, SlotId,
};
use tpo_engine::model::ModelDir;

/// Max |logit difference| allowed between ONNX Runtime (float32) and numpy (float32).
const LOGIT_TOLERANCE: f32 = 1e-3;

fn numpy_logits(ids: &[u32]) -> Vec<f32> {
    let out = std::env::temp_dir().join(format!("tpo_numpy_logits_{}.bin", std::process::id()));
    let mut args = vec![out.display().to_string()];
    args.extend(ids.iter().map(|i| i.to_string()));
    common::run_python("tests/reference/logits_reference.py", &args, "");
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn engine(max_seq_len: usize) -> Engine {
    let model = ModelDir::open(&common::policy_dir()).unwrap();
    Engine::start(
        &model,
        EngineOptions {
            max_seq_len,
            kv_slots: 4,
            ..EngineOptions::default()
        },
    )
    .unwrap()
}

fn generate(
    engine: &Engine,
    prompt: &[u32],
    params: SamplingParams,
) -> Result<tpo_engine::engine::SampleOutput, EngineError> {
    let mut out = engine.generate_blocking(GenerateRequest::new(prompt.to_vec(), params))?;
    Ok(out.remove(0))
}

/// A decoder and a `slots`-slot arena after prefilling `ids` into slot 0, with the logits
/// of every position.
fn prefill_all_logits(model: &ModelDir, ids: &[u32], slots: usize) -> (Decoder, KvArena, Vec<f32>) {
    let mut decoder = Decoder::load(model, DecoderOptions::default()).unwrap();
    let mut arena = KvArena::new(decoder.kv_shape(256), slots).unwrap();
    let rows = [RowInput {
        past_len: 0,
        tokens: ids,
    }];
    let logits = decoder
        .step(&mut arena, SlotId(0), &rows, LogitsWanted::All)
        .unwrap();
    (decoder, arena, logits)
}

#[test]
fn logits_match_a_numpy_forward_pass_for_prefill_and_incremental_decode() {
    let model = ModelDir::open(&common::policy_dir()).unwrap();
    let ids = engine(256)
        .chat()
        .question_prompt("Name three colours of the rainbow.")
        .unwrap();
    let reference = numpy_logits(&ids);
    let v = model.config.vocab_size;
    assert_eq!(reference.len(), ids.len() * v);

    let (mut decoder, mut arena, prefill) = prefill_all_logits(&model, &ids, 2);
    let prefill_diff = common::max_abs_diff(&prefill, &reference);
    assert!(
        prefill_diff <= LOGIT_TOLERANCE,
        "prefill max diff {prefill_diff}"
    );

    // Same prompt in slot 1: a prefix chunk, then the rest one token at a time.
    let split = ids.len() - 4;
    // Our export computes only the last row's logits when a prefill chunk needs no more.
    assert!(
        decoder.limits_prefill_logits(),
        "the graph lacks num_logits_to_keep"
    );
    let chunk = decoder
        .step(
            &mut arena,
            SlotId(1),
            &[RowInput {
                past_len: 0,
                tokens: &ids[..split],
            }],
            LogitsWanted::Last,
        )
        .unwrap();
    let diff = common::max_abs_diff(&chunk, &reference[(split - 1) * v..split * v]);
    assert!(diff <= LOGIT_TOLERANCE, "last-row prefill: max diff {diff}");
    for pos in split..ids.len() {
        let step = decoder
            .step(
                &mut arena,
                SlotId(1),
                &[RowInput {
                    past_len: pos,
                    tokens: &ids[pos..pos + 1],
                }],
                LogitsWanted::Last,
            )
            .unwrap();
        let diff = common::max_abs_diff(&step, &reference[pos * v..(pos + 1) * v]);
        assert!(diff <= LOGIT_TOLERANCE, "decode at {pos}: max diff {diff}");
    }
    eprintln!("prefill max |diff| vs numpy: {prefill_diff:.2e}");
}

#[test]
fn greedy_answer_names_paris() {
    let engine = engine(512);
    let prompt = engine
        .chat()
        .question_prompt("What is the capital of France?")
        .unwrap();
    let out = generate(&engine, &prompt, SamplingParams::greedy(32).unwrap()).unwrap();
    let text = out.text_in(engine.chat()).unwrap();
    assert!(text.contains("Paris"), "{text:?}");
    assert_eq!(out.tokens.len(), out.logprobs.len());
    assert!(out.logprobs.iter().all(|&l| l <= 0.0 && l.is_finite()));
}

#[test]
fn perplexity_of_an_english_paragraph_matches_the_python_export_report() {
    let dir = common::policy_dir();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("export_report.json")).unwrap())
            .unwrap();
    let paragraph =
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. \
It is named after the engineer Gustave Eiffel, whose company designed and built the tower. \
Constructed from 1887 to 1889 as the centerpiece of the 1889 World's Fair, it was initially \
criticised by some of France's leading artists and intellectuals for its design, but it has \
become a global cultural icon of France and one of the most recognisable structures in the world.";
    let model = ModelDir::open(&dir).unwrap();
    let ids = model.tokenizer().unwrap().encode(paragraph).unwrap();
    let (_, _, logits) = prefill_all_logits(&model, &ids, 1);
    let v = model.config.vocab_size;
    let mut nll = 0.0f64;
    for t in 0..ids.len() - 1 {
        let row = &logits[t * v..(t + 1) * v];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let log_z = max + row.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
        nll -= f64::from(row[ids[t + 1] as usize] - log_z);
    }
    let ppl = (nll / (ids.len() - 1) as f64).exp();
    let python_ppl = report["perplexity"].as_f64().unwrap();
    eprintln!("perplexity: rust {ppl:.4}, python {python_ppl:.4}");
    assert!(
        (ppl - python_ppl).abs() / python_ppl < 1e-3,
        "rust {ppl} vs python {python_ppl}"
    );
    assert!(ppl > 1.0 && ppl < 60.0, "implausible perplexity {ppl}");
}

#[test]
fn seeded_sampling_is_reproducible_and_seed_dependent() {
    let engine = engine(512);
    let prompt = engine
        .chat()
        .question_prompt("Write one sentence about the sea.")
        .unwrap();
    let params = |seed| {
        SamplingParams::new(SamplingOptions {
            temperature: 0.9,
            top_p: 0.95,
            max_new_tokens: 24,
            seed: Some(seed),
            ..SamplingOptions::default()
        })
        .unwrap()
    };
    let a = generate(&engine, &prompt, params(7)).unwrap();
    let b = generate(&engine, &prompt, params(7)).unwrap();
    assert_eq!(a.tokens, b.tokens);
    let others: Vec<Vec<u32>> = (8..11)
        .map(|s| generate(&engine, &prompt, params(s)).unwrap().tokens)
        .collect();
    assert!(
        others.iter().any(|t| *t != a.tokens),
        "every seed gave the same tokens"
    );
}

#[test]
fn a_prompt_longer_than_the_context_is_a_typed_error() {
    let engine = engine(16);
    let prompt = engine
        .chat()
        .question_prompt("This prompt is certainly longer than sixteen tokens once templated.")
        .unwrap();
    let err = generate(&engine, &prompt, SamplingParams::greedy(4).unwrap()).unwrap_err();
    assert!(
        matches!(err, EngineError::SequenceTooLong { limit: 16, .. }),
        "{err}"
    );
    // The engine still serves a prompt that fits.
    let short = engine.tokenizer().encode("Hi").unwrap();
    let out = generate(&engine, &short, SamplingParams::greedy(4).unwrap()).unwrap();
    assert!(!out.tokens.is_empty());
}
