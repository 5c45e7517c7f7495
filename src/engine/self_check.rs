//! The policy's load-time self-check: two canned prompts of different lengths, prefilled and
//! stepped once each alone, then together (a padded prefill and a ragged decode step, the
//! two batch shapes the scheduler forms); the batched rows' logits must equal the rows'
//! logits alone. A graph whose attention ignores the mask, numbers positions itself, or
//! mishandles ragged pasts shows up here, and the folder is refused instead of generating
//! silently wrong text for every request that shares a batch.
//!
//! It also measures how far a one-token step's logits are from the same position's in a
//! multi-token step ([`PolicyCheck::one_token_step_difference`]). ONNX Runtime runs the two
//! through different attention paths: in float32 they agree to a few parts in a million,
//! but a graph that quantizes its activations (int8, MatMulNBits at accuracy level 4)
//! rounds that tiny difference into a visible one, and float16 activations keep a
//! difference of their own precision. For such a graph the scheduler reuses
//! only KV rows that multi-token steps computed, so an answer is the same whether its
//! prompt came from the prefix cache or was prefilled fresh
//! ([`PolicyCheck::one_token_steps_differ`]).
//!
//! It runs on a small arena of its own (4 slots) before the engine's arena exists. Cost:
//! seven graph runs over at most 17 tokens, tens of milliseconds for SmolLM2-135M on two
//! CPU cores (the time is in [`PolicyCheck::seconds`]).

use std::time::Instant;

use super::decoder::{Decoder, LogitsWanted, RowInput};
use super::kv::{KvArena, KvPlacement, SlotId};
use super::EngineError;
use crate::model::{TokenId, Tokenizer};

/// The canned prompts (plain text: the check is about the graph, not the template).
pub const PROMPTS: &[&str] = &[
    "Hello there.",
    "The capital of France is Paris, and the capital of Italy is",
];

/// Largest difference allowed between a batched row's logits and the same row's alone,
/// relative to the logits' scale (their largest magnitude, at least 1). Measured: float32
/// graphs 0 (ours and the model builder's); the model builder's int4 SmolLM2 (MatMulNBits at
/// accuracy level 4, whose activations are quantized per batch) 0.030 on the ragged decode
/// step. A padded row whose padding is attended to differs by the logits' own size.
pub const TOLERANCE: f32 = 0.1;

/// Relative difference between a one-token step's logits and the same position's in a
/// multi-token step above which the two are treated as different computations. Measured on
/// SmolLM2's folders (CPU): float32 1.2e-6; float16 3.0e-3; int8 2.9e-2 and q4 3.3e-2, which
/// quantize activations.
pub const STEP_PATH_TOLERANCE: f32 = 1e-3;

/// What the policy self-check ran and found.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyCheck {
    pub prompt_tokens: Vec<usize>,
    /// Largest relative difference of the padded prefill and of the ragged decode step.
    pub prefill_difference: f32,
    pub decode_difference: f32,
    pub tolerance: f32,
    /// Relative difference between the longer prompt's next-token logits from a one-token
    /// step after its prefill and from one prefill over prompt + token.
    pub one_token_step_difference: f32,
    pub seconds: f64,
}

impl PolicyCheck {
    /// Whether a one-token step computes a position differently from a multi-token step
    /// (beyond [`STEP_PATH_TOLERANCE`]): then only rows of multi-token steps are reused.
    pub fn one_token_steps_differ(&self) -> bool {
        self.one_token_step_difference > STEP_PATH_TOLERANCE
    }
}

/// Runs the check with `decoder` on a small arena at `placement`; `max_len` is the arena's
/// length (the engine's, capped: a sliding-window graph needs at least its window).
pub fn run(
    decoder: &mut Decoder,
    tokenizer: &Tokenizer,
    placement: KvPlacement,
    max_len: usize,
) -> Result<PolicyCheck, EngineError> {
    let started = Instant::now();
    let prompts: Vec<Vec<TokenId>> = PROMPTS
        .iter()
        .map(|p| tokenizer.encode(p))
        .collect::<Result<_, _>>()?;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if prompts.iter().any(Vec::is_empty) || longest + 1 > max_len {
        return Err(EngineError::Internal(format!(
            "the self-check's prompts ({longest} tokens) do not fit its arena ({max_len})"
        )));
    }
    let vocab = decoder.config().vocab_size;
    let mut arena = KvArena::on(placement, decoder.kv_shape(max_len), 4)?;
    // Alone: slots 2 and 3.
    let mut alone_prefill = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let rows = [RowInput {
            past_len: 0,
            tokens: p,
        }];
        alone_prefill.push(decoder.step(&mut arena, SlotId(2 + i), &rows, LogitsWanted::Last)?);
    }
    // The next token of each: the same token for both rows, alone and batched.
    let next: TokenId = argmax(&alone_prefill[0]);
    let mut alone_decode = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let rows = [RowInput {
            past_len: p.len(),
            tokens: std::slice::from_ref(&next),
        }];
        alone_decode.push(decoder.step(&mut arena, SlotId(2 + i), &rows, LogitsWanted::Last)?);
    }
    // Together: slots 0 and 1, a right-padded prefill then a ragged decode step.
    let fresh: Vec<RowInput<'_>> = prompts
        .iter()
        .map(|p| RowInput {
            past_len: 0,
            tokens: p,
        })
        .collect();
    // A sliding-window graph's attention takes no padded prefill batch (onnxruntime's
    // GroupQueryAttention with a local window refuses it), and the scheduler never forms one
    // (it prefills one prompt at a time): its rows are prefilled alone into slots 0 and 1,
    // and the ragged decode step below is what is checked.
    let batched_prefill = if decoder.config().sliding_window.is_some() {
        let mut rows = Vec::new();
        for (i, row) in fresh.iter().enumerate() {
            rows.extend(decoder.step(&mut arena, SlotId(i), &[*row], LogitsWanted::Last)?);
        }
        rows
    } else {
        decoder.step(&mut arena, SlotId(0), &fresh, LogitsWanted::Last)?
    };
    let stepped: Vec<RowInput<'_>> = prompts
        .iter()
        .map(|p| RowInput {
            past_len: p.len(),
            tokens: std::slice::from_ref(&next),
        })
        .collect();
    let batched_decode = decoder.step(&mut arena, SlotId(0), &stepped, LogitsWanted::Last)?;
    // The longer prompt and its next token in one step, against its one-token step above
    // (slot 3, rewritten from position 0).
    let last = prompts.len() - 1;
    let mut extended = prompts[last].clone();
    extended.push(next);
    let whole = [RowInput {
        past_len: 0,
        tokens: &extended,
    }];
    let in_one_step = decoder.step(&mut arena, SlotId(2 + last), &whole, LogitsWanted::Last)?;
    let one_token_step_difference =
        relative_difference(&in_one_step, &alone_decode[last..], vocab)?;
    let prefill_difference = relative_difference(&batched_prefill, &alone_prefill, vocab)?;
    let decode_difference = relative_difference(&batched_decode, &alone_decode, vocab)?;
    let check = PolicyCheck {
        prompt_tokens: prompts.iter().map(Vec::len).collect(),
        prefill_difference,
        decode_difference,
        tolerance: TOLERANCE,
        one_token_step_difference,
        seconds: started.elapsed().as_secs_f64(),
    };
    if prefill_difference > TOLERANCE || decode_difference > TOLERANCE {
        return Err(EngineError::SelfCheck(format!(
            "batched rows' logits differ from the same rows run alone by {prefill_difference:.3} \
             (padded prefill) and {decode_difference:.3} (ragged decode step) of their scale \
             (tolerance {TOLERANCE}): the graph may ignore attention_mask for padding, number \
             positions itself without a position_ids input, or mishandle past lengths that \
             differ across rows"
        )));
    }
    Ok(check)
}

fn argmax(logits: &[f32]) -> TokenId {
    let mut best = 0;
    for (i, x) in logits.iter().enumerate() {
        if *x > logits[best] {
            best = i;
        }
    }
    best as TokenId
}

/// Largest |batched − alone| over the rows, relative to the alone logits' scale; a
/// non-finite logit is an error.
fn relative_difference(
    batched: &[f32],
    alone: &[Vec<f32>],
    vocab: usize,
) -> Result<f32, EngineError> {
    if batched.len() != alone.len() * vocab || alone.iter().any(|a| a.len() != vocab) {
        return Err(EngineError::Internal(format!(
            "self-check logits have {} values for {} rows of vocabulary {vocab}",
            batched.len(),
            alone.len()
        )));
    }
    if batched
        .iter()
        .chain(alone.iter().flatten())
        .any(|x| !x.is_finite())
    {
        return Err(EngineError::SelfCheck(
            "the graph produced NaN or infinite logits on short plain prompts".into(),
        ));
    }
    let scale = alone.iter().flatten().fold(1.0f32, |m, x| m.max(x.abs()));
    let worst = alone
        .iter()
        .enumerate()
        .flat_map(|(r, a)| {
            a.iter()
                .zip(&batched[r * vocab..(r + 1) * vocab])
                .map(|(x, y)| (x - y).abs())
        })
        .fold(0.0f32, f32::max);
    Ok(worst / scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_relative_to_the_logits_scale_and_nan_is_refused() {
        let alone = vec![vec![10.0, -20.0], vec![1.0, 2.0]];
        let batched = [10.0, -20.0, 1.0, 2.4];
        let d = relative_difference(&batched, &alone, 2).unwrap();
        assert!((d - 0.4 / 20.0).abs() < 1e-6, "{d}");
        let nan = [f32::NAN, -20.0, 1.0, 2.0];
        assert!(matches!(
            relative_difference(&nan, &alone, 2),
            Err(EngineError::SelfCheck(_))
        ));
        assert!(relative_difference(&batched[..3], &alone, 2).is_err());
        assert_eq!(argmax(&[0.5, 3.0, -1.0]), 1);
    }
}
